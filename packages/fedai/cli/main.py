"""Entry point of the `fedai` console script: one click group, one module per command family."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from fedai.cli.admin import admin_token_group
from fedai.cli.admin_api import admin_group
from fedai.cli.apikey import apikey_group
from fedai.cli.client import status_cmd
from fedai.cli.devnet import devnet_cmd
from fedai.cli.earnings import earnings_cmd
from fedai.cli.infer import infer_cmd
from fedai.cli.keys import keys_group
from fedai.cli.llama import llama_group
from fedai.cli.lnbits import lnbits_group
from fedai.cli.manifest import bench_cmd, manifest_cmd, profile_cmd, recommend_cmd
from fedai.cli.pay import pay_cmd, payment_cmd
from fedai.cli.peers import peers_cmd
from fedai.cli.quote import quote_cmd
from fedai.cli.route import route_group
from fedai.cli.services import migrate_cmd, node_cmd, relay_cmd, router_cmd
from fedai.cli.simulate import simulate_cmd


def _version() -> str:
    try:
        return version("fedai")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(_version(), prog_name="fedai")
def cli() -> None:
    """fedai: Nostr-federated AI inference. Every hop is a signed Nostr event.

    Start a local network with `fedai devnet --demo`, then `fedai infer "hello"`.
    """


for command in (
    keys_group,
    relay_cmd,
    router_cmd,
    node_cmd,
    migrate_cmd,
    quote_cmd,
    infer_cmd,
    pay_cmd,
    payment_cmd,
    earnings_cmd,
    status_cmd,
    devnet_cmd,
    llama_group,
    lnbits_group,
    route_group,
    apikey_group,
    admin_token_group,
    admin_group,
    *(profile_cmd, bench_cmd, recommend_cmd, manifest_cmd),
    simulate_cmd,
    peers_cmd,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
