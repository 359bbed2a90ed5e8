"""`fedai devnet`: embedded Postgres, an embedded relay, one router and N nodes on loopback.

The nodes serve a real model by default (`--runner llama`): one shared `llama-server` (built once and
cached, see fedai.llamacpp) on SmolLM2-135M-Instruct or the tiny test model; `--runner mock` (or any other
NODE_RUNNER) runs them without it. Every service is its own process with its own log under DATA_DIR/logs/.
The devnet writes DATA_DIR/devnet.json once everything is ready, optionally runs one verified inference
(`--demo`), and stops every process it started, and the embedded Postgres, when it exits for any reason.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from fedai.cli.admin import load_or_create_token, token_digest
from fedai.cli.chain_view import print_chain
from fedai.cli.devnet_file import (
    DEFAULT_DATA_DIR,
    FILE_NAME,
    DevnetInfo,
    LlamaEntry,
    NodeEntry,
    RouterEntry,
    write_devnet,
)
from fedai.cli.keyfile import KeyInputError, load_or_create_secret
from fedai.cli.llama import progress_printer
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
from fedai.llamacpp import LlamaBuildError, ModelError, ensure_llama_server, ensure_model, model_spec, server_args
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.sdk import Client
from fedai.service.filelock import LockHeld, file_lock

HOST = "127.0.0.1"
HEARTBEAT_MS = 2000
RELAY_READY = re.compile(r"relay listening on (wss?://\S+)")
DEMO_PROMPT = "Hello from the fedai devnet!"
LLAMA = "llama"  # the devnet's own runner name: one shared llama-server, nodes on NODE_RUNNER=llama_cpp
LLAMA_NODE_RUNNER = "llama_cpp"
LLAMA_MODELS = ("smollm2", "tiny")
LLAMA_PROMPT = "What is 2+2?"
LLAMA_SLOT_CONTEXT = 2048
DEMO_MAX_TOKENS = 32
NODE_CAPACITY = 4  # the node's default NODE_CAPACITY_MAX; llama-server gets nodes × capacity slots
STAGE_RELAY, STAGE_ROUTER, STAGE_NODES = 0, 1, 2  # stop order: nodes, router, relay (and llama-server)
STAGE_LLAMA = STAGE_RELAY


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
    runner: str = LLAMA
    model: str = "smollm2"
    base_port: int | None = None
    demo: bool = False
    once: bool = False
    timeout: float = 60.0
    prompt: str | None = None  # None: a prompt that suits the runner

    @property
    def uses_llama(self) -> bool:
        """`llama` (or the node runner's own name, `llama_cpp`): the devnet runs the llama-server."""
        return self.runner in (LLAMA, LLAMA_NODE_RUNNER)

    @property
    def node_runner(self) -> str:
        """NODE_RUNNER for every node."""
        return LLAMA_NODE_RUNNER if self.uses_llama else self.runner

    @property
    def demo_prompt(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return LLAMA_PROMPT if self.uses_llama else DEMO_PROMPT


@dataclass(frozen=True)
class LlamaPlan:
    """What the devnet's llama-server will run: the binary, the model file and the id nodes announce."""

    binary: Path
    model: Path
    model_id: str


@dataclass(frozen=True)
class Ports:
    relay: int  # 0: the relay picks a free port and prints its URL
    router: int
    nodes: list[int]
    llama: int = 0  # 0: not planned


def plan_ports(base_port: int | None, nodes: int) -> Ports:
    """With a base port P: relay P, router P+1, node i at P+2+i, llama-server after the nodes; else free ports."""
    if base_port is not None:
        return Ports(base_port, base_port + 1, [base_port + 2 + i for i in range(nodes)], base_port + 2 + nodes)
    return Ports(0, free_port(HOST), [free_port(HOST) for _ in range(nodes)], free_port(HOST))


def node_capacity(environ: dict[str, str]) -> int:
    """Each node's capacity: NODE_CAPACITY_MAX from the environment the nodes inherit, else the default."""
    value = environ.get("NODE_CAPACITY_MAX", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else NODE_CAPACITY


def llama_parallel(nodes: int, capacity: int = NODE_CAPACITY) -> int:
    """llama-server slots: enough for every node to use its whole capacity at once."""
    return max(1, nodes * capacity)


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
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(data_dir / "devnet.lock", wait=False))
        except LockHeld as held:
            raise DevnetError("devnet", f"is already running in {data_dir} (pid {held.owner})") from None
        yield


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
    _status: Status | None = field(default=None, init=False)

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

    @property
    def admin_token_file(self) -> Path:
        return self.keys_dir / "admin.token"

    # -- start-up --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, label: str, doing: str) -> Iterator[dict[str, str]]:
        """Show a spinner while a step runs, then one ✓ line with what it produced and how long it took."""
        result: dict[str, str] = {}
        started = time.monotonic()
        try:
            with self.out.status(f"{doing}…") as self._status:
                yield result
        except BaseException:
            self.out.print(f"{CROSS} {label}")
            raise
        finally:
            self._status = None
        took = time.monotonic() - started
        self.out.print(f"{CHECK} {label:<10} {result.get('detail', '')} [dim]({took:.1f} s)[/dim]")

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], stage: int) -> Child:
        log = self.logs_dir / f"{name}.log"
        log.unlink(missing_ok=True)  # one run per log file: tails show this run only
        return self.supervisor.spawn(name, argv, env, log, stage=stage)

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
        plan = self._prepare_llama() if opts.uses_llama else None

        with self.step("postgres", "starting embedded PostgreSQL and applying migrations") as result:
            from fedai.store.migrations import migrate_dsn

            self.pg_started = True
            dsn = start_postgres(self.pgdata, keep_running=True)
            applied = asyncio.run(migrate_dsn(dsn))
            result["detail"] = f"{self.pgdata} [dim]({len(applied)} migration(s) applied)[/dim]"

        base = self._base_env()
        with self.step("relay", "starting the relay") as result:
            argv = python_module(RELAY_MODULE, "--host", HOST, "--port", str(ports.relay))
            relay = self._spawn("relay", argv, base, STAGE_RELAY)
            relay_url = wait_for_line(relay, RELAY_READY, timeout=opts.timeout).group(1)
            result["detail"] = f"{relay_url} [dim]pid {relay.pid}[/dim]"

        llama = self._start_llama(plan, ports.llama, base) if plan is not None else None

        router_keys = self._key("router")
        client_keys = self._key("client")
        admin_token = load_or_create_token(self.admin_token_file)
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
                # the devnet is its own dev mode: NIP-98 checks against this URL, the CLI reads status with the token
                public_url=router_url,
                admin_token_sha256=token_digest(admin_token),
            )
            env["DATABASE_URL"] = dsn
            router = self._spawn("router", python_module(ROUTER_MODULE), env, STAGE_ROUTER)
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
                    runner=opts.node_runner,
                    runner_url=llama.url if llama else None,
                    model=llama.model if llama else None,
                    heartbeat_ms=HEARTBEAT_MS,
                    relays=(relay_url,),
                    price_input_msat=price_in,
                    price_output_msat=price_out,
                )
                children.append(self._spawn(f"node-{index + 1}", python_module(NODE_MODULE), env, STAGE_NODES))
            for child, url in zip(children, node_urls, strict=True):
                wait_for_http(child, f"{url}/health", timeout=opts.timeout)
            result["detail"] = f"http://{HOST} ports {', '.join(str(port) for port in ports.nodes)}"

        with self.step("registry", "waiting for the router to list every node as fresh") as result:
            models = self._wait_for_registry(router, router_url, [k.pubkey for k in node_keys], admin_token)
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
            runner=opts.runner,
            llama=llama,
            admin_token_file=str(self.admin_token_file),
        )
        path = write_devnet(self.data_dir, info)
        self.out.print(f"{CHECK} {'devnet':<10} {path} [dim](client {short_npub(client_keys.pubkey)})[/dim]")
        self.ready = True
        return info

    def _prepare_llama(self) -> LlamaPlan:
        """The llama-server binary and the model, built or fetched first if not cached (minutes, once)."""
        name = self.options.model
        with self.step("llama.cpp", "looking for the cached llama-server and model") as result:
            progress = progress_printer(self.out, self._status, prefix="  ")
            try:
                model = ensure_model(name, progress=progress)
                binary = ensure_llama_server(model=model, progress=progress)  # smoke-tested on this model here
            except (LlamaBuildError, ModelError) as exc:
                raise DevnetError("llama.cpp", f"is not available: {exc}") from None
            spec = model_spec(name)
            result["detail"] = f"{spec.model_id} [dim]{model.name}[/dim]"
        return LlamaPlan(binary, model, spec.model_id)

    def _start_llama(self, plan: LlamaPlan, port: int, env: dict[str, str]) -> LlamaEntry:
        """One llama-server for every node, with a slot per unit of node capacity; waits for /health 200."""
        url = f"http://{HOST}:{port}"
        parallel = llama_parallel(self.options.nodes, node_capacity(env))
        with self.step("llama", f"starting llama-server ({plan.model_id})") as result:
            argv = server_args(plan.binary, plan.model, host=HOST, port=port, parallel=parallel,
                               slot_context=LLAMA_SLOT_CONTEXT, model_id=plan.model_id)  # fmt: skip
            child = self._spawn("llama", argv, env, STAGE_LLAMA)
            wait_for_http(child, f"{url}/health", timeout=self.options.timeout, what="llama-server /health")
            result["detail"] = f"{url} [dim]{parallel} slots pid {child.pid}[/dim]"
        return LlamaEntry(url=url, model=plan.model_id, log=str(child.log_path))

    def _wait_for_registry(self, router: Child, router_url: str, pubkeys: list[str], token: str) -> dict[str, str]:
        """Poll the router's /status (operator view) until every node is listed and fresh; returns pubkey → first
        model."""
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
                          what="router /status listing every node as fresh",
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
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
        """One signed inference through the router as the devnet's client; True if the chain verified.

        A real model gets the prompt as a chat message, greedily decoded (so the answer is reproducible).
        """
        client_keys = self._key("client")
        model = info.nodes[0].model
        prompt = self.options.demo_prompt
        self.out.print()
        self.out.print(f"[bold]demo[/bold]: one signed inference for {model!r} through {info.router.url}")
        self.out.print(f"  prompt: {escape(prompt)}", highlight=False)
        try:
            with Client(info.router.url, client_keys, router_pubkey=info.router.pubkey, timeout=60.0) as client:
                if self.options.uses_llama:
                    messages = [{"role": "user", "content": prompt}]
                    chain = client.infer(model, messages=messages, max_tokens=DEMO_MAX_TOKENS, temperature=0.0)
                else:
                    chain = client.infer(model, prompt, max_tokens=DEMO_MAX_TOKENS)
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
        llama = ",llama" if info.llama else ""
        self.out.print(f"  logs:   {self.logs_dir}/{{relay,router,node-N{llama}}}.log")
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
@click.option("--runner", default=LLAMA, show_default=True, envvar="FEDAI_DEVNET_RUNNER",
              help="`llama`: the nodes share one llama-server (built and cached on first use); `mock`: no model; "
                   "anything else is passed to the nodes as NODE_RUNNER.")  # fmt: skip
