"""The fedai router: node registry, scheduler, quotes, dispatch with verified metering."""
