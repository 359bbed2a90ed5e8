"""fedai.payments.config: wallet specs as URIs or files, errors that name the variable and never the secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedai.payments.config import BACKENDS, WalletConfigError, open_wallet, parse_spec
from fedai.service.config import ConfigError

NWC_SECRET = "71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c"
NWC = f"nostr+walletconnect://b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4?relay=wss%3A%2F%2Frelay.one&relay=wss%3A%2F%2Frelay.two&secret={NWC_SECRET}"


def test_a_uri_parses_into_scheme_host_port_and_params(tmp_path: Path) -> None:
    spec = parse_spec("LND+HTTPS://node.example:8080/base/?macaroon=/m/admin.macaroon&cert=/c/tls.cert", "NODE_WALLET")
    assert spec.scheme == "lnd+https" and spec.transport == "https"
    assert spec.host == "node.example" and spec.port == 8080
    assert spec.base_url == "https://node.example:8080/base"
    assert spec.param("macaroon") == "/m/admin.macaroon" and spec.param("absent", "d") == "d"
    assert parse_spec("clnrest+https://[::1]:3010", "X").base_url == "https://[::1]:3010"


def test_repeated_params_and_the_nwc_uri_stay_secret() -> None:
    spec = parse_spec(NWC, "--wallet")
    assert spec.params["relay"] == ("wss://relay.one", "wss://relay.two")
    with pytest.raises(WalletConfigError, match="'relay' is given 2 times"):
        spec.param("relay")
    assert spec.uri.reveal() == NWC
    assert NWC_SECRET not in repr(spec) and NWC_SECRET not in str(spec)
    assert spec.secret("secret", "secret_file", "the NWC secret").reveal() == NWC_SECRET


def test_a_file_holding_a_uri_or_a_json_object(tmp_path: Path) -> None:
    uri_file = tmp_path / "wallet.uri"
    uri_file.write_text(NWC + "\n")
    assert parse_spec(str(uri_file), "ROUTER_WALLET").scheme == "nostr+walletconnect"
    json_file = tmp_path / "wallet.json"
    json_file.write_text(json.dumps({"uri": "clnrest+https://127.0.0.1:3010", "rune": "r-secret", "timeout": 5}))
    spec = parse_spec(str(json_file), "ROUTER_WALLET")
    assert spec.secret("rune", "rune_file", "the rune").reveal() == "r-secret"
    assert spec.seconds("timeout", 10.0) == 5.0
    assert "r-secret" not in repr(spec)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "neither a wallet URI nor a JSON object"),
        ('["uri"]', 'JSON object with a "uri" string'),
        ('{"uri": 5}', 'JSON object with a "uri" string'),
        ('{"uri": "lnd+https://h:1", "macaroon": {"a": 1}}', "'macaroon' must be a string"),
        ('{"uri": "lnd+https://h:1", "flag": true}', "'flag' must be a string"),
    ],
)
def test_bad_spec_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "wallet.json"
    path.write_text(content)
    with pytest.raises(WalletConfigError, match=message) as caught:
        parse_spec(str(path), "NODE_WALLET")
    assert str(caught.value).startswith("NODE_WALLET: ")


def test_an_oversized_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    path.write_text("x" * 70_000)
    with pytest.raises(WalletConfigError, match="larger than"):
        parse_spec(str(path), "NODE_WALLET")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "a wallet URI or file is required"),
        ("   ", "a wallet URI or file is required"),
        ("/no/such/file", "not a wallet URI"),
        ("lnd+https://host:99999", "does not parse"),
        ("://host", "no SCHEME"),
    ],
)
def test_bad_specs_name_the_variable(spec: str, message: str) -> None:
    with pytest.raises(WalletConfigError, match=message) as caught:
        parse_spec(spec, "ROUTER_WALLET")
    assert str(caught.value).startswith("ROUTER_WALLET: ")
    assert isinstance(caught.value, ConfigError)


def test_an_unknown_scheme_names_the_known_ones_and_not_the_secret() -> None:
    with pytest.raises(WalletConfigError) as caught:
        open_wallet(NWC.replace("nostr+walletconnect", "nostr+wc"), "--wallet")
    text = str(caught.value)
    assert text.startswith("--wallet: unknown wallet scheme 'nostr+wc'")
    assert NWC_SECRET not in text and "relay.one" not in text
    for scheme in BACKENDS:
        assert scheme in text


def test_params_read_by_backends(tmp_path: Path) -> None:
    rune = tmp_path / "rune"
    rune.write_text("file-rune\n")
    spec = parse_spec(f"clnrest+https://h:3010?rune_file={rune}&timeout=abc&empty=", "NODE_WALLET")
    assert spec.secret("rune", "rune_file", "the rune").reveal() == "file-rune"
    with pytest.raises(WalletConfigError, match="timeout must be a number"):
        spec.seconds("timeout", 10.0)
    with pytest.raises(WalletConfigError, match="'empty' is required"):
        spec.required("empty", "why")
    with pytest.raises(WalletConfigError, match="'cert' is required \\(the TLS cert\\)"):
        spec.path_param("cert", "the TLS cert")
    missing = parse_spec("clnrest+https://h:3010?rune_file=/no/such/rune&timeout=9000", "NODE_WALLET")
    with pytest.raises(WalletConfigError, match="rune_file: /no/such/rune is not a readable file"):
        missing.secret("rune", "rune_file", "the rune")
    with pytest.raises(WalletConfigError, match="between 0 and 600"):
        missing.seconds("timeout", 10.0)
    rune.write_text("")
    with pytest.raises(WalletConfigError, match="is empty"):
        parse_spec(f"clnrest+https://h:3010?rune_file={rune}", "NODE_WALLET").secret("rune", "rune_file", "r")
