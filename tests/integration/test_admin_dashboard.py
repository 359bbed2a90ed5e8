"""The /admin dashboard in headless Chromium (Debian's `chromium`, driven by Playwright with the system browser):
log in through a test NIP-07 signer, read every page, drain a node with its button, read the payments page of a
paying router. Screenshots are saved under
build/test-artifacts/admin-dashboard/ (or $FEDAI_TEST_ARTIFACTS/admin-dashboard/)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from fedai.protocol.event import sign_event
from fedai.protocol.keys import Keys
from tests.support.fake_node import FakeNode, register
from tests.support.paid_admin import Paid, assert_hidden, paid_and_refunded
from tests.support.paid_network import MODEL
from tests.support.router import RunningRouter, reset_database, running_router
from tests.support.servers import serve_app
from tests.support.tls import SelfSigned, self_signed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
API_KEY = "fk-dashboard-test-key"
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (Debian's; .ci/install-system-packages)"),
]
async_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (the dev extra)")


def artifacts() -> Path:
    root = Path(os.environ.get("FEDAI_TEST_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts"))
    folder = root / "admin-dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def nip07(keys: Keys) -> str:
    """A NIP-07 signer for the page: `window.nostr`, signing through the test's `fedaiSign` binding."""
    pubkey = json.dumps(keys.pubkey)
    sign = "async (ev) => JSON.parse(await window.fedaiSign(JSON.stringify(ev)))"
    return f"window.nostr = {{getPublicKey: async () => {pubkey}, signEvent: {sign}}};"


def signer(keys: Keys) -> Callable[[str], str]:
    def sign(raw: str) -> str:
        ev = json.loads(raw)
        return sign_event(keys, ev["kind"], ev["content"], ev["tags"], ev["created_at"]).to_json().decode()

    return sign


@pytest.fixture
async def served(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[tuple[RunningRouter, FakeNode, Keys]]:
    """A router with one node that has served one request (so the charts and the requests page have data)."""
    await reset_database(db_pool)
    operator, client = Keys.generate(), Keys.generate()
    keys = {hashlib.sha256(API_KEY.encode()).hexdigest(): client.pubkey}
    async with running_router(database_url, admin_keys=frozenset({operator.pubkey}), api_keys=keys) as router:
        node = FakeNode()
        async with serve_app(node.app()) as url, httpx.AsyncClient() as http:
            node.endpoint = url
            assert (await register(router.url, router.pubkey, node.keys, node.descriptor())).status_code == 200
            chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
            served = await http.post(
                router.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {API_KEY}"}
            )
            assert served.status_code == 200, served.text
            yield router, node, operator


async def test_log_in_with_a_nip07_signer_read_the_pages_and_drain_a_node(
    served: tuple[RunningRouter, FakeNode, Keys],
) -> None:
    router, node, operator = served
    shots = artifacts()
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        context = await browser.new_context(viewport={"width": 1100, "height": 800})
        await context.expose_function("fedaiSign", signer(operator))
        await context.add_init_script(nip07(operator))
        page = await context.new_page()
        await page.goto(router.url + "/admin")
        assert await page.locator("h1").inner_text() == "log in"
        await page.screenshot(path=str(shots / "0-login.png"))
        await page.click("#login")
        await page.wait_for_selector("h1:text('status')")
        status = await page.content()
        assert "1 fresh of 1" in status and status.count("<svg") == 2
        await page.screenshot(path=str(shots / "1-status.png"), full_page=True)
        cookie = next(c for c in await context.cookies() if c["name"] == "fedai_admin")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"

        await page.goto(router.url + "/admin/requests")
        assert "fake-model" in await page.content() and "hello" not in await page.content()
        await page.screenshot(path=str(shots / "2-requests.png"), full_page=True)
        await page.click("header a:text('payments')")
        await page.wait_for_selector("h1:text('payments')")
        assert await page.locator("svg[aria-label^='router fee earned']").count() == 1
        assert "recent payment requests" in await page.content()
        await page.screenshot(path=str(shots / "2b-payments-unpaid.png"), full_page=True)
        await page.goto(router.url + "/admin/peers")
        assert await page.locator("h1").inner_text() == "peers"
        await page.screenshot(path=str(shots / "3-peers.png"), full_page=True)

        await page.goto(router.url + "/admin/nodes")
        row = page.locator("tr", has_text=node.keys.pubkey[:16])
        assert "fresh" in await row.inner_text()
        await row.locator("button[name=drain]").click()
        await page.wait_for_selector("button[name=undrain]")
        assert "drained" in await page.locator("tr", has_text=node.keys.pubkey[:16]).inner_text()
        await page.screenshot(path=str(shots / "4-nodes-drained.png"), full_page=True)

        forged = await page.request.post(router.url + f"/admin/nodes/{node.keys.pubkey}/ban", form={"csrf": "guess"})
        assert forged.status == 403 and (await forged.json())["error"]["code"] == "forbidden"
        await browser.close()
    assert router.service.registry.nodes[node.keys.pubkey].held
    assert node.keys.pubkey not in router.service.registry.banned
    audit = await router.service.pool.fetch("SELECT actor, action FROM admin_audit")
    assert [(r["actor"], r["action"]) for r in audit] == [(operator.pubkey, "node.drain")]


async def test_a_signer_that_is_not_an_operator_gets_no_session(served: tuple[RunningRouter, FakeNode, Keys]) -> None:
    router, node, _ = served
    stranger = Keys.generate()
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        context = await browser.new_context()
        await context.expose_function("fedaiSign", signer(stranger))
        await context.add_init_script(nip07(stranger))
        page = await context.new_page()
        await page.goto(router.url + "/admin")
        await page.click("#login")
        await page.wait_for_selector("#out:has-text('forbidden')")
        await page.screenshot(path=str(artifacts() / "5-refused.png"))
        assert not [c for c in await context.cookies() if c["name"] == "fedai_admin"]
        await page.goto(router.url + "/admin/nodes")
        assert await page.locator("h1").inner_text() == "log in"
        await browser.close()
    async with httpx.AsyncClient() as http:
        anonymous = await http.post(router.url + f"/admin/nodes/{node.keys.pubkey}/drain", data={"csrf": "x"})
    assert anonymous.status_code == 401
    assert not router.service.registry.nodes[node.keys.pubkey].held


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("dashboard-tls"))


