# Prometheus from Debian's own package on the local base image (no registry).
ARG BASE=fedai-base:bookworm
FROM ${BASE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* && install -d -o prometheus /prometheus
USER prometheus
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
