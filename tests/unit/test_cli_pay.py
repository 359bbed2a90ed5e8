"""The pieces of `fedai pay` and `fedai infer --pay` that need no network: who gets what in 80 columns, the
confirmation (a yes at a terminal pays, a no or no terminal does not), the proof printed and read back, and the
one-line errors for a missing extra, a missing or bad wallet spec, a bad proof and nonsense combinations (also
--input-tokens with a quote of its own, or below the prompt's estimate)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedai.cli import extras, pay
from fedai.cli.main import cli
from fedai.cli.prompt_input import PromptInput
from fedai.protocol.envelope import Opened
from fedai.protocol.messages import (
    ChatMessage,
    InferenceRequest,
    PaymentRequest,
    decode_payload,
    estimate_tokens,
    prompt_material,
)
from tests.support.payments import NOW, Paid


def opened(paid: Paid) -> Opened[PaymentRequest]:
    return Opened(paid.request, decode_payload(paid.request.content, PaymentRequest))


def test_who_gets_what_fits_80_columns_and_names_each_share() -> None:
    paid = Paid(node_msat=123_456_789, fee_msat=1_000)
    lines = pay.payee_lines(opened(paid), 10_000, now=NOW)
    assert all(len(line) <= 80 for line in lines), lines
    assert any(line.startswith("  node share ") and "123456789 msat" in line for line in lines)
    assert any(line.startswith("  router fee ") and "1000 msat" in line for line in lines)
    assert "  total       123457789 msat (+ routing fees up to 20000 msat)" in lines
    assert lines[-1] == "  expires     in 600 s"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_yes_at_a_terminal_pays_a_no_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    request = opened(Paid())
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    pay.confirm_total(request, 10_000, yes=False)  # returns: go ahead
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    with pytest.raises(SystemExit) as declined:
        pay.confirm_total(request, 10_000, yes=False)
    assert declined.value.code == 1


def test_without_a_terminal_only_yes_pays(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    request = opened(Paid())
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # typed ahead, but nobody saw the total
    with pytest.raises(SystemExit) as refused:
        pay.confirm_total(request, 10_000, yes=False)
    assert refused.value.code == 2
    assert "error: not paying 8000 msat without a confirmation: pass --yes" in capsys.readouterr().err
    pay.confirm_total(request, 10_000, yes=True)


def test_the_printed_proof_reads_back_inline_from_a_file_or_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = Paid()
    text = pay.proof_text(paid.proof())
    assert "\n" not in text and json.loads(text)["payment_request"] == paid.request.id
    assert pay.read_proof(text) == paid.proof()
    (tmp_path / "proof.json").write_text(text + "\n")
    assert pay.read_proof(str(tmp_path / "proof.json")) == paid.proof()
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert pay.read_proof("-") == paid.proof()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--proof", '{"payment_request": "xyz"}'], "error: --proof: invalid PaymentProof"),
        (["--proof", "no-such-file"], "error: --proof: give the JSON line `fedai pay` printed"),
        (["--pay", "--wallet", "lnbits+http://127.0.0.1:1?key=k"], "error: --pay asks for its own quote"),
        (["--pay", "--stream"], "error: --pay serves non-streamed answers for now"),
        (["--pay"], "error: paying needs your wallet: pass --wallet"),
        (["--pay", "--wallet", "ftp://wallet"], "error: --wallet"),
        (["--pay", "--wallet", "lnbits+http://127.0.0.1:1?key=k", "--network", "mars"], "error: --network"),
        (["--input-tokens", "50"], "error: --input-tokens asks for its own quote"),
        (["--input-tokens", "1"], "error: --input-tokens 1 is below the router's estimate of this prompt (8)"),
    ],
)
def test_infer_refuses_unusable_payment_options_in_one_line(argv: list[str], message: str) -> None:
    extra = ["--quote", "q1"] if "own quote" in message else []
    result = CliRunner().invoke(cli, ["infer", "--router", "http://127.0.0.1:9", *argv, *extra, "hi"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("argv", "command", "extra"),
    [
        (["pay", "q1", "--wallet", "x"], "fedai pay", "pay"),
        (["infer", "--pay", "--wallet", "x", "hi"], "fedai infer --pay", "pay"),
        (["earnings", "--role", "node"], "fedai earnings", "node"),
    ],
)
def test_paying_and_earnings_name_their_extra_on_a_light_install(
    argv: list[str], command: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extras, "missing_modules", lambda name: ["bolt11"] if name == extra else [])
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    assert (
        result.stderr == f"error: `{command}` needs the {extra} extra (missing: bolt11): pip install 'fedai[{extra}]'\n"
    )


def test_payment_status_needs_the_paying_clients_key() -> None:
    result = CliRunner().invoke(cli, ["payment", "0" * 64, "--router", "http://127.0.0.1:9"], env={"FEDAI_KEY": ""})
    assert result.exit_code == 2 and "only to the client that paid it: pass its --key" in result.stderr


@pytest.mark.parametrize(
    "sent",
    [
        PromptInput(prompt="What is 2+2?"),
        PromptInput(messages=[{"role": "user", "content": "héllo, wörld ✓"}]),
        PromptInput(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]),
    ],
)
def test_the_input_tokens_floor_is_what_the_router_counts_for_the_request(sent: PromptInput) -> None:
    messages = None if sent.messages is None else [ChatMessage(**m) for m in sent.messages]
    request = InferenceRequest(model="m", prompt=sent.prompt, messages=messages, max_tokens=16)
    assert sent.estimated_tokens() == estimate_tokens(len(prompt_material(request))) > 0
