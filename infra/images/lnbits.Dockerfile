# LNbits with its FakeWallet funding source, for a paying compose stack (infra/docker-compose.paid.yml): real
# BOLT11 invoices and preimages, payments settled between its own wallets, no Lightning node and no network.
# The same version and extra pin as `fedai lnbits` (fedai.lnbits.install); its data (SQLite) in /data.
# Served as `fedai.lnbits.server` does it: LNbits' app under uvicorn, from its site-packages (it serves
# lnbits/static by a relative path), without the `lnbits` command's restart supervisor.
ARG BASE=fedai-base:bookworm
FROM ${BASE}
ARG LNBITS_VERSION=1.6.2
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/lnbits \
    && /opt/lnbits/bin/pip install --no-cache-dir --quiet "lnbits==${LNBITS_VERSION}" "bitstring<5" \
    && useradd --system --uid 10003 --user-group --home-dir /data --create-home --shell /usr/sbin/nologin lnbits \
    && site=$(/opt/lnbits/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && install -d -o lnbits -g lnbits "$site/lnbits/extensions" /data/logs \
    && ln -s "$site" /opt/lnbits/site
ENV LNBITS_DATA_FOLDER=/data LNBITS_BACKEND_WALLET_CLASS=FakeWallet LNBITS_ADMIN_UI=true HOST=0.0.0.0 PORT=5000 \
    PYTHONDONTWRITEBYTECODE=1
USER lnbits
WORKDIR /opt/lnbits/site
# serving: /api/v1/health answers 200, or 307 to /first_install before its superuser is set
HEALTHCHECK --interval=3s --timeout=3s --start-period=60s --retries=20 CMD ["/opt/lnbits/bin/python", "-c", "import http.client as h, sys; c = h.HTTPConnection('127.0.0.1', 5000, timeout=2); c.request('GET', '/api/v1/health'); sys.exit(c.getresponse().status not in (200, 307))"]
ENTRYPOINT ["/opt/lnbits/bin/python", "-m", "uvicorn", "lnbits.__main__:app", "--host", "0.0.0.0", "--port", "5000", "--loop", "uvloop"]
