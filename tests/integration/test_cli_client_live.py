"""`fedai quote` and `fedai infer` against a real router and a scripted node, at 80 columns: lines fit, the
quote id is printed whole on one line, event ids are whole in --json; a quote for PROMPT prices what
`infer PROMPT` sends and pays for it; a streamed answer is printed once; Ctrl-C during a stream says the
request was cancelled, exits 130, and the router stops the node and meters what it produced."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from fedai.cli.main import cli
from fedai.protocol.keys import Keys
from fedai.protocol.messages import ChatMessage, InferenceRequest, estimate_tokens, prompt_material
from tests.integration.conftest import SpawnNode
from tests.support.router import RunningRouter
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

PROMPT = "What is 2+2? Answer in one word, please."
MODEL = "fake-model"
HEX64 = re.compile("[0-9a-f]{64}")


async def fedai(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """One `fedai` command in-process at 80 columns (in a thread: the router runs on this loop)."""
    result = await asyncio.to_thread(CliRunner(env={"COLUMNS": "80"}).invoke, cli, list(args), stdin)
    return result.exit_code, result.stdout, result.stderr


def assert_fits(out: str) -> None:
    wide = [line for line in out.splitlines() if len(line) > 80]
    assert not wide, f"lines over 80 columns: {wide}"


def client_args(router: RunningRouter, key: Keys) -> list[str]:
    return ["--router", router.url, "--router-pubkey", router.pubkey, "--key", key.nsec, "-m", MODEL]


async def test_quote_and_infer_fit_80_columns_and_keep_ids_whole_in_json(
    router: RunningRouter, spawn_node: SpawnNode
) -> None:
    await spawn_node()
    args = client_args(router, Keys.generate())
    code, out, err = await fedai("quote", *args, PROMPT)
    assert code == 0, err
    assert_fits(out)
    quote_id = re.search(r"^  quote id +([0-9a-f]{32})$", out, re.M)
    assert quote_id is not None  # whole, on one line, ready to paste
    assert f"fedai infer --quote {quote_id[1]}" in out
    assert not HEX64.search(out)  # the event id is shortened for people...
    code, out, _ = await fedai("quote", *args, PROMPT, "--json")
    assert code == 0 and HEX64.fullmatch(json.loads(out)["event"])  # ...and whole for scripts

    code, out, err = await fedai("infer", *args, PROMPT)
    assert code == 0, err
    assert_fits(out)
    assert "client → router → node" in out and "chain verified" in out
    code, out, _ = await fedai("infer", *args, PROMPT, "--json")
    document = json.loads(out)
    assert code == 0 and document["offloaded"] is False and document["provider"] is None
    assert all(HEX64.fullmatch(i) for i in document["events"].values())


async def test_a_quote_for_a_prompt_prices_what_infer_sends_and_pays_for_it(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    await spawn_node()
    args = client_args(router, Keys.generate())
    code, out, err = await fedai("quote", *args, "--max-tokens", "32", PROMPT, "--json")
    assert code == 0, err
    quote = json.loads(out)
    sent = InferenceRequest(model=MODEL, messages=[ChatMessage(role="user", content=PROMPT)], max_tokens=32)
    assert quote["input_tokens"] == estimate_tokens(len(prompt_material(sent)))  # what the router counts for infer
    code, out, err = await fedai("infer", *args, "--max-tokens", "32", "--quote", quote["quote_id"], PROMPT, "--json")
    assert code == 0, err
    used = await db_pool.fetchval("SELECT used_at FROM quotes WHERE id = $1", quote["quote_id"])
    assert used is not None  # the answer was paid with the quote

    # the raw text alone (--prompt) is fewer bytes than the chat message: such a quote does not cover it
    code, out, _ = await fedai("quote", *args, "--max-tokens", "32", "--prompt", PROMPT, "--json")
    raw = json.loads(out)
    assert code == 0 and raw["input_tokens"] < quote["input_tokens"]
    code, out, _ = await fedai("infer", *args, "--max-tokens", "32", "--quote", raw["quote_id"], PROMPT, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "quote_invalid"


async def test_infer_input_tokens_quotes_that_many_and_sends_the_request_with_the_quote(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    """For a model whose tokenizer counts more than the router's estimate: the quote is for --input-tokens (at
    least the estimate), and the request is sent with it, streamed or not."""
    await spawn_node()
    key = Keys.generate()
    args = [*client_args(router, key), "--max-tokens", "32"]
    for streamed, tokens in (([], 500), (["--stream"], 501)):
        code, out, err = await fedai("infer", *args, *streamed, "--input-tokens", str(tokens), PROMPT)
        assert code == 0 and "chain verified" in out, err
        row = await db_pool.fetchrow(
            "SELECT used_at FROM quotes WHERE client = $1 AND input_tokens = $2", key.pubkey, tokens
        )
        assert row is not None and row["used_at"] is not None  # quoted for that many, and spent by the answer


async def test_messages_from_a_file_and_from_stdin(
    router: RunningRouter, spawn_node: SpawnNode, tmp_path: Path
) -> None:
    await spawn_node()
    args = client_args(router, Keys.generate())
    conversation = json.dumps([{"role": "user", "content": PROMPT}])
    path = str(tmp_path / "messages.json")
    (tmp_path / "messages.json").write_text(conversation)
    code, out, err = await fedai("quote", *args, "--messages", path, "--json")
    assert code == 0, err
    from_file = json.loads(out)["input_tokens"]
    code, out, err = await fedai("quote", *args, "--messages", "-", "--json", stdin=conversation)
    assert code == 0, err
    code, same, _ = await fedai("quote", *args, PROMPT, "--json")
    assert from_file == json.loads(out)["input_tokens"] == json.loads(same)["input_tokens"]
    code, out, err = await fedai("infer", *args, "--messages", path, "--json")
    assert code == 0 and json.loads(out)["verified"] is True, err


async def test_a_streamed_answer_is_printed_once(router: RunningRouter, spawn_node: SpawnNode) -> None:
    node = await spawn_node()
    node.word_delay_s = 0.01
    code, out, err = await fedai("infer", *client_args(router, Keys.generate()), "--stream", PROMPT)
    assert code == 0, err
    assert out.count("alpha bravo charlie delta echo foxtrot") == 1
    assert "chain verified" in out
    assert_fits(out)


async def test_ctrl_c_during_a_stream_says_the_request_was_cancelled_and_exits_130(
    router: RunningRouter, spawn_node: SpawnNode, db_pool: asyncpg.Pool
) -> None:
    node = await spawn_node(behaviour="forever")
    command = [sys.executable, "-m", "fedai.cli.main", "infer", *client_args(router, Keys.generate()), "--stream", "hi"]
    env = {**os.environ, "COLUMNS": "80"}
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.read(5), timeout=30)  # the answer is coming
    assert first.strip()
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 130
    assert err.decode().strip().splitlines()[-1] == (
        "cancelled: the router stops the node and meters what it produced so far"
    )
    assert "Aborted!" not in err.decode() and "Traceback" not in err.decode()
    await eventually(lambda: node.cancelled != set(), within=10, what="the router sends infer.cancel")

    async def metered() -> bool:
        return bool(await db_pool.fetchval("SELECT count(*) FROM metering_records"))

    for _ in range(100):  # what the node produced before the cancel is metered
        if await metered():
            break
        await asyncio.sleep(0.1)
    assert await metered()
