"""Wallet bindings of OpenAI callers (docs/payments.md#the-openai-edge): `ROUTER_API_KEY_WALLETS` as the router
parses it, and `fedai apikey new --nwc` that produces its entry without ever printing the connection's secret."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.payments.spec import WalletConfigError
from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_router.client_wallets import binding_id, parse_wallet_bindings
from fedai_router.config import RouterSettings, parse_api_keys

SECRET = "ab" * 32
URI = f"nostr+walletconnect://{'cd' * 32}?relay=ws%3A%2F%2F127.0.0.1%3A7777&secret={SECRET}"


def wallet_file(tmp_path: Path) -> Path:
    path = tmp_path / "client.nwc"
    path.write_text(URI + "\n")
    return path


def test_entries_bind_an_api_key_or_a_nip98_identity_to_a_wallet_file(tmp_path: Path) -> None:
    path, digest, client = wallet_file(tmp_path), "0f" * 32, Keys.generate()
    bindings = parse_wallet_bindings(f"{digest}:5000:{path}, {client.npub}:70:{path}")
    assert set(bindings) == {binding_id(digest, client.pubkey), binding_id(None, client.pubkey)}
    by_key = bindings[f"apikey:{digest}"]
    assert (by_key.budget_msat, by_key.wallet_file) == (5000, str(path))
    assert bindings[f"client:{client.pubkey}"].budget_msat == 70
    assert parse_wallet_bindings("") == {}


@pytest.mark.parametrize(
    "entry",
    [
        "0f" * 32,
        f"{'0f' * 32}:0:FILE",
        f"{'0f' * 32}:-5:FILE",
        f"{'0f' * 32}:1e3:FILE",
        "nobody:5:FILE",
        f"{'0f' * 32}:5:",
    ],
)
def test_malformed_entries_fail_the_start(entry: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_wallet_bindings(entry.replace("FILE", str(wallet_file(tmp_path))))
    assert "ROUTER_API_KEY_WALLETS" in str(refused.value)


def test_a_wallet_file_that_holds_no_wallet_fails_the_start_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.nwc"
    path.write_text(f"not a wallet {SECRET}\n")
    with pytest.raises(WalletConfigError) as refused:
        parse_wallet_bindings(f"{'0f' * 32}:5:{path}")
    assert "ROUTER_API_KEY_WALLETS" in str(refused.value) and SECRET not in str(refused.value)


def test_apikey_new_with_nwc_writes_the_uri_to_a_private_file_and_prints_both_entries(tmp_path: Path) -> None:
    client, target = Keys.generate(), tmp_path / "wallets" / "alice.nwc"
    target.parent.mkdir()
    args = ["apikey", "new", "--client", client.npub, "--nwc", "-", "--budget-msat", "250000"]
    result = CliRunner().invoke(cli, [*args, "--wallet-file", str(target), "--json"], input=URI + "\n")
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output  # the connection's secret is in the file only
    doc = json.loads(result.output)
    digest = hashlib.sha256(doc["api_key"].encode()).hexdigest()
    assert parse_api_keys(doc["router_api_keys_entry"]) == {digest: client.pubkey}
    binding = parse_wallet_bindings(doc["router_api_key_wallets_entry"])[f"apikey:{digest}"]
    assert (binding.budget_msat, Path(binding.wallet_file)) == (250000, target.resolve())
    assert target.read_text().strip() == URI and stat.S_IMODE(target.stat().st_mode) == 0o600
    again = CliRunner().invoke(cli, [*args, "--wallet-file", str(target)], input=URI + "\n")
    assert again.exit_code == 2 and "must not exist" in again.output  # never overwrites a wallet file


def test_apikey_new_refuses_a_partial_binding_or_a_bad_uri(tmp_path: Path) -> None:
    client = Keys.generate().npub
    partial = CliRunner().invoke(cli, ["apikey", "new", "--client", client, "--nwc", URI])
    assert partial.exit_code == 2 and "--budget-msat" in partial.output
    stray = CliRunner().invoke(cli, ["apikey", "new", "--client", client, "--budget-msat", "5"])
    assert stray.exit_code == 2 and "--nwc" in stray.output
    bad = ["--nwc", "https://example.invalid", "--budget-msat", "5", "--wallet-file", str(tmp_path / "w")]
    refused = CliRunner().invoke(cli, ["apikey", "new", "--client", client, *bad])
    assert refused.exit_code == 2 and "--nwc" in refused.output and not (tmp_path / "w").exists()


def test_the_router_reads_its_bindings_from_the_environment(tmp_path: Path) -> None:
    path, digest = wallet_file(tmp_path), "1e" * 32
    env = {"ROUTER_PRIVATE_KEY": Keys.generate().nsec, "ROUTER_API_KEY_WALLETS": f"{digest}:900:{path}"}
    settings = RouterSettings.from_env(Env(env))
    assert settings.api_key_wallets[f"apikey:{digest}"].budget_msat == 900
    assert RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec})).api_key_wallets == {}