@click.option("--model", type=click.Choice(LLAMA_MODELS), default="smollm2", show_default=True,
              envvar="FEDAI_DEVNET_MODEL",
              help="The llama runner's model: SmolLM2-135M-Instruct, or `tiny` (random weights; tests).")  # fmt: skip
@click.option("--base-port", type=click.IntRange(1, 65000), help="Relay P, router P+1, nodes P+2… (default: free).")
@click.option("--timeout", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds to wait for each service to become ready.")  # fmt: skip
@click.option("--prompt", help=f"The demo's prompt (default: {LLAMA_PROMPT!r} with llama, else {DEMO_PROMPT!r}).")
def devnet_cmd(**kwargs: Any) -> None:
    """Run a local network: embedded Postgres, relay, one router and N nodes, each its own process.

    By default the nodes serve SmolLM2-135M-Instruct through one shared llama-server; the first run builds
    llama-server (a few minutes) and downloads the model (93 MB) into ~/.cache/fedai ($FEDAI_CACHE_DIR).
    `--runner mock` starts mock nodes instead. FEDAI_DEVNET_RUNNER and FEDAI_DEVNET_MODEL set the defaults.

    Writes DATA_DIR/devnet.json for `fedai infer`/`fedai status`. Runs until Ctrl-C or SIGTERM (exit 0),
    or exits after start-up with --once (0 only if the demo's chain verified). Exits 1, naming the
    process and showing its log tail, if any service fails to start or dies. Other ROUTER_*/NODE_*
    variables in the environment (e.g. NODE_MOCK_DELAY_MS) apply to the devnet's services.
    """
    raise SystemExit(run_devnet(DevnetOptions(**kwargs)))
