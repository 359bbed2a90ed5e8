"""The pure parts of `fedai devnet --pay`: whole-sat prices, private wallet files, node databases, the settings
each service gets, the payouts the demo expects, and devnet.json with and without the wallets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedai.cli.devnet_dir import DataDir
from fedai.cli.devnet_file import DevnetInfo, LnbitsEntry, NodeEntry, RouterEntry, read_devnet, write_devnet
from fedai.cli.devnet_paid_demo import expected_changes
from fedai.cli.devnet_pay import ROUTER_FEE_MSAT, DevnetPayments, database_url, write_wallet_file
from fedai.cli.devnet_plan import node_prices
from fedai.protocol.keys import Keys
from fedai.protocol.messages import PriceBreakdown, Pricing, QuoteResponse
from fedai.sdk.client import Quote
from fedai_router.pricing import quote_price


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize(("tokens_in", "tokens_out"), [(1, 1), (7, 32), (999, 1), (12345, 4096)])
def test_paid_prices_quote_whole_satoshis_for_any_token_count(index: int, tokens_in: int, tokens_out: int) -> None:
    price_in, price_out = node_prices(index, pay=True)
    price = quote_price(
        Pricing(input_msat=price_in, output_msat=price_out),
        tokens_in,
        tokens_out,
        fee_base_msat=ROUTER_FEE_MSAT,
        fee_ppm=0,
    )
    assert price.input_msat % 1000 == 0 and price.output_msat % 1000 == 0 and price.router_fee_msat % 1000 == 0
    assert price.input_msat > 0 and price.output_msat > 0


def test_unpaid_prices_are_unchanged() -> None:
    assert node_prices(0) == (1000, 2000) and node_prices(1) == (1500, 3000)
    assert node_prices(1, pay=True) != node_prices(0, pay=True)  # the scheduler still has a choice


def test_wallet_files_are_private_even_over_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "wallets" / "client.uri"
    path.parent.mkdir(mode=0o755)
    path.write_text("old")
    path.chmod(0o644)
    write_wallet_file(path, "lnbits+http://127.0.0.1:5000/?key=secret")
    assert path.read_text() == "lnbits+http://127.0.0.1:5000/?key=secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_node_databases_keep_the_server_and_its_options() -> None:
    assert database_url("postgresql://postgres@127.0.0.1:5432/postgres", "fedai_node_1") == (
        "postgresql://postgres@127.0.0.1:5432/fedai_node_1"
    )
    assert database_url("postgresql://postgres:@/postgres?host=/tmp/x/pg", "fedai_node_2") == (
        "postgresql://postgres:@/fedai_node_2?host=/tmp/x/pg"
    )


def test_each_service_gets_its_own_wallet_file_and_payment_on(tmp_path: Path) -> None:
    payments = DevnetPayments(DataDir.at(tmp_path), nodes=2)
    payments.wallet_files = {name: tmp_path / f"{name}.uri" for name in ("client", "router", "node-1", "node-2")}
    payments.node_dsns = ["postgresql://a/fedai_node_1", "postgresql://a/fedai_node_2"]
    router = payments.router_env()
    assert router["ROUTER_REQUIRE_PAYMENT"] == "true" and router["ROUTER_WALLET"] == str(tmp_path / "router.uri")
    assert router["ROUTER_LN_NETWORK"] == "bitcoin" and router["ROUTER_FEE_PPM"] == "0"
    node = payments.node_env(1)
    assert node == {
        "NODE_REQUIRE_PAYMENT": "true",
        "NODE_WALLET": str(tmp_path / "node-2.uri"),
        "NODE_LN_NETWORK": "bitcoin",
        "NODE_DB_URL": "postgresql://a/fedai_node_2",
    }


def info(tmp_path: Path, lnbits: LnbitsEntry | None = None) -> DevnetInfo:
    router = Keys.generate()
    nodes = [Keys.generate(), Keys.generate()]
    return DevnetInfo(
        relay_url="ws://127.0.0.1:7777",
        database_url="postgresql://postgres@127.0.0.1:5432/postgres",
        router=RouterEntry(url="http://127.0.0.1:8080", pubkey=router.pubkey, npub=router.npub),
        nodes=[
            NodeEntry(url=f"http://127.0.0.1:{8090 + i}", pubkey=k.pubkey, npub=k.npub, model="m")
            for i, k in enumerate(nodes)
        ],
        client_key_file=str(tmp_path / "client.key"),
        logs_dir=str(tmp_path / "logs"),
        pids={},
        client_wallet_file=str(tmp_path / "wallets" / "client.uri") if lnbits else "",
        lnbits=lnbits,
    )


def test_devnet_json_names_the_wallet_files_not_their_secrets(tmp_path: Path) -> None:
    entry = LnbitsEntry(
        url="http://127.0.0.1:5000", network="bitcoin", log="/x/lnbits.log", wallet_files={"client": "/x/client.uri"}
    )
    written = info(tmp_path, entry)
    assert read_devnet(write_devnet(tmp_path, written)) == written
    unpaid = info(tmp_path)
    back = read_devnet(write_devnet(tmp_path, unpaid))
    assert back.lnbits is None and back.client_wallet_file == ""


def test_the_demo_expects_the_quotes_node_its_share_and_the_router_its_fee(tmp_path: Path) -> None:
    net = info(tmp_path)
    price = PriceBreakdown(input_msat=7000, output_msat=64000, router_fee_msat=2000, total_msat=73000)
    response = QuoteResponse(
        quote_id="q1",
        model="m",
        node=net.nodes[1].pubkey,
        input_tokens=7,
        max_output_tokens=32,
        price=price,
        expires_at=2_000_000_000,
    )
    quote = Quote(event=None, quote=response)  # type: ignore[arg-type]  # only the payload is read
    assert expected_changes(net, quote) == {"client": -73000, "node-1": 0, "node-2": 71000, "router": 2000}
