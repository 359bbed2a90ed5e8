"""The web dashboard at /admin (runbooks/admin.md#dashboard): server-rendered pages (status with traffic and
latency charts, nodes with drain and ban buttons, peers, recent requests, payments with an earnings chart), a
NIP-07 login (a NIP-98 event by a ROUTER_ADMIN_KEYS key, checked like any admin API call) and a short-lived
session cookie (HttpOnly, SameSite=Strict); every POST form carries the session's CSRF token. Actions go through
the same store as the admin API, so they are audited and reach every replica."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from fedai.payments.earnings import daily
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.service.http import json_response, read_body
from fedai_router.admin import Operators
from fedai_router.admin_api import NODE_ACTIONS, earnings_document, pubkey_param
from fedai_router.admin_state import AdminState
from fedai_router.dashboard_html import bar_chart, form, line_chart, login_script, page, table
from fedai_router.dashboard_session import COOKIE, Session, Sessions
from fedai_router.ops import Ops, node_summary
from fedai_router.store import admin as store
from fedai_router.store.admin import Change
from fedai_router.store.payment_listing import list_payments

MAX_FORM_BYTES = 4096
EARNINGS_DAYS = 30
ROLE_NAMES = {"router_fee": "fee", "node": "node", "provider": "provider"}
Page = Callable[[Request, Session, str], Awaitable[str]]


def payment_row(p: dict[str, Any]) -> tuple[str, ...]:
    """One payment request as a table row: ids and the client shortened, each payee's role and state, and each
    refund's state and amount."""
    payees = ", ".join(f"{ROLE_NAMES.get(x['role'], x['role'])} {x['state']}" for x in p["payees"])
    refunds = ", ".join(
        f"{ROLE_NAMES.get(x['role'], x['role'])} {x['refund']['state']} {x['refund']['refund_msat']}"
        for x in p["payees"]
        if x["refund"] and x["refund"]["state"] != "none"
    )
    return (
        p["created_at"][:19].replace("T", " "),
        p["id"][:12] + "…",
        p["client"][:12] + "…",
        p["model"] or "?",
        p["state"],
        str(p["total_msat"]),
        payees,
        refunds or "-",
    )


def csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def html(body: str, nonce: str, status: int = 200) -> HTMLResponse:
    headers = {"Content-Security-Policy": csp(nonce), "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
    return HTMLResponse(body, status_code=status, headers=headers)


class Dashboard:
    def __init__(
        self, *, operators: Operators, state: AdminState, ops: Ops, sessions: Sessions, public_url: str
    ) -> None:
        self.operators = operators
        self.state = state
        self.ops = ops
        self.sessions = sessions
        self.public_url = public_url  # ROUTER_PUBLIC_URL: the login event names it; https makes the cookie Secure

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin", self._page("status", self.status_page), methods=["GET"]),
            Route("/admin/nodes", self._page("nodes", self.nodes_page), methods=["GET"]),
            Route("/admin/peers", self._page("peers", self.peers_page), methods=["GET"]),
            Route("/admin/requests", self._page("recent requests", self.requests_page), methods=["GET"]),
            Route("/admin/payments", self._page("payments", self.payments_page), methods=["GET"]),
            Route("/admin/login", self.login, methods=["POST"]),
            Route("/admin/logout", self.logout, methods=["POST"]),
            Route("/admin/nodes/{pubkey}/{action}", self.node_action, methods=["POST"]),
        ]

    def session(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE), self.operators.keys)

    def _page(self, title: str, render: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            nonce = secrets.token_urlsafe(16)
            session = self.session(request)
            if session is None:
                body = '<p>Log in with your operator key (a NIP-07 signer).</p><button id="login">log in</button>'
                script = login_script(self.public_url + "/admin/login")
                return html(
                    page("log in", body + '<p id="out"></p>', operator=None, csrf=None, nonce=nonce, script=script),
                    nonce,
                )
            content = await render(request, session, nonce)
            return html(page(title, content, operator=session.operator, csrf=session.csrf, nonce=nonce), nonce)

        return endpoint

    async def login(self, request: Request) -> Response:
        """A NIP-98 event for POST /admin/login, signed by an operator key: a session cookie."""
        try:
            operator = await self.operators.signer(request, await read_body(request, MAX_FORM_BYTES))
        except Exception as exc:  # noqa: BLE001 - typed like every admin refusal
            return self.operators.refusal("admin_login", self.operators.failures.refused("admin_login", exc))
        cookie, session = self.sessions.issue(operator)
        response = json_response({"operator": operator, "expires": session.expires})
        secure = self.public_url.startswith("https://")
        response.set_cookie(
            COOKIE, cookie, max_age=self.sessions.ttl_s, path="/admin", httponly=True, samesite="strict", secure=secure
        )
        return response

    async def _form(self, request: Request) -> tuple[Session, dict[str, str]]:
        """The session and form fields of a dashboard POST; no session or a wrong CSRF token is refused."""
        session = self.session(request)
        if session is None:
            raise FedaiError(ErrorCode.UNAUTHORIZED, "log in first (your session expired or is missing)")
        body = await read_body(request, MAX_FORM_BYTES)
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if not hmac.compare_digest(fields.get("csrf", ""), session.csrf):
            raise FedaiError(ErrorCode.FORBIDDEN, "this form is not from your session (CSRF token mismatch)")
        return session, fields

    async def logout(self, request: Request) -> Response:
        try:
            await self._form(request)
        except FedaiError as err:
            return self.operators.refusal("admin_logout", err)
        response = RedirectResponse("/admin", status_code=303)
        response.delete_cookie(COOKIE, path="/admin")
        return response

    async def node_action(self, request: Request) -> Response:
        try:
            session, _ = await self._form(request)
            pubkey, action = pubkey_param(request.path_params["pubkey"]), request.path_params["action"]
            if action not in NODE_ACTIONS:
                raise FedaiError(ErrorCode.NOT_FOUND, f"no node action {action!r}")
            flag, value = NODE_ACTIONS[action]
            await store.set_node_flag(self.ops.pool, Change(session.operator, f"node.{action}", pubkey), flag, value)
            await self.state.reload()
        except Exception as exc:  # noqa: BLE001 - typed like every admin refusal
            return self.operators.refusal("admin_node", self.operators.failures.refused("admin_node", exc))
        return RedirectResponse("/admin/nodes", status_code=303)

    async def status_page(self, _request: Request, _session: Session, _nonce: str) -> str:
        status = self.ops.operator_status()
        fresh = sum(1 for n in status["nodes"] if n["fresh"])
        federation = status["federation"]
        facts = [
            ("version", status["version"]),
            ("uptime", f"{status['uptime_s']:.0f} s"),
            ("nodes", f"{fresh} fresh of {len(status['nodes'])}"),
            ("held by operators", str(len(self.state.snapshot.drained | self.state.snapshot.banned))),
            ("relays connected", f"{sum(status['relays'].values())} of {len(status['relays'])}"),
            ("backpressure", federation["backpressure"]),
            ("peers", str(len(federation["peers"]))),
            ("router fee", f"{self.state.fees.base_msat} msat + {self.state.fees.ppm} ppm"),
        ]
        minutes = await store.traffic_by_minute(self.ops.pool)
        charts = bar_chart("requests per minute, last hour", [n for n, _ in minutes], unit="req") + line_chart(
            "mean wall time per minute", [ms for _, ms in minutes], unit="ms"
        )
        return table(("what", "now"), facts) + "<h2>traffic</h2>" + charts

    async def nodes_page(self, _request: Request, session: Session, _nonce: str) -> str:
        now, snap = time.time(), self.state.snapshot
        rows = []
        for node in sorted(self.ops.nodes.values(), key=lambda n: n.pubkey):
            s = node_summary(node, now, self.ops.policy)
            drained, banned = node.pubkey in snap.drained, node.pubkey in snap.banned
            actions = "".join(
                form(f"/admin/nodes/{node.pubkey}/{a}", a, session.csrf, name=a)
                for a in ("undrain" if drained else "drain", "unban" if banned else "ban")
            )
            state = "banned" if banned else "drained" if drained else ("fresh" if s["fresh"] else "stale")
            rows.append(
                (node.pubkey[:16] + "…", ", ".join(s["models"]), state, f"{s['load']}/{s['capacity']}", actions)
            )
        return table(("node", "models", "state", "load", "actions"), rows, raw=(4,))

    async def peers_page(self, _request: Request, _session: Session, _nonce: str) -> str:
        rules = self.state.snapshot.peers
        peers = self.ops.federation.peer_summaries(time.time(), detail=False)
        rows = [(p["pubkey"][:16] + "…", p.get("policy", "?"), rules.get(p["pubkey"], "-")) for p in peers]
        listed = {p["pubkey"] for p in peers}
        rows += [(k[:16] + "…", "not learned", rule) for k, rule in sorted(rules.items()) if k not in listed]
        return (
            table(("peer", "policy", "operator rule"), rows) + "<p>Change rules with <code>fedai admin peer</code>.</p>"
        )

    async def requests_page(self, _request: Request, _session: Session, _nonce: str) -> str:
        records, _ = await store.list_metering(self.ops.pool, limit=50, before=None)
        rows = [
            (
                r["created_at"][:19],
                r["client"][:12] + "…",
                r["node"][:12] + "…",
                r["model"],
                f"{r['input_tokens']}+{r['output_tokens']}",
                f"{r['wall_ms']:.0f}",
                str(r["price_msat"]),
            )
            for r in records
        ]
        return table(("at", "client", "node", "model", "tokens", "ms", "msat"), rows)

    async def payments_page(self, _request: Request, _session: Session, _nonce: str) -> str:
        doc = await earnings_document(self.ops.pool, EARNINGS_DAYS)
        series = daily(doc["rows"], "router_fee", EARNINGS_DAYS, datetime.now(UTC).date())
        chart = bar_chart(
            f"router fee earned per UTC day, net of refunds, last {EARNINGS_DAYS} days",
            [msat for _, msat in series],
            unit="msat",
        )
        roles = sorted(doc["total_msat"], key=lambda r: (r != "router_fee", r))
        totals = [
            (
                ROLE_NAMES.get(r, r) + (" (yours)" if r == "router_fee" else " (brokered)"),
                str(doc["total_msat"][r]),
                str(doc["refunded_msat"][r]),
            )
            for r in roles
        ]
        payments, _ = await list_payments(self.ops.pool, limit=50, before=None, state=None)
        return (
            "<h2>earnings</h2>"
            + chart
            + table(("paid as", "net msat", "refunded msat"), totals)
            + "<h2>recent payment requests</h2>"
            + table(("at", "id", "client", "model", "state", "msat", "payees", "refunds"), map(payment_row, payments))
            + "<p>More with <code>fedai admin payments</code> and <code>fedai admin earnings</code>.</p>"
        )
