"""The dashboard's HTML, server-rendered (no JavaScript build chain): the page frame, tables, action forms and two
inline SVG charts. Pure: every value is escaped here; nothing reads the network or the database."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d232a;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header form{margin-left:auto}
main{padding:1rem}table{border-collapse:collapse;background:#fff;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d5d9de;padding:.25rem .5rem;text-align:left}th{background:#eef1f4}
td form{display:inline}button{margin:0 .1rem}.muted{color:#6b7580}.chart{background:#fff;border:1px solid #d5d9de}
"""
NAV = (
    ("/admin", "status"),
    ("/admin/nodes", "nodes"),
    ("/admin/peers", "peers"),
    ("/admin/requests", "requests"),
    ("/admin/payments", "payments"),
)


def e(value: object) -> str:
    return escape(str(value), quote=True)


def page(title: str, body: str, *, operator: str | None, csrf: str | None, nonce: str, script: str = "") -> str:
    nav = " ".join(f'<a href="{href}">{e(label)}</a>' for href, label in NAV) if operator else ""
    logout = form("/admin/logout", "log out", csrf) if operator and csrf else ""
    who = f'<span class="muted">{e(operator[:12])}…</span>' if operator else ""
    js = f'<script nonce="{e(nonce)}">{script}</script>' if script else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · fedai router</title>'
        f'<style nonce="{e(nonce)}">{STYLE}</style></head><body><header><strong>fedai admin</strong>{nav}{who}'
        f"{logout}</header><main><h1>{e(title)}</h1>{body}</main>{js}</body></html>"
    )


def form(action: str, label: str, csrf: str, *, name: str | None = None) -> str:
    named = f' name="{e(name)}"' if name else ""
    return (
        f'<form method="post" action="{e(action)}"><input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit"{named}>{e(label)}</button></form>'
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, raw: Sequence[int] = ()) -> str:
    """Cells are escaped, except the columns in `raw` (already-rendered HTML such as forms)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw else e(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bar_chart(title: str, values: Sequence[float], *, unit: str, width: int = 600, height: int = 140) -> str:
    """One bar per minute (oldest left), scaled to the largest value."""
    top = max(values, default=0) or 1
    step = width / max(1, len(values))
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{height - v / top * (height - 20):.1f}" width="{max(1.0, step - 1):.1f}" '
        f'height="{v / top * (height - 20):.1f}" fill="#3b82f6"><title>{e(f"{v:g} {unit}")}</title></rect>'
        for i, v in enumerate(values)
    )
    label = f'<text x="4" y="14" font-size="12">{e(title)} (max {top:g} {e(unit)})</text>'
    return (
        f'<svg class="chart" role="img" aria-label="{e(title)}" width="{width}" height="{height}">{label}{bars}</svg>'
    )


def line_chart(title: str, values: Sequence[float | None], *, unit: str, width: int = 600, height: int = 140) -> str:
    """A polyline over the minutes that have a value, scaled to the largest."""
    known = [v for v in values if v is not None]
    top = max(known, default=0) or 1
    step = width / max(1, len(values) - 1)
    xy = [(i * step, height - v / top * (height - 20), v) for i, v in enumerate(values) if v is not None]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#ef4444"><title>{e(f"{v:.0f} {unit}")}</title></circle>'
        for x, y, v in xy
    )
    line = f'<polyline fill="none" stroke="#ef4444" stroke-width="2" points="{points}"/>{dots}' if xy else ""
    label = f'<text x="4" y="14" font-size="12">{e(title)} (max {top:.0f} {e(unit)})</text>'
    return (
        f'<svg class="chart" role="img" aria-label="{e(title)}" width="{width}" height="{height}">{label}{line}</svg>'
    )


def login_script(url: str) -> str:
    """Asks the NIP-07 signer (`window.nostr`) for a NIP-98 event naming the login URL, and posts it."""
    return (
        "document.getElementById('login').addEventListener('click', async () => {"
        "const out = document.getElementById('out');"
        "if (!window.nostr) { out.textContent = 'no NIP-07 signer (window.nostr) in this browser'; return; }"
        "try {"
        "const ev = await window.nostr.signEvent({kind: 27235, created_at: Math.floor(Date.now() / 1000),"
        f" tags: [['u', {json.dumps(url)}], ['method', 'POST']], content: ''}});"
        "const r = await fetch('/admin/login', {method: 'POST', credentials: 'same-origin',"
        " headers: {'Authorization': 'Nostr ' + btoa(JSON.stringify(ev))}});"
        "if (r.ok) { location.href = '/admin'; } else {"
        " const b = await r.json(); out.textContent = b.error.code + ': ' + b.error.message; }"
        "} catch (err) { out.textContent = 'signing failed: ' + err; } });"
    )
