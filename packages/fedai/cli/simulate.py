"""`fedai simulate …`: run the simulator (`python -m fedai_sim`, the `sim` extra) as a child process.

The CLI never imports the simulator or router code: every argument, `--help` included, goes to the simulator
unchanged, and its exit status comes back (docs/simulator.md)."""

from __future__ import annotations

import os
import sys

import click

from fedai.cli.extras import needs_extra
from fedai.cli.processes import python_module, run_foreground

SIMULATOR_MODULE = "fedai_sim"


@click.command(
    "simulate",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@needs_extra("sim")
def simulate_cmd(args: tuple[str, ...]) -> None:
    """Simulate a fleet behind the real scheduler: --scenario NAME | --file TOML (default: seed-failure),
    --mode router|seed|both (default: both, compared), --seed N, --out DIR, --json (`fedai simulate --help`)."""
    sys.exit(run_foreground(python_module(SIMULATOR_MODULE, *args), os.environ))
