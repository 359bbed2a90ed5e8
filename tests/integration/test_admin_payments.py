"""The router's earnings and payment requests in its admin API (runbooks/admin.md): GET /admin/api/earnings and
GET /admin/api/payments over a paying network on loopback (docs/payments.md#the-flow), `fedai admin earnings` and
`fedai admin payments`, refusals without an operator's signature, typed 400s for bad parameters, and no invoice,
preimage or refund destination in any answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.payments.earnings import earnings_rows, totals
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import auth_header
from tests.support.paid_admin import Paid, assert_hidden, paid_and_refunded
from tests.support.paid_network import MODEL
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("admin-payments-tls"))


@pytest.fixture
async def paid(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[Paid]:
    async with paid_and_refunded(database_url, db_pool, tls, tmp_path) as setup:
        yield setup


async def signed_get(router: RunningRouter, keys: Keys | None, path: str) -> httpx.Response:
    url = router.url + path
    headers = {"Authorization": auth_header(keys, "GET", url, nonce=True)} if keys else {}
    async with httpx.AsyncClient() as http:
        return await http.get(url, headers=headers)


async def test_earnings_are_the_routers_fee_net_of_its_refund_with_the_node_share_brokered(
    paid: Paid, database_url: str
) -> None:
    response = await signed_get(paid.net.router, paid.operator, "/admin/api/earnings?days=1")
    assert response.status_code == 200, response.text
    doc = response.json()
    statements = {s.role: s for s in paid.chain.settlements}
    fee, node = statements["router_fee"], statements["node"]
    assert doc["days"] == 1
    assert doc["total_msat"] == {"router_fee": fee.used_msat, "node": node.quoted_msat}  # node shares never netted
    assert doc["refunded_msat"] == {"router_fee": fee.refund_msat, "node": 0}
    assert {(r["key"], r["role"], r["requests"]) for r in doc["rows"]} == {(MODEL, "router_fee", 1), (MODEL, "node", 1)}
    # the same rows `fedai earnings --role router` reads from the database
    assert doc["rows"] == await earnings_rows(paid.net.router.service.pool, "router", 1)
    assert totals(doc["rows"]) == doc["total_msat"]
    assert_hidden(response.text, paid.secrets)


async def test_payments_page_newest_first_with_each_payee_and_refund_and_no_secret(paid: Paid) -> None:
    router, seen, cursor = paid.net.router, [], None
    for _ in range(5):
        query = httpx.QueryParams({"limit": 1, **({"before": cursor} if cursor else {})})
        response = await signed_get(router, paid.operator, f"/admin/api/payments?{query}")
        assert response.status_code == 200, response.text
        assert_hidden(response.text, paid.secrets)
        doc = response.json()
        seen += doc["payments"]
        cursor = doc["next"]
        if cursor is None:
            break
    assert [p["id"] for p in seen] == [paid.issued, paid.consumed]
    served, unused = seen[1], seen[0]
    assert (served["state"], unused["state"]) == ("consumed", "issued")
    assert served["client"] == unused["client"] and len(served["client"]) == 64 and served["model"] == MODEL
    statements = {s.role: s for s in paid.chain.settlements}
    assert served["total_msat"] == sum(s.quoted_msat for s in statements.values())
    payees = {p["role"]: p for p in served["payees"]}
    assert set(payees) == {"node", "router_fee"} and {p["state"] for p in payees.values()} == {"consumed"}
    for role, statement in statements.items():
        refund = payees[role]["refund"]
        assert (refund["state"], refund["refund_msat"], refund["used_msat"]) == (
            "paid",
            statement.refund_msat,
            statement.used_msat,
        )
    assert served["refunded_msat"] == sum(s.refund_msat for s in statements.values())
    assert [p["refund"] for p in unused["payees"]] == [None, None] and unused["refunded_msat"] == 0
    for payee in served["payees"] + unused["payees"]:
        assert set(payee) == {"role", "payee", "amount_msat", "payment_hash", "state", "updated_at", "refund"}

    only = await signed_get(router, paid.operator, "/admin/api/payments?state=consumed")
    assert [p["id"] for p in only.json()["payments"]] == [paid.consumed] and only.json()["next"] is None


async def test_the_admin_commands_show_earnings_and_payments_in_80_columns(paid: Paid) -> None:
    common = ("--router", paid.net.router.url, "--admin-key", paid.operator.secret_hex)
    fee = next(s for s in paid.chain.settlements if s.role == "router_fee")

    code, out, err = await fedai("admin", "earnings", "--days", "1", *common)
    assert code == 0, err
    assert f"total fee (yours): {fee.used_msat} msat net ({fee.refund_msat} refunded)" in out and MODEL in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out, err = await fedai("admin", "earnings", *common, "--json")
    assert code == 0, err
    assert json.loads(out)["total_msat"]["router_fee"] == fee.used_msat

    code, out, err = await fedai("admin", "payments", *common)
    assert code == 0, err
    assert (
        "payment requests (2)" in out
        and "consumed" in out
        and "issued" in out
        and f"refund paid {fee.refund_msat}" in out
    )
    assert max(len(line) for line in out.splitlines()) <= 80
    assert_hidden(out, paid.secrets)
    code, out, err = await fedai("admin", "payments", "--state", "issued", "--limit", "5", *common, "--json")
    assert code == 0, err
    assert [p["id"] for p in json.loads(out)["payments"]] == [paid.issued]
    code, _, err = await fedai("admin", "payments", *common[:2], "--admin-key", Keys.generate().secret_hex)
    assert code != 0 and "forbidden" in err


async def fedai(*args: str) -> tuple[int, str, str]:
    """One `fedai` command in-process at 80 columns (in a thread: the servers run on this loop)."""
    result = await asyncio.to_thread(CliRunner(env={"COLUMNS": "80"}).invoke, cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
async def router(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[tuple[RunningRouter, Keys]]:
    await reset_database(db_pool)
    operator = Keys.generate()
    async with running_router(database_url, admin_keys=frozenset({operator.pubkey})) as running:
        yield running, operator


@pytest.mark.parametrize("path", ["/admin/api/earnings", "/admin/api/payments"])
async def test_without_an_operators_signature_nothing_is_listed(router: tuple[RunningRouter, Keys], path: str) -> None:
    running, _ = router
    anonymous = await signed_get(running, None, path)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    stranger = await signed_get(running, Keys.generate(), path)
    assert stranger.status_code == 403 and stranger.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("/admin/api/earnings?days=0", "days"),
        ("/admin/api/earnings?days=3661", "days"),
        ("/admin/api/earnings?days=-1", "days"),
        ("/admin/api/earnings?days=week", "days"),
        ("/admin/api/payments?limit=0", "limit"),
        ("/admin/api/payments?limit=201", "limit"),
        ("/admin/api/payments?state=paid", "state"),
        ("/admin/api/payments?before=yesterday", "before"),
    ],
)
async def test_bad_parameters_are_a_typed_400(router: tuple[RunningRouter, Keys], query: str, names: str) -> None:
    running, operator = router
    response = await signed_get(running, operator, query)
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "invalid_request" and names in error["message"]


async def test_an_empty_router_lists_no_payments_and_earns_nothing(router: tuple[RunningRouter, Keys]) -> None:
    running, operator = router
    earnings = await signed_get(running, operator, "/admin/api/earnings")
    assert earnings.json() == {"days": 30, "rows": [], "total_msat": {}, "refunded_msat": {}}
    payments = await signed_get(running, operator, "/admin/api/payments")
    assert payments.json() == {"payments": [], "next": None}
