"""fedai.keyfile, the one key loader of the SDK and the CLI: each way a key argument can be wrong is its own
one-line error (missing file, directory, unreadable, not a key), and the SDK's clients take a key file's path."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.keyfile import KeyInputError, load_secret, parse_any, secret_keys, write_secret_file
from fedai.protocol.keys import Keys
from fedai.sdk import AsyncClient, Client
from fedai.sdk.openai import NostrAuth

KEYS = Keys.generate()


def refusal(value: str, *, public: bool = False) -> str:
    with pytest.raises(KeyInputError) as info:
        parse_any(value, public=public) if public else load_secret(value)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", ["/nonexistent/file", "~/no-such-dir/client.key", "./client.key", "client.key"])
def test_a_missing_file_is_said_to_be_missing(value: str) -> None:
    message = refusal(value)
    assert message.endswith(": file not found") and "not a secret key" not in message
    assert refusal(value, public=True).endswith(": file not found")


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    assert refusal(str(tmp_path)) == f"{tmp_path}: is a directory, not a key file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_file_says_why(tmp_path: Path) -> None:
    path = tmp_path / "client.key"
    write_secret_file(path, KEYS)
    path.chmod(0)
    assert refusal(str(path)) == f"{path}: cannot read key file (Permission denied)"


def test_a_file_without_a_key_names_the_file_not_its_content(tmp_path: Path) -> None:
    path = tmp_path / "client.key"
    path.write_text("not a key at all\n")
    message = refusal(str(path))
    assert message == f"file {path} is not a secret key (expected 64 hex characters or an nsec)"
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00")
    assert refusal(str(binary)) == f"{binary}: not a text key file"


def test_a_bad_key_argument_is_not_taken_for_a_path() -> None:
    bad = KEYS.secret_hex[:-1] + "x"
    message = refusal(bad)
    assert message == "the argument is not a secret key (expected 64 hex characters or an nsec)"
    assert bad not in message


def test_the_cli_says_file_not_found() -> None:
    result = CliRunner().invoke(cli, ["keys", "show", "/nonexistent/file"])
    assert result.exit_code == 2
    assert "/nonexistent/file: file not found" in result.stderr and "not a key" not in result.stderr


def test_the_sdk_clients_take_a_key_file_or_any_secret_form(tmp_path: Path) -> None:
    path = tmp_path / "client.key"
    write_secret_file(path, KEYS)
    for form in (str(path), KEYS.nsec, KEYS.secret_hex, KEYS):
        assert secret_keys(form).pubkey == KEYS.pubkey
        with Client("http://127.0.0.1:9", form, transport=httpx.MockTransport(lambda _: httpx.Response(500))) as c:
            assert c.keys.pubkey == KEYS.pubkey
    assert AsyncClient("http://127.0.0.1:9", str(path)).keys.pubkey == KEYS.pubkey
    assert NostrAuth(str(path)).keys.pubkey == KEYS.pubkey
    with pytest.raises(KeyInputError, match="file not found"):
        Client("http://127.0.0.1:9", str(tmp_path / "missing.key"))
    assert secret_keys(None).pubkey != KEYS.pubkey  # no key: a new one
