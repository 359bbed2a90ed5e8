"""`fedai keys gen|show`: output shapes, key files with mode 0600, and no secret unless asked for."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.keys import Keys

# NIP-19 spec example pair.
NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
SECRET_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
NPUB = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
PUB_HEX = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> dict[str, object]:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert isinstance(document, dict)
    return document


def test_gen_json_shows_public_key_only() -> None:
    document = run_json("keys", "gen")
    assert set(document) == {"pubkey", "npub"}
    pubkey = str(document["pubkey"])
    assert len(pubkey) == 64 and str(document["npub"]).startswith("npub1")


def test_gen_human_output_hides_the_secret() -> None:
    code, out, _ = run("keys", "gen")
    assert code == 0
    assert "npub1" in out and "nsec1" not in out
    assert "--show-secret" in out


def test_gen_show_secret_prints_a_matching_secret() -> None:
    document = run_json("keys", "gen", "--show-secret")
    keys = Keys.parse(str(document["nsec"]))
    assert keys.pubkey == document["pubkey"]
    assert keys.secret_hex == document["secret_hex"]


def test_gen_out_writes_hex_secret_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    document = run_json("keys", "gen", "--out", str(path))
    assert document["file"] == str(path)
    assert "nsec" not in document and "secret_hex" not in document
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keys.parse(path.read_text()).pubkey == document["pubkey"]


def test_gen_out_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    path.write_text("keep me")
    code, _, err = run("keys", "gen", "--out", str(path))
    assert code == 1
    assert "already exists" in err
    assert path.read_text() == "keep me"
    document = run_json("keys", "gen", "--out", str(path), "--force")
    assert Keys.parse(path.read_text()).pubkey == document["pubkey"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("secret", [NSEC, SECRET_HEX, SECRET_HEX.upper()])
def test_show_secret_input_gives_its_public_key(secret: str) -> None:
    document = run_json("keys", "show", secret)
    assert document == {"pubkey": PUB_HEX, "npub": NPUB, "type": "secret"}


def test_show_npub_and_hex_pubkey() -> None:
    assert run_json("keys", "show", NPUB) == {"pubkey": PUB_HEX, "npub": NPUB, "type": "public"}
    assert run_json("keys", "show", "--public", PUB_HEX) == {"pubkey": PUB_HEX, "npub": NPUB, "type": "public"}


def test_show_reads_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text(SECRET_HEX + "\n")
    path.chmod(0o600)
    document = run_json("keys", "show", str(path))
    assert document == {"pubkey": PUB_HEX, "npub": NPUB, "type": "secret", "file": str(path)}


def test_show_secret_flag_prints_the_secret() -> None:
    document = run_json("keys", "show", "--secret", SECRET_HEX)
    assert document["nsec"] == NSEC and document["secret_hex"] == SECRET_HEX


def test_show_secret_flag_on_a_public_key_fails() -> None:
    code, out, err = run("keys", "show", "--secret", NPUB)
    assert code == 2
    assert "public key" in err and out == ""


def test_show_human_output_has_no_secret() -> None:
    code, out, _ = run("keys", "show", NSEC)
    assert code == 0
    assert NPUB in out and PUB_HEX in out
    assert NSEC not in out and SECRET_HEX not in out


@pytest.mark.parametrize(
    "bad",
    [
        SECRET_HEX[:-1] + "x",  # not hex
        SECRET_HEX[:-2],  # too short
        NSEC[:-1] + ("q" if NSEC[-1] != "q" else "p"),  # bad checksum
        "0" * 64,  # out of range for secp256k1
        "hello",
    ],
)
def test_bad_key_is_refused_without_echoing_it(bad: str) -> None:
    code, out, err = run("keys", "show", bad)
    assert code == 2
    assert "is not a key" in err
    assert bad not in err and bad not in out
    assert SECRET_HEX[:16] not in err


def test_bad_key_file_names_the_file_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "broken.key"
    path.write_text(SECRET_HEX[:40])
    code, _, err = run("keys", "show", str(path))
    assert code == 2
    assert str(path) in err and SECRET_HEX[:40] not in err


def test_hex_pubkey_flag_refuses_an_invalid_point() -> None:
    code, _, err = run("keys", "show", "--public", "f" * 64)
    assert code == 2
    assert "is not a key" in err


def test_apikey_new_maps_a_key_to_a_client() -> None:
    import hashlib

    from fedai_router.config import parse_api_keys

    client = Keys.generate()
    result = CliRunner().invoke(cli, ["apikey", "new", "--client", client.npub, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["api_key"].startswith("fk-") and doc["client"] == client.pubkey
    mapping = parse_api_keys(doc["router_api_keys_entry"])
    assert mapping == {hashlib.sha256(doc["api_key"].encode()).hexdigest(): client.pubkey}
    bad = CliRunner().invoke(cli, ["apikey", "new", "--client", "npub1nope"])
    assert bad.exit_code == 2 and "--client" in bad.output


@pytest.mark.parametrize("columns", [80, 40])
def test_apikey_new_prints_each_value_on_one_line_at_80_columns_and_piped(
    columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from fedai.cli.output import console
    from fedai_router.config import parse_api_keys

    monkeypatch.setattr(console, "width", columns)  # the terminal's width; CliRunner's output is a pipe
    client = Keys.generate()
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, ["apikey", "new", "--client", client.npub])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    key = next(line for line in lines if line.startswith("fk-"))
    entry = lines[-1]  # the last line, whole: what `| tail -1` gives
    assert entry.startswith(client.npub + ":") and len(entry) > 80
    assert parse_api_keys(entry) == {hashlib.sha256(key.encode()).hexdigest(): client.pubkey}
