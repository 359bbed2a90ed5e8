"""fedai: a Nostr-federated AI-inference network. Shared library for routers, nodes and clients."""

__version__ = "0.1.0"
