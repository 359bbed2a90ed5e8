"""Wallet backends: each implements fedai.payments.wallet.Wallet against one kind of wallet (docs/payments.md)."""
