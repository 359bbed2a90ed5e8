"""fedai node: fronts a model runner behind a router-only, signed `/infer`, meters every request,
heartbeats its signed descriptor to its routers and announces it on relays."""
