"""`fedai devnet`: embedded Postgres, an embedded relay, one router and N nodes on loopback.

The nodes serve a real model by default (`--runner llama`): one shared `llama-server` (built once and
cached, see fedai.llamacpp) on SmolLM2-135M-Instruct or the tiny test model; `--runner mock` (or any other
NODE_RUNNER) runs them without it. Every service is its own process with its own log under DATA_DIR/logs/.
The devnet writes DATA_DIR/devnet.json once everything is ready, optionally runs one verified inference
(`--demo`), and stops every process it started, and the embedded Postgres, when it exits for any reason.

This module is the command and its exit status; `devnet_plan` decides ports, prices and slots, `devnet_dir`
holds the data dir's layout and lock, `devnet_run` starts, watches and stops the pieces, `devnet_demo` runs
the demo inference and prints how to use the devnet, `devnet_file` reads and writes devnet.json.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from fedai.cli.devnet_demo import print_usage, run_demo
from fedai.cli.devnet_file import DEFAULT_DATA_DIR
from fedai.cli.devnet_paid_demo import run_paid_demo
from fedai.cli.devnet_plan import DEMO_PROMPT, LLAMA, LLAMA_MODELS, LLAMA_PROMPT, DevnetOptions
from fedai.cli.devnet_run import Devnet, DevnetError
from fedai.cli.extras import needs_extra
from fedai.cli.keyfile import KeyInputError
from fedai.cli.output import console
from fedai.cli.processes import Interrupted, ProcessFailed, signals_raise, tail_file
from fedai.service.filelock import LockHeld


def report_failure(name: str, reason: str, log_path: Path | None) -> None:
    """A failure line naming the process, then the tail of its log (plain text, never wrapped)."""
    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) cannot be written to
        click.echo(click.style(f"✗ {name} {reason}", fg="red"), err=True)
        if log_path is not None:
            click.echo(f"--- last lines of {log_path} ---", err=True)
            click.echo(tail_file(log_path), err=True)
            click.echo("---", err=True)


def say(out: Console, text: str) -> None:
    """Print a status line if the terminal is still there: after SIGHUP (the terminal closed) writing fails, and
    that must not keep the devnet from stopping what it started."""
    with contextlib.suppress(OSError):
        out.print(text)


def run_devnet(options: DevnetOptions, out: Console = console) -> int:
    """Run the devnet; the exit status follows docs/decisions.md#devnet (see `devnet_cmd`)."""
    devnet = Devnet(options, out)
    data_dir = devnet.data_dir
    data_dir.root.mkdir(parents=True, exist_ok=True)
    atexit.register(devnet.stop)
    try:
        with data_dir.lock(), signals_raise():
            try:
                info = devnet.start()
                if options.demo:
                    demo = run_paid_demo if options.pay else run_demo
                    verified = demo(out, info, data_dir.key("client"), options.demo_prompt, chat=options.uses_llama)
                else:
                    verified = True
                if options.once:
                    return 0 if verified else 1
                print_usage(out, info, data_dir)
                devnet.supervise()
            finally:
                if devnet.ready or devnet.supervisor.children:
                    say(out, "[dim]stopping the devnet…[/dim]")
                devnet.stop()
    except LockHeld as exc:
        report_failure("devnet", f"is already running in {data_dir.root} (pid {exc.owner})", None)
        return 1
    except Interrupted as exc:
        say(out, f"{signal.Signals(exc.signum).name}: every process the devnet started is stopped")
        return 0 if devnet.ready else 130
    except ProcessFailed as exc:
        report_failure(exc.child.name, exc.reason, exc.child.log_path)
        return 1
    except DevnetError as exc:
        report_failure(exc.name, exc.reason, exc.log_path)
        return 1
    except KeyInputError as exc:
        report_failure("devnet", f"cannot use its keys: {exc}", None)
        return 1
    except Exception as exc:  # noqa: BLE001 - anything else (Postgres, migrations, I/O): one line, everything stopped
        log_path = data_dir.pgdata / "log" if not devnet.ready else None
        report_failure("devnet", f"failed: {type(exc).__name__}: {exc}", log_path)
        return 1
    finally:
        atexit.unregister(devnet.stop)
    return 0


@click.command("devnet")
@click.option("--demo", is_flag=True, help="Send one signed inference and print the verified chain.")
@click.option("--once", is_flag=True, help="Exit after start-up (and the demo): 0 only if everything verified.")
@click.option("--nodes", type=click.IntRange(1, 32), default=2, show_default=True, help="Number of nodes.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Keys, logs, Postgres data and devnet.json live here.",
)
@click.option(
    "--runner",
    default=LLAMA,
    show_default=True,
    envvar="FEDAI_DEVNET_RUNNER",
    help="`llama`: the nodes share one llama-server (built and cached on first use); `mock`: no model; "
    "anything else is passed to the nodes as NODE_RUNNER.",
)
@click.option(
    "--model",
    type=click.Choice(LLAMA_MODELS),
    default="smollm2",
    show_default=True,
    envvar="FEDAI_DEVNET_MODEL",
    help="The llama runner's model: SmolLM2-135M-Instruct, or `tiny` (random weights; tests).",
)
@click.option("--base-port", type=click.IntRange(1, 65000), help="Relay P, router P+1, nodes P+2… (default: free).")
@click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for each service to become ready.",
)
@click.option(
    "--pay",
    is_flag=True,
    help="Payments on: a local LNbits (FakeWallet; installed and cached on first use) with a funded wallet for "
    "the client, the router and each node; the router and nodes require payment; --demo pays its inference.",
)
@click.option("--prompt", help=f"The demo's prompt (default: {LLAMA_PROMPT!r} with llama, else {DEMO_PROMPT!r}).")
@needs_extra("devnet")
def devnet_cmd(**kwargs: Any) -> None:
    """Run a local network: embedded Postgres, relay, one router and N nodes, each its own process.

    By default the nodes serve SmolLM2-135M-Instruct through one shared llama-server; the first run builds
    llama-server (a few minutes) and downloads the model (93 MB) into ~/.cache/fedai ($FEDAI_CACHE_DIR).
    `--runner mock` starts mock nodes instead. FEDAI_DEVNET_RUNNER and FEDAI_DEVNET_MODEL set the defaults.
    `--pay` also runs LNbits with a funded wallet per party and requires payment (docs/payments.md#a-paid-devnet).

    Writes DATA_DIR/devnet.json for `fedai infer`/`fedai status`. Runs until Ctrl-C or SIGTERM (exit 0),
    or exits after start-up with --once (0 only if the demo's chain verified). Exits 1, naming the
    process and showing its log tail, if any service fails to start or dies. Other ROUTER_*/NODE_*
    variables in the environment (e.g. NODE_MOCK_DELAY_MS) apply to the devnet's services.
    """
    raise SystemExit(run_devnet(DevnetOptions(**kwargs)))
