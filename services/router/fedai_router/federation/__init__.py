"""Federation between routers: announcements, peers, auctions and offloaded jobs over Nostr relays.

`Federation` is the subsystem's one entry point (the router starts and stops it); its modules are its own."""

from fedai_router.federation.subsystem import Federation

__all__ = ["Federation"]
