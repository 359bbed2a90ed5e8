"""Federation between routers: announcements, peers, auctions and offloaded jobs over Nostr relays."""
