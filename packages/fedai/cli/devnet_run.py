"""One run of the devnet: start its pieces in order, watch them, and stop every one of them.

Start-up order: the llama-server binary and model (built or fetched once), the embedded PostgreSQL (migrated),
the relay, the llama-server, with `--pay` LNbits and the parties' wallets (fedai.cli.devnet_pay), the router,
the nodes; then wait until the router lists every node as fresh and write devnet.json. Each step shows a
spinner, then one line with what it produced. Every service is a child process with its own log under
DATA_DIR/logs/; `stop()` stops them in reverse stage order, then LNbits, then Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.status import Status

from fedai.cli.admin import load_or_create_token, token_digest
from fedai.cli.devnet_dir import DataDir
from fedai.cli.devnet_file import DevnetInfo, LlamaEntry, NodeEntry, RouterEntry, write_devnet
from fedai.cli.devnet_pay import CLIENT, DevnetPayments
from fedai.cli.devnet_plan import HOST, DevnetOptions, LlamaPlan, llama_parallel, node_capacity, node_prices, plan_ports
from fedai.cli.llama import progress_printer
from fedai.cli.output import CHECK, CROSS, console, short_npub
from fedai.cli.postgres import is_postmaster, postmaster_pid, start_postgres, stop_postgres
from fedai.cli.processes import (
    Child,
    ProcessFailed,
    Supervisor,
    describe_exit,
    python_module,
    signals_deferred,
    wait_for_http,
    wait_for_line,
)
from fedai.cli.services import NODE_MODULE, RELAY_MODULE, ROUTER_MODULE, node_env, router_env
from fedai.llamacpp import LlamaBuildError, ModelError, ensure_llama_server, ensure_model, model_spec, server_args
from fedai.lnbits import LnbitsAdminError, LnbitsInstallError, LnbitsServerError
from fedai.protocol.keys import Keys

HEARTBEAT_MS = 2000
RELAY_READY = re.compile(r"relay listening on (wss?://\S+)")
LLAMA_SLOT_CONTEXT = 2048
STAGE_RELAY, STAGE_ROUTER, STAGE_NODES = 0, 1, 2  # stop order: nodes, router, relay (and llama-server)
STAGE_LLAMA = STAGE_RELAY


class DevnetError(RuntimeError):
    """The devnet cannot start or keep running; names what failed and where its log is."""

    def __init__(self, name: str, reason: str, log_path: Path | None = None) -> None:
        super().__init__(f"{name} {reason}")
        self.name = name
        self.reason = reason
        self.log_path = log_path


def child_env() -> dict[str, str]:
    """What every child inherits: this environment (so ROUTER_*/NODE_* settings apply), unbuffered output."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _json(response: httpx.Response) -> dict[str, Any]:
    """A response's JSON object, or {} when it is not one (a service still starting may answer oddly)."""
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Devnet:
    """One run of the devnet: what it started, so that `stop()` can undo all of it."""

    options: DevnetOptions
    out: Console = console
    supervisor: Supervisor = field(default_factory=Supervisor)
    data_dir: DataDir = field(init=False)
    pg_started: bool = field(default=False, init=False)
    payments: DevnetPayments | None = field(default=None, init=False)  # `--pay`: LNbits and the wallets
    ready: bool = field(default=False, init=False)
    _stopped: bool = field(default=False, init=False)
    _status: Status | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = DataDir.at(self.options.data_dir)

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

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], stage: int) -> Child:
        return self.supervisor.spawn(name, argv, env, self.data_dir.fresh_log(name), stage=stage)

    def start(self) -> DevnetInfo:
        """Start everything, wait until the router lists every node as fresh, write devnet.json."""
        opts, dirs = self.options, self.data_dir
        dirs.create()
        ports = plan_ports(opts.base_port, opts.nodes)
        plan = self._prepare_llama() if opts.uses_llama else None
        dsn = self._start_postgres()
        env = child_env()
        relay_url = self._start_relay(ports.relay, env)
        llama = self._start_llama(plan, ports.llama, env) if plan is not None else None
        if opts.pay:
            self._start_payments(dsn)
        router_keys = dirs.key("router")
        client_keys = dirs.key("client")
        admin_token = load_or_create_token(dirs.admin_token_file)
        router_url = f"http://{HOST}:{ports.router}"
        router = self._start_router(router_keys, router_url, ports.router, env, dsn, relay_url, admin_token)
        node_keys = [dirs.key(f"node-{i + 1}") for i in range(opts.nodes)]
        node_urls = [f"http://{HOST}:{port}" for port in ports.nodes]
        with self.step("nodes", f"starting {opts.nodes} node(s)") as result:
            self._start_nodes(node_keys, ports.nodes, node_urls, env, router_url, router_keys, relay_url, llama)
            result["detail"] = f"http://{HOST} ports {', '.join(str(port) for port in ports.nodes)}"
        with self.step("registry", "waiting for the router to list every node as fresh") as result:
            models = self._wait_for_registry(router, router_url, [k.pubkey for k in node_keys], admin_token)
            result["detail"] = f"{opts.nodes} fresh node(s) serving {', '.join(sorted(set(models.values())))}"
        info = DevnetInfo(
            relay_url=relay_url,
            database_url=dsn,
            router=RouterEntry(url=router_url, pubkey=router_keys.pubkey, npub=router_keys.npub),
            nodes=[
                NodeEntry(url=url, pubkey=keys.pubkey, npub=keys.npub, model=models[keys.pubkey])
                for keys, url in zip(node_keys, node_urls, strict=True)
            ],
            client_key_file=str(dirs.key_file("client")),
            logs_dir=str(dirs.logs),
            pids=self._pids(),
            data_dir=str(dirs.root),
            started_at=time.time(),
            runner=opts.runner,
            llama=llama,
            admin_token_file=str(dirs.admin_token_file),
            client_wallet_file=str(self.payments.wallet_files[CLIENT]) if self.payments else "",
            lnbits=self.payments.entry() if self.payments else None,
        )
        path = write_devnet(dirs.root, info)
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

    def _start_postgres(self) -> str:
        """The embedded PostgreSQL, started (it outlives a crash of ours until `stop()`) and migrated: its DSN."""
        pgdata = self.data_dir.pgdata
        with self.step("postgres", "starting embedded PostgreSQL and applying migrations") as result:
            from fedai.store.migrations import migrate_dsn

            self.pg_started = True
            dsn = start_postgres(pgdata, keep_running=True)
            applied = asyncio.run(migrate_dsn(dsn))
            result["detail"] = f"{pgdata} [dim]({len(applied)} migration(s) applied)[/dim]"
        return dsn

    def _start_payments(self, dsn: str) -> None:
        """LNbits (installed first if not cached), a funded wallet per party, a database per node."""
        self.payments = payments = DevnetPayments(self.data_dir, self.options.nodes)
        with self.step("lnbits", "looking for the cached LNbits and starting it") as result:
            progress = progress_printer(self.out, self._status, prefix="  ")
            try:
                server = payments.start_lnbits(timeout=self.options.timeout, progress=progress)
            except (LnbitsInstallError, LnbitsServerError) as exc:
                raise DevnetError("lnbits", f"is not available: {exc}") from None  # with its log's tail
            result["detail"] = f"{server.url} [dim]FakeWallet pid {server.pid}[/dim]"
        with self.step("wallets", "creating and funding a wallet per party") as result:
            try:
                funded = payments.create_wallets()
            except LnbitsAdminError as exc:
                raise DevnetError("lnbits", f"refused to set up the wallets: {exc}", server.log_path) from None
            payments.create_node_databases(dsn)
            result["detail"] = (
                f"{len(funded)} funded, the client {funded[CLIENT]} sat [dim]{self.data_dir.wallets}[/dim]"
            )

    def _start_relay(self, port: int, env: dict[str, str]) -> str:
        """The embedded relay (port 0: it picks one); its URL, read from its log line."""
        with self.step("relay", "starting the relay") as result:
            argv = python_module(RELAY_MODULE, "--host", HOST, "--port", str(port))
            relay = self._spawn("relay", argv, env, STAGE_RELAY)
            relay_url = wait_for_line(relay, RELAY_READY, timeout=self.options.timeout).group(1)
            result["detail"] = f"{relay_url} [dim]pid {relay.pid}[/dim]"
        return relay_url

    def _start_llama(self, plan: LlamaPlan, port: int, env: dict[str, str]) -> LlamaEntry:
        """One llama-server for every node, with a slot per unit of node capacity; waits for /health 200."""
        url = f"http://{HOST}:{port}"
        parallel = llama_parallel(self.options.nodes, node_capacity(env))
        with self.step("llama", f"starting llama-server ({plan.model_id})") as result:
            argv = server_args(
                plan.binary,
                plan.model,
                host=HOST,
                port=port,
                parallel=parallel,
                slot_context=LLAMA_SLOT_CONTEXT,
                model_id=plan.model_id,
            )
            child = self._spawn("llama", argv, env, STAGE_LLAMA)
            wait_for_http(child, f"{url}/health", timeout=self.options.timeout, what="llama-server /health")
            result["detail"] = f"{url} [dim]{parallel} slots pid {child.pid}[/dim]"
        return LlamaEntry(url=url, model=plan.model_id, log=str(child.log_path))

    def _start_router(
        self, keys: Keys, url: str, port: int, env: dict[str, str], dsn: str, relay_url: str, admin_token: str
    ) -> Child:
        """The router, in its own dev mode (private endpoints allowed, NIP-98 against `url`); waits for /health."""
        with self.step("router", "starting the router") as result:
            router_environ = router_env(
                env,
                key=keys.secret_hex,
                host=HOST,
                port=port,
                db_url=dsn,
                data_dir=self.data_dir.root,
                relays=(relay_url,),
                allow_private_endpoints=True,
                # the devnet is its own dev mode: NIP-98 checks against this URL, the CLI reads status with the token
                public_url=url,
                admin_token_sha256=token_digest(admin_token),
            )
            router_environ["DATABASE_URL"] = dsn
            if self.payments is not None:
                router_environ |= self.payments.router_env()
            router = self._spawn("router", python_module(ROUTER_MODULE), router_environ, STAGE_ROUTER)
            wait_for_http(
                router,
                f"{url}/health",
                timeout=self.options.timeout,
                ready=lambda r: r.status_code == 200 and _json(r).get("pubkey") == keys.pubkey,
            )
            result["detail"] = f"{url} [dim]{short_npub(keys.pubkey)} pid {router.pid}[/dim]"
        return router

    def _start_nodes(
        self,
        node_keys: list[Keys],
        ports: list[int],
        urls: list[str],
        env: dict[str, str],
        router_url: str,
        router_keys: Keys,
        relay_url: str,
        llama: LlamaEntry | None,
    ) -> None:
        """Every node (each with its own prices), then wait until each answers /health."""
        children = []
        for index, (keys, port, url) in enumerate(zip(node_keys, ports, urls, strict=True)):
            price_in, price_out = node_prices(index, pay=self.payments is not None)
            node_environ = node_env(
                env,
                key=keys.secret_hex,
                host=HOST,
                port=port,
                endpoint=url,
                router_url=router_url,
                router_pubkey=router_keys.pubkey,
                runner=self.options.node_runner,
                runner_url=llama.url if llama else None,
                model=llama.model if llama else None,
                heartbeat_ms=HEARTBEAT_MS,
                relays=(relay_url,),
                price_input_msat=price_in,
                price_output_msat=price_out,
            )
            if self.payments is not None:
                node_environ |= self.payments.node_env(index)
            children.append(self._spawn(f"node-{index + 1}", python_module(NODE_MODULE), node_environ, STAGE_NODES))
        for child, url in zip(children, urls, strict=True):
            wait_for_http(child, f"{url}/health", timeout=self.options.timeout)

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
            wait_for_http(
                router,
                f"{router_url}/status",
                timeout=self.options.timeout,
                ready=all_fresh,
                what="router /status listing every node as fresh",
                headers={"Authorization": f"Bearer {token}"},
            )
        except ProcessFailed:
            self._raise_if_a_child_died()
            raise
        return dict(found)

    def _pids(self) -> dict[str, int]:
        """This process, every child and the embedded Postgres, by name (for devnet.json)."""
        pids = {"devnet": os.getpid(), **{c.name: c.pid for c in self.supervisor.children}}
        pg_pid = postmaster_pid(self.data_dir.pgdata)
        if pg_pid is not None:
            pids["postgres"] = pg_pid
        if self.payments is not None and self.payments.server is not None and self.payments.server.pid is not None:
            pids["lnbits"] = self.payments.server.pid
        return pids

    # -- supervision and shutdown ----------------------------------------------------------------

    def _raise_if_a_child_died(self) -> None:
        dead = self.supervisor.first_dead()
        if dead is not None:
            child, returncode = dead
            raise ProcessFailed(child, describe_exit(returncode))

    def supervise(self) -> None:
        """Return never: raise `ProcessFailed`/`DevnetError` when a child or Postgres dies."""
        pgdata = self.data_dir.pgdata
        pg_pid = postmaster_pid(pgdata)
        while True:
            self._raise_if_a_child_died()
            if pg_pid is not None and not is_postmaster(pg_pid, pgdata):
                raise DevnetError("postgres", "stopped unexpectedly", pgdata / "log")
            if self.payments is not None and not self.payments.running():
                raise DevnetError("lnbits", "stopped unexpectedly", self.data_dir.logs / "lnbits.log")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every child (SIGTERM, 5 s, SIGKILL), LNbits (its process group) and the embedded Postgres.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with signals_deferred():
            self.supervisor.stop()
            if self.payments is not None:
                self.payments.stop()
            if self.pg_started:
                stop_postgres(self.data_dir.pgdata)
