"""Wallet backends: one module per kind of wallet, each a `fedai.payments.wallet.Wallet` (docs/payments.md#backends)."""