@pytest.fixture
async def paid(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[Paid]:
    async with paid_and_refunded(database_url, db_pool, tls, tmp_path) as setup:
        yield setup


async def test_the_payments_page_charts_the_fee_earned_and_lists_each_payment_without_secrets(paid: Paid) -> None:
    router, operator = paid.net.router, paid.operator
    fee = next(s for s in paid.chain.settlements if s.role == "router_fee")
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        context = await browser.new_context(viewport={"width": 1100, "height": 800})
        await context.expose_function("fedaiSign", signer(operator))
        await context.add_init_script(nip07(operator))
        page = await context.new_page()
        await page.goto(router.url + "/admin")
        await page.click("#login")
        await page.wait_for_selector("h1:text('status')")
        await page.click("header a:text('payments')")
        await page.wait_for_selector("h1:text('payments')")
        chart = page.locator("svg[aria-label^='router fee earned']")
        assert await chart.count() == 1
        bars = [await t.text_content() for t in await chart.locator("rect title").all()]
        assert len(bars) == 30 and bars[-1] == f"{fee.used_msat} msat" and set(bars[:-1]) == {"0 msat"}
        totals = await page.locator("tr", has_text="fee (yours)").inner_text()
        assert str(fee.used_msat) in totals and str(fee.refund_msat) in totals
        served = await page.locator("tr", has_text=paid.consumed[:12]).inner_text()
        assert "consumed" in served and MODEL in served and f"fee paid {fee.refund_msat}" in served
        assert paid.consumed not in served  # ids and keys shortened
        unused = await page.locator("tr", has_text=paid.issued[:12]).inner_text()
        assert "issued" in unused and "node issued" in unused
        assert_hidden(await page.content(), paid.secrets)
        await page.screenshot(path=str(artifacts() / "6-payments.png"), full_page=True)
        await browser.close()
