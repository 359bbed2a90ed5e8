"""`fedai profile|bench|recommend|manifest`: describe this machine in coarse bands, benchmark it, say what
it can run, and sign a node manifest (optionally sending it to a router). Tables for people, `--json` for
scripts. See docs/manifests.md."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
import httpx
import msgspec
from rich.table import Table

from fedai.cli.keyfile import KeyInputError, load_secret
from fedai.cli.output import console, fail, fail_fedai, mark, print_json, short_id, short_npub
from fedai.profile import benchmark, hardware
from fedai.profile.manifest import build_manifest_event, make_manifest
from fedai.profile.recommend import Recommendation, recommend
from fedai.protocol.envelope import open_envelope
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys, parse_pubkey
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Ack, BenchScores, HardwareProfile, NodeManifest

MANIFEST_FILE_MODE = 0o644
ROUTER_TIMEOUT_S = 30.0

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="FEDAI_DATA_DIR",
    default=Path(".fedai"),
    show_default=True,
    help="Where the node keeps its data (free disk is measured there).",
)
quick_option = click.option("--quick", is_flag=True, help="A much shorter benchmark (tests, smoke checks).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _fields(struct: msgspec.Struct) -> dict[str, Any]:
    """Every field, defaults included (payload encoding omits them)."""
    return msgspec.structs.asdict(struct)


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, "—" if value is None else str(value))
    return table


def _print_recommendation(rec: Recommendation) -> None:
    for title, verdicts in (("node profiles", rec.profiles), ("roles", rec.roles)):
        table = Table(title=title, title_justify="left")
        for column in ("", "name", "what", "why"):
            table.add_column(column)
        for v in verdicts:
            table.add_row(mark(v.eligible), v.name, v.description, "\n".join(v.reasons))
        console.print(table)


@click.command("profile")
@data_dir_option
@json_option
def profile_cmd(data_dir: Path, as_json: bool) -> None:
    """This machine in coarse bands (no serial numbers, hostnames or exact sizes)."""
    profile = hardware.profile(data_dir)
    if as_json:
        print_json(_fields(profile))
        return
    console.print(_table("hardware profile", _fields(profile)))


@click.command("bench")
@quick_option
@json_option
def bench_cmd(quick: bool, as_json: bool) -> None:
    """A short deterministic CPU and memory benchmark (about a second)."""
    scores = benchmark.run(quick=quick)
    if as_json:
        print_json(_fields(scores))
        return
    console.print(_table("benchmark" + (" (quick)" if quick else ""), _fields(scores)))


@click.command("recommend")
@data_dir_option
@quick_option
@json_option
def recommend_cmd(data_dir: Path, quick: bool, as_json: bool) -> None:
    """Node profiles this machine can run and the roles it qualifies for, with reasons."""
    profile = hardware.profile(data_dir)
    scores = benchmark.run(quick=quick)
    rec = recommend(profile, scores)
    if as_json:
        print_json({"profile": _fields(profile), "bench": _fields(scores), **rec.to_dict()})
        return
    _print_recommendation(rec)
    console.print("recommended: " + (", ".join(rec.recommended) or "none"))


def write_manifest_file(path: Path, event: Event) -> None:
    """Write the signed event as JSON with mode 0644 (a manifest is public)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, MANIFEST_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), MANIFEST_FILE_MODE)
        handle.write(event.to_json() + b"\n")


def _router_pubkey(http: httpx.Client, url: str, pinned: str | None) -> str:
    if pinned:
        return pinned
    response = http.get(url + "/health")
    if response.status_code != 200:
        raise FedaiError.from_dict(None, response.status_code)
    return parse_pubkey(str(response.json()["pubkey"]))


