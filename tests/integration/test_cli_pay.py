"""Paying from the command line against a paying router and node on loopback, each party with its own wallet
(test-only wallets over an in-memory ledger: tests/support/paid_network.py), at 80 columns: `fedai infer --pay
--yes` pays the node's share to the node's wallet and the fee to the router's and shows the invoices paid; no
--yes and no terminal pays nothing; a wrong wallet spec stops before anything is asked; `fedai pay` prints the
proof `fedai infer --proof` uses once; `GET /payments/{id}` answers the paying client only; `fedai earnings`
states what each wallet received."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.cli.prompt_input import PromptInput
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import auth_header
from fedai.sdk import AsyncClient, ChainError, Client, RouterError
from tests.support.paid_network import MODEL, NETWORK, ROUTER_FEE_MSAT, PaidNetwork, paid_network
from tests.support.tls import SelfSigned, self_signed

pytestmark = pytest.mark.integration

PROMPT = "What is 2+2?"
HEX64 = re.compile("[0-9a-f]{64}")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return self_signed(tmp_path_factory.mktemp("cli-pay-tls"))


@pytest.fixture
async def net(database_url: str, db_pool: asyncpg.Pool, tls: SelfSigned, tmp_path: Path) -> AsyncIterator[PaidNetwork]:
    async with paid_network(database_url, db_pool, tls, tmp_path) as network:
        yield network


async def fedai(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """One `fedai` command in-process at 80 columns (in a thread: the servers run on this loop)."""
    result = await asyncio.to_thread(CliRunner(env={"COLUMNS": "80"}).invoke, cli, list(args), stdin)
    return result.exit_code, result.stdout, result.stderr


def assert_fits(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > 80 and not line.startswith('{"')]
    assert not wide, f"lines over 80 columns: {wide}"


def args(net: PaidNetwork, key: Keys) -> list[str]:
    r = net.router
    return ["--router", r.url, "--router-pubkey", r.pubkey, "--key", key.nsec, "--network", NETWORK]


def paying(net: PaidNetwork, key: Keys) -> list[str]:
    return [*args(net, key), "--wallet", net.client_wallet.spec, "-m", MODEL, "--max-tokens", "16"]


async def test_infer_pay_yes_pays_each_payee_and_shows_the_invoices_paid(net: PaidNetwork) -> None:
    code, out, err = await fedai("infer", *paying(net, Keys.generate()), "--pay", "--yes", PROMPT)
    assert code == 0, err
    assert_fits(out)
    assert_fits(err)
    node_msat, fee_msat = net.balance("node"), net.balance("router")
    assert node_msat > 0 and fee_msat == ROUTER_FEE_MSAT and net.runner.served == 1
    # who gets what was shown before paying, and the chain shows each invoice paid, by role and amount
    assert re.search(rf"node share .* {node_msat} msat", err) and re.search(rf"router fee .* {fee_msat} msat", err)
    assert f"{node_msat + fee_msat} msat paid, invoice by invoice" in out
    assert re.search(rf"✓ node share .* {node_msat} msat", out) and "chain verified" in out

    code, out, err = await fedai("infer", *paying(net, Keys.generate()), "--pay", "--yes", PROMPT, "--json")
    assert code == 0, err
    payment = json.loads(out)["payment"]
    assert HEX64.fullmatch(payment["payment_request"]) and all(p["paid"] for p in payment["payees"])
    assert {p["role"]: p["amount_msat"] for p in payment["payees"]} == {"node": node_msat, "router_fee": fee_msat}


async def test_without_yes_and_without_a_terminal_nothing_is_paid(net: PaidNetwork) -> None:
    code, _, err = await fedai("infer", *paying(net, Keys.generate()), "--pay", PROMPT)
    assert code == 2
    assert "without a confirmation: pass --yes" in err and "router fee" in err  # the total was shown, then refused
    assert net.ledger.payments == [] and net.runner.served == 0


async def test_a_wrong_wallet_spec_stops_before_anything_is_asked(net: PaidNetwork, db_pool: asyncpg.Pool) -> None:
    base = [a for a in paying(net, Keys.generate()) if a != net.client_wallet.spec]
    wrong = [*base[: base.index("--wallet") + 1], "bitcoin+ftp://wallet.example"]
    code, out, err = await fedai("infer", *wrong, "--pay", "--yes", PROMPT)
    assert code == 2 and out == ""
    assert err.startswith("error: --wallet") and len(err.strip().splitlines()) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM payment_requests") == 0  # no /pay was sent
    code, _, err = await fedai("pay", "0" * 32, *args(net, Keys.generate()), "--yes")
    assert code == 2 and "pass --wallet" in err


async def test_pay_prints_a_proof_that_infer_uses_once(net: PaidNetwork) -> None:
    key = Keys.generate()
    code, out, err = await fedai("quote", *args(net, key)[:-2], "-m", MODEL, "--max-tokens", "16", PROMPT, "--json")
    assert code == 0, err
    quote_id = json.loads(out)["quote_id"]
    code, out, err = await fedai("pay", quote_id, *args(net, key), "--wallet", net.client_wallet.spec, "--yes")
    assert code == 0, err
    assert_fits(err)
    proof = out.strip()  # stdout holds only the proof, one unwrapped line
    assert len(out.splitlines()) == 1 and HEX64.fullmatch(json.loads(proof)["payment_request"])
    used = [*args(net, key)[:-2], "-m", MODEL, "--max-tokens", "16", "--quote", quote_id, "--proof", proof]
    code, out, err = await fedai("infer", *used, PROMPT)
    assert code == 0, err
    assert "invoice by invoice" in out and net.runner.served == 1
    code, _, err = await fedai("infer", *used, PROMPT)
    assert code == 1 and "payment_used" in err and net.runner.served == 1  # one proof, one answer


async def test_payment_status_answers_the_paying_client_only(net: PaidNetwork) -> None:
    key = Keys.generate()
    code, out, err = await fedai("infer", *paying(net, key), "--pay", "--yes", PROMPT, "--json")
    assert code == 0, err
    request_id = json.loads(out)["payment"]["payment_request"]
    code, out, err = await fedai("payment", request_id, *args(net, key)[:-2], "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["client"] == key.pubkey and status["state"] == "consumed"
    assert sorted(p["state"] for p in status["payees"]) == ["consumed", "consumed"]
    await asyncio.sleep(1.1)  # a NIP-98 event is the same event within one second: a second one then is a replay
    code, out, err = await fedai("payment", request_id, *args(net, key)[:-2])
    assert code == 0, err
    assert out.count("consumed") == 3
    assert_fits(out)

    url = f"{net.router.url}/payments/{request_id}"
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(url)
        other = await http.get(url, headers={"Authorization": auth_header(Keys.generate(), "GET", url)})
        unknown_url = f"{net.router.url}/payments/{'0' * 64}"
        unknown = await http.get(unknown_url, headers={"Authorization": auth_header(key, "GET", unknown_url)})
        wrong_url = await http.get(url, headers={"Authorization": auth_header(key, "GET", url + "x")})
        forged = await http.get(url, headers={"Authorization": "Nostr bm90IGFuIGV2ZW50"})
        await asyncio.sleep(1.1)  # past the second of the CLI's own NIP-98 event (the same event within a second)
        header = {"Authorization": auth_header(key, "GET", url)}
        first, replayed = await http.get(url, headers=header), await http.get(url, headers=header)
    assert first.status_code == 200 and first.json()["id"] == request_id
    assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "replay"
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert wrong_url.status_code == 401 and forged.status_code == 401
    # another client's valid signature learns nothing: the same 404 as an id never issued
    assert other.status_code == unknown.status_code == 404
    assert other.json() == unknown.json()


async def test_sdk_payment_status_refuses_another_clients_key(net: PaidNetwork) -> None:
    key = Keys.generate()
    code, out, err = await fedai("infer", *paying(net, key), "--pay", "--yes", PROMPT, "--json")
    assert code == 0, err
    request_id = json.loads(out)["payment"]["payment_request"]

    def look(keys: Keys) -> dict[str, object]:
        with Client(net.router.url, keys, router_pubkey=net.router.pubkey) as client:
            return client.payment_status(request_id)

    assert (await asyncio.to_thread(look, key))["id"] == request_id
    with pytest.raises(RouterError) as refused:
        await asyncio.to_thread(look, Keys.generate())
    assert refused.value.http_status == 404


async def test_earnings_match_what_each_wallet_received(net: PaidNetwork, database_url: str) -> None:
    for _ in range(2):
        code, _, err = await fedai("infer", *paying(net, Keys.generate()), "--pay", "--yes", PROMPT)
        assert code == 0, err
    code, out, err = await fedai("earnings", "--role", "router", "--database-url", database_url, "--json")
    assert code == 0, err
    router = json.loads(out)
    assert router["total_msat"] == {"router_fee": net.balance("router"), "node": net.balance("node")}
    assert {r["key"] for r in router["rows"]} == {MODEL} and sum(r["requests"] for r in router["rows"]) == 4
    code, out, err = await fedai("earnings", "--role", "node", "--database-url", database_url, "--json")
    assert code == 0, err
    node = json.loads(out)
    assert node["total_msat"] == {"node": net.balance("node")} and node["rows"][0]["key"] == net.router.pubkey
    code, out, err = await fedai("earnings", "--role", "router", "--database-url", database_url)
    assert code == 0, err
    assert_fits(out)
    assert f"total fee (yours): {net.balance('router')} msat" in out


async def test_a_payment_request_by_quote_or_by_id_is_the_same_verified_request(net: PaidNetwork) -> None:
    async with AsyncClient(net.router.url, Keys.generate(), router_pubkey=net.router.pubkey) as client:
        quote = await client.quote(MODEL, max_tokens=16, prompt=PROMPT)
        by_quote = await client.payment_request(quote, network=NETWORK)  # the split checked against the quote
        by_id = await client.payment_request(quote.quote.quote_id, network=NETWORK)
        with pytest.raises(ChainError):  # verified before anything is paid: invoices for another network
            await client.payment_request(quote, network="bitcoin")
    assert by_id.event.id == by_quote.event.id and by_quote.payload.total_msat == quote.quote.price.total_msat
    assert net.ledger.payments == []


async def test_infer_pay_input_tokens_pays_for_a_tokenizer_that_counts_more(net: PaidNetwork) -> None:
    """A model counting ten times the router's 4-bytes-a-token estimate: priced on the estimate, the node is paid
    its quoted share and no more (a quote is a ceiling) for work its own price puts higher; a quote of
    --input-tokens pays the node its price for what it counted."""
    net.runner.input_factor = 10
    counted = 10 * PromptInput(messages=[{"role": "user", "content": PROMPT}]).estimated_tokens()

    def node_price(metering: dict[str, int]) -> int:  # NODE_PRICE_*: 100000 / 200000 msat per 1k tokens
        return -(-(metering["input_tokens"] * 100_000 + metering["output_tokens"] * 200_000) // 1000)

    code, out, err = await fedai("infer", *paying(net, Keys.generate()), "--pay", "--yes", PROMPT, "--json")
    assert code == 0, err
    short = json.loads(out)["metering"]
    assert short["input_tokens"] == counted
    assert short["price_msat"] == short["settlement"]["quoted_msat"] < node_price(short)  # capped at the quote

    code, out, err = await fedai(
        "infer", *paying(net, Keys.generate()), "--pay", "--yes", "--input-tokens", str(counted), PROMPT, "--json"
    )
    assert code == 0, err
    chain = json.loads(out)
    sized = chain["metering"]
    assert sized["input_tokens"] == counted
    assert sized["price_msat"] == node_price(sized) <= sized["settlement"]["quoted_msat"]  # its price, in full
    assert all(p["paid"] for p in chain["payment"]["payees"])
    assert net.runner.served == 2


async def test_infer_input_tokens_below_the_prompts_estimate_is_refused_before_anything_is_sent(
    net: PaidNetwork, db_pool: asyncpg.Pool
) -> None:
    estimate = PromptInput(messages=[{"role": "user", "content": PROMPT}]).estimated_tokens()
    low = ["--input-tokens", str(estimate - 1)]
    code, out, err = await fedai("infer", *paying(net, Keys.generate()), "--pay", "--yes", *low, PROMPT)
    assert code == 2 and out == ""
    assert err.startswith(f"error: --input-tokens {estimate - 1} is below") and len(err.strip().splitlines()) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM payment_requests") == 0 and net.ledger.payments == []
