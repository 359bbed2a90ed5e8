"""Lightning payments without custody: the wallet interface, its backends, BOLT11 checks (docs/payments.md)."""