def send_manifest(http: httpx.Client, url: str, router: str, keys: Keys, event: Event) -> dict[str, Any]:
    """POST the manifest; verify the router's signed ACK (from `router`, to us, bound to our event)."""
    response = http.post(url + "/manifest", content=event.to_json(), headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        raise FedaiError.from_dict(body, response.status_code)
    ack = open_envelope(
        response.content, Ack, kinds=(Kind.ACK,), recipient=keys.pubkey, signers=(router,), reply_to=event.id
    )
    found = re.search(r"trust=([0-9.]+)", ack.payload.detail)
    return {
        "url": url,
        "pubkey": router,
        "status": ack.payload.status,
        "detail": ack.payload.detail,
        "trust": float(found.group(1)) if found else None,
        "ack": ack.event.to_dict(),
    }


def _print_manifest(manifest: NodeManifest, event: Event, written: Path | None, answer: dict[str, Any] | None) -> None:
    console.print(_table("hardware profile", _fields(manifest.profile)))
    if manifest.bench is not None:
        console.print(_table("benchmark", _fields(manifest.bench)))
    console.print(f"recommended: {', '.join(manifest.recommended) or 'none'}")
    console.print(f"signed node.manifest {short_id(event.id)} by {short_npub(event.pubkey)}")
    if written is not None:
        console.print(f"written to {written}")
    if answer is not None:
        console.print(f"{mark(True)} router {short_npub(answer['pubkey'])} accepted it: {answer['detail']}")


def _sign_write_send(
    keys: Keys,
    manifest: NodeManifest,
    router: str | None,
    pinned: str | None,
    write_path: Path | None,
    *,
    as_json: bool,
) -> tuple[Event, dict[str, Any] | None]:
    """Sign the manifest (addressed to the router, if any), write it and send it; failures exit.

    Returns the signed event and the router's answer (None without `--router`).
    """
    with httpx.Client(timeout=ROUTER_TIMEOUT_S) as http:
        try:
            url = router.rstrip("/") if router else None
            to = _router_pubkey(http, url, pinned) if url else None
            event = build_manifest_event(keys, manifest, to=to)
            if write_path is not None:
                write_manifest_file(write_path, event)
            if url is not None and to is not None:
                return event, send_manifest(http, url, to, keys, event)
            return event, None
        except httpx.HTTPError as exc:
            unreachable = FedaiError(ErrorCode.UPSTREAM_ERROR, f"router unreachable: {type(exc).__name__}")
            fail_fedai(unreachable, as_json=as_json)
        except FedaiError as err:
            fail_fedai(err, as_json=as_json)
        except OSError as exc:
            fail(f"{write_path}: cannot write ({exc.strerror or type(exc).__name__})")


def _manifest_document(
    manifest: NodeManifest, event: Event, written: Path | None, answer: dict[str, Any] | None
) -> dict[str, Any]:
    """The `--json` output: the signed event, the manifest, where it was written and what the router said."""
    document: dict[str, Any] = {"event": event.to_dict(), "manifest": msgspec.to_builtins(manifest)}
    if written is not None:
        document["written"] = str(written)
    if answer is not None:
        document["router"] = answer
    return document


@click.command("manifest")
@click.option(
    "--key",
    "key",
    envvar="NODE_PRIVATE_KEY",
    required=True,
    help="The node's secret key (nsec/hex) or a file holding it (env NODE_PRIVATE_KEY).",
)
@click.option(
    "--write",
    "write_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the signed event as JSON to this file (mode 0644).",
)
@click.option("--router", help="POST the manifest to this router's /manifest.")
@click.option("--router-pubkey", help="The router's key (npub/hex); default: read from its /health.")
@data_dir_option
@quick_option
@json_option
def manifest_cmd(
    key: str,
    write_path: Path | None,
    router: str | None,
    router_pubkey: str | None,
    data_dir: Path,
    quick: bool,
    as_json: bool,
) -> None:
    """Profile, benchmark and sign this node's manifest; optionally write it and send it to a router."""
    if router_pubkey and not router:
        raise click.UsageError("--router-pubkey needs --router")
    try:
        keys = load_secret(key)
        pinned = parse_pubkey(router_pubkey) if router_pubkey else None
    except (KeyInputError, KeyFormatError) as exc:
        fail(str(exc), code=2)
    profile: HardwareProfile = hardware.profile(data_dir)
    scores: BenchScores = benchmark.run(quick=quick)
    manifest = make_manifest(profile, scores)
    event, answer = _sign_write_send(keys, manifest, router, pinned, write_path, as_json=as_json)
    if as_json:
        print_json(_manifest_document(manifest, event, write_path, answer))
        return
    _print_manifest(manifest, event, write_path, answer)
