# llama-server (llama.cpp) on one GGUF model, for a node's NODE_RUNNER=llama_cpp. The binary is the portable one
# `fedai llama build` makes (on a Debian 12 host it runs here unchanged; building llama.cpp inside an image takes
# longer than the whole compose test on 2 cores); infra/compose-test.sh stages it and the model as the context:
#   llama-server, model.gguf, this file.
ARG BASE=fedai-base:bookworm
FROM ${BASE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin llama
COPY llama-server /opt/llama/llama-server
COPY model.gguf /models/model.gguf
ENV LLAMA_MODEL_ID=model LLAMA_PARALLEL=2
USER llama
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=10 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8085/health"]
# one thread (best on 2 cores); context = 2048 tokens per slot
ENTRYPOINT ["sh", "-c", "exec /opt/llama/llama-server -m /models/model.gguf --host 0.0.0.0 --port 8085 -t 1 --parallel \"$LLAMA_PARALLEL\" -c $((2048 * LLAMA_PARALLEL)) --alias \"$LLAMA_MODEL_ID\""]
