"""What the devnet shows once it is up: one verified inference with its chain (`--demo`), and how to use it."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from fedai.cli.chain_view import print_chain
from fedai.cli.devnet_dir import DataDir
from fedai.cli.devnet_file import DevnetInfo
from fedai.cli.output import CROSS, as_fedai_error, err_console, short_npub
from fedai.protocol.keys import Keys
from fedai.sdk import Client, FedaiClientError

DEMO_MAX_TOKENS = 32
DEMO_TIMEOUT_S = 60.0


def run_demo(out: Console, info: DevnetInfo, client_keys: Keys, prompt: str, *, chat: bool) -> bool:
    """One signed inference through the router as the devnet's client; True if the chain verified.

    With `chat` (a real model) the prompt goes as a chat message, greedily decoded (so the answer is
    reproducible).
    """
    model = info.nodes[0].model
    out.print()
    out.print(f"[bold]demo[/bold]: one signed inference for {model!r} through {info.router.url}")
    out.print(f"  prompt: {escape(prompt)}", highlight=False)
    try:
        with Client(info.router.url, client_keys, router_pubkey=info.router.pubkey, timeout=DEMO_TIMEOUT_S) as client:
            if chat:
                messages = [{"role": "user", "content": prompt}]
                chain = client.infer(model, messages=messages, max_tokens=DEMO_MAX_TOKENS, temperature=0.0)
            else:
                chain = client.infer(model, prompt, max_tokens=DEMO_MAX_TOKENS)
    except FedaiClientError as err:
        step = getattr(err, "step", None)
        where = f" at {step}" if step else ""
        why = as_fedai_error(err)
        err_console.print(f"{CROSS} [red]chain NOT verified{where}[/red]: {why.code.value}: {why.message}")
        return False
    print_chain(out, chain)
    return True


def print_usage(out: Console, info: DevnetInfo, data_dir: DataDir) -> None:
    """The commands to try next, where the logs are, and how to stop it."""
    devnet_flag = "" if data_dir.is_default else f" --devnet {data_dir.root}"
    out.print()
    router = f"{info.router.url} ({short_npub(info.router.pubkey)})"
    out.print(f"[bold green]devnet is up[/bold green]: router {router}")
    out.print(f'  fedai infer{devnet_flag} "Why is the sky blue?"')
    out.print(f"  fedai status{devnet_flag}")
    out.print(f'  fedai quote{devnet_flag} "hello"')
    more = (",llama" if info.llama else "") + (",lnbits" if info.lnbits else "")
    out.print(f"  logs:   {data_dir.logs}/{{relay,router,node-N{more}}}.log")
    out.print(f"  file:   {data_dir.devnet_file}")
    if info.lnbits is not None:
        out.print(f"  wallets: {data_dir.wallets}/{{client,router,node-N}}.uri")
        out.print("  payment is required: see docs/payments.md#a-paid-devnet")
    out.print("Ctrl-C stops every process the devnet started.")
