"""The router's own tables (nodes, health, quotes, metering, chains, manifests, peers, federation jobs) and
their retention. The shared `fedai.store` keeps what the node and the CLI use too: pools, migrations, the
embedded server, nonces and group commit."""
