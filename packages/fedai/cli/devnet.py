"""`fedai devnet`: embedded Postgres, an embedded relay, one router and N mock nodes on loopback.

Every service is its own process with its own log under DATA_DIR/logs/. The devnet writes
DATA_DIR/devnet.json once everything is ready, optionally runs one verified inference (`--demo`), and
stops every process it started, and the embedded Postgres, when it exits for any reason.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import httpx
from rich.console import Console

from fedai.cli.chain_view import print_chain
from fedai.cli.devnet_file import DEFAULT_DATA_DIR, FILE_NAME, DevnetInfo, NodeEntry, RouterEntry, write_devnet
from fedai.cli.keyfile import KeyInputError, load_or_create_secret
from fedai.cli.output import CHECK, CROSS, console, err_console, short_npub
from fedai.cli.postgres import is_postmaster, postmaster_pid, start_postgres, stop_postgres
from fedai.cli.processes import (
    Child,
    Interrupted,
    ProcessFailed,
    Supervisor,
    describe_exit,
    free_port,
    python_module,
    signals_deferred,
    signals_raise,
    tail_file,
    wait_for_http,
    wait_for_line,
)
from fedai.cli.services import NODE_MODULE, RELAY_MODULE, ROUTER_MODULE, node_env, router_env
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk import Client

HOST = "127.0.0.1"
HEARTBEAT_MS = 2000
RELAY_READY = re.compile(r"relay listening on (wss?://\S+)")
DEMO_PROMPT = "Hello from the fedai devnet!"
STAGE_RELAY, STAGE_ROUTER, STAGE_NODES = 0, 1, 2  # stop order: nodes, router, relay


class DevnetError(RuntimeError):
    """The devnet cannot start or keep running; names what failed and where its log is."""

    def __init__(self, name: str, reason: str, log_path: Path | None = None) -> None:
        super().__init__(f"{name} {reason}")
        self.name = name
        self.reason = reason
        self.log_path = log_path


@dataclass(frozen=True)
class DevnetOptions:
    data_dir: Path = DEFAULT_DATA_DIR
    nodes: int = 2
    runner: str = "mock"
    base_port: int | None = None
    demo: bool = False
    once: bool = False
    timeout: float = 60.0
    prompt: str = DEMO_PROMPT


@dataclass(frozen=True)
class Ports:
    relay: int  # 0: the relay picks a free port and prints its URL
    router: int
    nodes: list[int]


def plan_ports(base_port: int | None, nodes: int) -> Ports:
    """With a base port P: relay P, router P+1, node i at P+2+i; otherwise free ports."""
    if base_port is not None:
        return Ports(base_port, base_port + 1, [base_port + 2 + i for i in range(nodes)])
    return Ports(0, free_port(HOST), [free_port(HOST) for _ in range(nodes)])


def node_prices(index: int) -> tuple[int, int]:
    """Different prices per node (msat per 1k input/output tokens) so the scheduler has a real choice."""
    return 1000 + 500 * index, 2000 + 1000 * index


def _json(response: httpx.Response) -> dict[str, Any]:
    """A response's JSON object, or {} when it is not one (a service still starting may answer oddly)."""
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@contextlib.contextmanager
def exclusive_lock(data_dir: Path) -> Iterator[None]:
    """One devnet per data dir: hold an flock on DATA_DIR/devnet.lock for the devnet's lifetime."""
    path = data_dir / "devnet.lock"
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise DevnetError("devnet", f"is already running in {data_dir} (pid {owner})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@dataclass
class Devnet:
    """One run of the devnet: what it started, so that `stop()` can undo all of it."""

    options: DevnetOptions
    out: Console = console
    supervisor: Supervisor = field(default_factory=Supervisor)
    data_dir: Path = field(init=False)
    pg_started: bool = field(default=False, init=False)
    ready: bool = field(default=False, init=False)
    _stopped: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.options.data_dir.expanduser().resolve()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    # -- start-up --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, label: str, doing: str) -> Iterator[dict[str, str]]:
        """Show a spinner while a step runs, then one ✓ line with what it produced and how long it took."""
        result: dict[str, str] = {}
        started = time.monotonic()
        try:
            with self.out.status(f"{doing}…"):
                yield result
        except BaseException:
            self.out.print(f"{CROSS} {label}")
            raise
        took = time.monotonic() - started
        self.out.print(f"{CHECK} {label:<10} {result.get('detail', '')} [dim]({took:.1f} s)[/dim]")

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, module: str, args: list[str], env: dict[str, str], stage: int) -> Child:
        log = self.logs_dir / f"{name}.log"
        log.unlink(missing_ok=True)  # one run per log file: tails show this run only
        return self.supervisor.spawn(name, python_module(module, *args), env, log, stage=stage)

    def _key(self, name: str) -> Keys:
        keys, _created = load_or_create_secret(self.keys_dir / f"{name}.key")
        return keys

    def start(self) -> DevnetInfo:
        """Start everything, wait until the router lists every node as fresh, write devnet.json."""
        opts = self.options
        for directory in (self.data_dir, self.logs_dir, self.keys_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.keys_dir.chmod(0o700)
        ports = plan_ports(opts.base_port, opts.nodes)

        with self.step("postgres", "starting embedded PostgreSQL and applying migrations") as result:
            from fedai.store.migrations import migrate_dsn

            self.pg_started = True
            dsn = start_postgres(self.pgdata, keep_running=True)
            applied = asyncio.run(migrate_dsn(dsn))
            result["detail"] = f"{self.pgdata} [dim]({len(applied)} migration(s) applied)[/dim]"

        base = self._base_env()
        with self.step("relay", "starting the relay") as result:
            relay = self._spawn("relay", RELAY_MODULE, ["--host", HOST, "--port", str(ports.relay)], base, STAGE_RELAY)
            relay_url = wait_for_line(relay, RELAY_READY, timeout=opts.timeout).group(1)
            result["detail"] = f"{relay_url} [dim]pid {relay.pid}[/dim]"

        router_keys = self._key("router")
        client_keys = self._key("client")
        router_url = f"http://{HOST}:{ports.router}"
        with self.step("router", "starting the router") as result:
            env = router_env(
                base,
                key=router_keys.secret_hex,
                host=HOST,
                port=ports.router,
                db_url=dsn,
                data_dir=self.data_dir,
                relays=(relay_url,),
                allow_private_endpoints=True,
            )
            env["DATABASE_URL"] = dsn
            router = self._spawn("router", ROUTER_MODULE, [], env, STAGE_ROUTER)
            wait_for_http(
                router,
                f"{router_url}/health",
                timeout=opts.timeout,
                ready=lambda r: r.status_code == 200 and _json(r).get("pubkey") == router_keys.pubkey,
            )
            result["detail"] = f"{router_url} [dim]{short_npub(router_keys.pubkey)} pid {router.pid}[/dim]"

        node_keys = [self._key(f"node-{i + 1}") for i in range(opts.nodes)]
        node_urls = [f"http://{HOST}:{port}" for port in ports.nodes]
        with self.step("nodes", f"starting {opts.nodes} node(s)") as result:
            children = []
            for index, (keys, port, url) in enumerate(zip(node_keys, ports.nodes, node_urls, strict=True)):
                price_in, price_out = node_prices(index)
                env = node_env(
                    base,
                    key=keys.secret_hex,
                    host=HOST,
                    port=port,
                    endpoint=url,
                    router_url=router_url,
                    router_pubkey=router_keys.pubkey,
                    runner=opts.runner,
                    heartbeat_ms=HEARTBEAT_MS,
                    relays=(relay_url,),
                    price_input_msat=price_in,
                    price_output_msat=price_out,
                )
                children.append(self._spawn(f"node-{index + 1}", NODE_MODULE, [], env, STAGE_NODES))
            for child, url in zip(children, node_urls, strict=True):
                wait_for_http(child, f"{url}/health", timeout=opts.timeout)
            result["detail"] = f"http://{HOST} ports {', '.join(str(port) for port in ports.nodes)}"

        with self.step("registry", "waiting for the router to list every node as fresh") as result:
            models = self._wait_for_registry(router, router_url, [k.pubkey for k in node_keys])
            result["detail"] = f"{opts.nodes} fresh node(s) serving {', '.join(sorted(set(models.values())))}"

        pids = {"devnet": os.getpid(), **{c.name: c.pid for c in self.supervisor.children}}
        pg_pid = postmaster_pid(self.pgdata)
        if pg_pid is not None:
            pids["postgres"] = pg_pid
        info = DevnetInfo(
            relay_url=relay_url,
            database_url=dsn,
            router=RouterEntry(url=router_url, pubkey=router_keys.pubkey, npub=router_keys.npub),
            nodes=[
                NodeEntry(url=url, pubkey=keys.pubkey, npub=keys.npub, model=models[keys.pubkey])
                for keys, url in zip(node_keys, node_urls, strict=True)
            ],
            client_key_file=str(self.keys_dir / "client.key"),
            logs_dir=str(self.logs_dir),
            pids=pids,
            data_dir=str(self.data_dir),
            started_at=time.time(),
        )
        path = write_devnet(self.data_dir, info)
        self.out.print(f"{CHECK} {'devnet':<10} {path} [dim](client {short_npub(client_keys.pubkey)})[/dim]")
        self.ready = True
        return info

    def _wait_for_registry(self, router: Child, router_url: str, pubkeys: list[str]) -> dict[str, str]:
        """Poll the router's /status until every node is listed and fresh; returns pubkey → first model."""
        found: dict[str, str] = {}

        def all_fresh(response: httpx.Response) -> bool:
            if response.status_code != 200:
                return False
            nodes = {n.get("pubkey"): n for n in _json(response).get("nodes", []) if isinstance(n, dict)}
            found.clear()
            for pubkey in pubkeys:
                node = nodes.get(pubkey)
                if not node or not node.get("fresh") or not node.get("models"):
                    return False
                found[pubkey] = str(node["models"][0])
            return True

        try:
            wait_for_http(router, f"{router_url}/status", timeout=self.options.timeout, ready=all_fresh,
                          what="router /status listing every node as fresh")  # fmt: skip
        except ProcessFailed:
            self._raise_if_a_child_died()
            raise
        return dict(found)

    def _raise_if_a_child_died(self) -> None:
        dead = self.supervisor.first_dead()
        if dead is not None:
            child, returncode = dead
            raise ProcessFailed(child, describe_exit(returncode))

    # -- demo and supervision --------------------------------------------------------------------

    def demo(self, info: DevnetInfo) -> bool:
        """One signed inference through the router as the devnet's client; True if the chain verified."""
        client_keys = self._key("client")
        model = info.nodes[0].model
        self.out.print()
        self.out.print(f"[bold]demo[/bold]: one signed inference for {model!r} through {info.router.url}")
        try:
            with Client(info.router.url, client_keys, router_pubkey=info.router.pubkey, timeout=30.0) as client:
                chain = client.infer(model, self.options.prompt, max_tokens=32)
        except FedaiError as err:
            step = getattr(err, "step", None)
            where = f" at {step}" if step else ""
            err_console.print(f"{CROSS} [red]chain NOT verified{where}[/red]: {err.code.value}: {err.message}")
            return False
        print_chain(self.out, chain)
        return True

    def print_usage(self, info: DevnetInfo) -> None:
        devnet_flag = "" if self.data_dir == DEFAULT_DATA_DIR.resolve() else f" --devnet {self.data_dir}"
        self.out.print()
        router = f"{info.router.url} ({short_npub(info.router.pubkey)})"
        self.out.print(f"[bold green]devnet is up[/bold green]: router {router}")
        self.out.print(f'  fedai infer{devnet_flag} "Why is the sky blue?"')
        self.out.print(f"  fedai status{devnet_flag}")
        self.out.print(f'  fedai quote{devnet_flag} --prompt "hello"')
        self.out.print(f"  logs:   {self.logs_dir}/{{relay,router,node-N}}.log")
        self.out.print(f"  file:   {self.data_dir / FILE_NAME}")
        self.out.print("Ctrl-C stops every process the devnet started.")

    def supervise(self) -> None:
        """Return never: raise `ProcessFailed`/`DevnetError` when a child or Postgres dies."""
        pg_pid = postmaster_pid(self.pgdata)
        while True:
            self._raise_if_a_child_died()
            if pg_pid is not None and not is_postmaster(pg_pid, self.pgdata):
                raise DevnetError("postgres", "stopped unexpectedly", self.pgdata / "log")
            time.sleep(0.5)

    # -- shutdown --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every child (SIGTERM, 5 s, SIGKILL) and the embedded Postgres. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with signals_deferred():
            self.supervisor.stop()
            if self.pg_started:
                stop_postgres(self.pgdata)


def report_failure(name: str, reason: str, log_path: Path | None) -> None:
    """A failure line naming the process, then the tail of its log (plain text, never wrapped)."""
    click.echo(click.style(f"✗ {name} {reason}", fg="red"), err=True)
    if log_path is not None:
        click.echo(f"--- last lines of {log_path} ---", err=True)
        click.echo(tail_file(log_path), err=True)
        click.echo("---", err=True)


def run_devnet(options: DevnetOptions, out: Console = console) -> int:
    """Run the devnet; the exit status follows DESIGN.md section 8 (see `devnet_cmd`)."""
    devnet = Devnet(options, out)
    devnet.data_dir.mkdir(parents=True, exist_ok=True)
    atexit.register(devnet.stop)
    try:
        with exclusive_lock(devnet.data_dir), signals_raise():
            try:
                info = devnet.start()
                verified = devnet.demo(info) if options.demo else True
                if options.once:
                    return 0 if verified else 1
                devnet.print_usage(info)
                devnet.supervise()
            finally:
                if devnet.ready or devnet.supervisor.children:
                    out.print("[dim]stopping the devnet…[/dim]")
                devnet.stop()
    except Interrupted as exc:
        out.print(f"{signal.Signals(exc.signum).name}: every process the devnet started is stopped")
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
        report_failure(
            "devnet", f"failed: {type(exc).__name__}: {exc}", devnet.pgdata / "log" if not devnet.ready else None
        )
        return 1
    finally:
        atexit.unregister(devnet.stop)
    return 0


@click.command("devnet")
@click.option("--demo", is_flag=True, help="Send one signed inference and print the verified chain.")
@click.option("--once", is_flag=True, help="Exit after start-up (and the demo): 0 only if everything verified.")
@click.option("--nodes", type=click.IntRange(1, 32), default=2, show_default=True, help="Number of nodes.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR,
              show_default=True, help="Keys, logs, Postgres data and devnet.json live here.")  # fmt: skip
@click.option("--runner", default="mock", show_default=True, help="NODE_RUNNER for every node.")
@click.option("--base-port", type=click.IntRange(1, 65000), help="Relay P, router P+1, nodes P+2… (default: free).")
@click.option("--timeout", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds to wait for each service to become ready.")  # fmt: skip
@click.option("--prompt", default=DEMO_PROMPT, show_default=True, help="The demo's prompt.")
def devnet_cmd(**kwargs: Any) -> None:
    """Run a local network: embedded Postgres, relay, one router and N mock nodes, each its own process.

    Writes DATA_DIR/devnet.json for `fedai infer`/`fedai status`. Runs until Ctrl-C or SIGTERM (exit 0),
    or exits after start-up with --once (0 only if the demo's chain verified). Exits 1, naming the
    process and showing its log tail, if any service fails to start or dies. Other ROUTER_*/NODE_*
    variables in the environment (e.g. NODE_MOCK_DELAY_MS) apply to the devnet's services.
    """
    raise SystemExit(run_devnet(DevnetOptions(**kwargs)))
