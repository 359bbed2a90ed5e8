"""What the router paid from each client wallet bound to an OpenAI caller (migrations/0014_wallet_budgets.sql),
against the binding's budget: reserved atomically before paying (across replicas), the unspent part given back."""

from __future__ import annotations

import asyncpg

_RESERVE = """
INSERT INTO wallet_budgets AS b (binding, spent_msat) VALUES ($1, $2)
ON CONFLICT (binding) DO UPDATE SET spent_msat = b.spent_msat + EXCLUDED.spent_msat, updated_at = now()
    WHERE b.spent_msat + EXCLUDED.spent_msat <= $3
RETURNING spent_msat
"""


async def reserve(pool: asyncpg.Pool, binding: str, amount_msat: int, budget_msat: int) -> bool:
    """Count `amount_msat` as spent from `binding` if it stays within `budget_msat`; False (nothing counted) if not."""
    if amount_msat > budget_msat:
        return False
    return await pool.fetchval(_RESERVE, binding, amount_msat, budget_msat) is not None


async def give_back(pool: asyncpg.Pool, binding: str, amount_msat: int) -> None:
    """Un-count what a reservation did not spend."""
    if amount_msat > 0:
        await pool.execute(
            "UPDATE wallet_budgets SET spent_msat = greatest(0, spent_msat - $2), updated_at = now()"
            " WHERE binding = $1",
            binding,
            amount_msat,
        )


async def spent(pool: asyncpg.Pool, binding: str) -> int:
    return int(await pool.fetchval("SELECT spent_msat FROM wallet_budgets WHERE binding = $1", binding) or 0)
