# PostgreSQL from Debian's own package on the local base image (no registry). Data in /var/lib/fedai-pg.
# Stopped with SIGINT (fast shutdown): SIGTERM waits for every client to disconnect, and the engine kills it.
ARG BASE=fedai-base:bookworm
FROM ${BASE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* && install -d -o postgres -g postgres /var/lib/fedai-pg /run/postgresql
COPY infra/images/postgres-start.sh /usr/local/bin/postgres-start
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/fedai-pg/data
USER postgres
STOPSIGNAL SIGINT
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=10 CMD ["pg_isready", "-h", "127.0.0.1", "-U", "fedai", "-d", "fedai"]
ENTRYPOINT ["postgres-start"]
