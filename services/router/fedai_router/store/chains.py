"""Verification chains kept for the OpenAI-compatible API (`GET /v1/chains/{id}`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from fedai.protocol.event import Event


async def save_chain(pool: asyncpg.Pool, origin_id: str, client: str, request: Event, answer: Event) -> None:
    await pool.execute(
        "INSERT INTO chains (id, origin_id, client, request_event, answer_event) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (id) DO NOTHING",
        answer.id,
        origin_id,
        client,
        request.to_json(),
        answer.to_json(),
    )


async def load_chain(pool: asyncpg.Pool, chain_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT client, request_event, answer_event FROM chains WHERE id = $1", chain_id)
    if row is None:
        return None
    return {"client": row["client"], "request": row["request_event"], "answer": row["answer_event"]}
