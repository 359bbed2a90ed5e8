"""Keyset pages, newest first: the (created_at, id) cursor the admin listings share (metering, receipts,
payments). A listing fetches `limit + 1` rows strictly before the cursor, shows `limit`, and the extra row says
whether there is a next page."""

from __future__ import annotations

from datetime import datetime

import asyncpg

Cursor = tuple[datetime, str]  # the last row's (created_at, id)


def cursor_args(before: Cursor | None) -> tuple[datetime | None, str]:
    """The query's two cursor parameters: rows strictly before `before`, or from the newest when None."""
    return (before[0], before[1]) if before else (None, "")


def split_page(rows: list[asyncpg.Record], limit: int, key: str) -> tuple[list[asyncpg.Record], Cursor | None]:
    """The first `limit` of `rows` (fetched as `limit + 1`) and the next page's cursor (its `key` column as the
    id), None when this page is the last."""
    page = rows[:limit]
    return page, ((page[-1]["created_at"], page[-1][key]) if len(rows) > limit else None)
