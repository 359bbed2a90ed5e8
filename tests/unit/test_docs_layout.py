"""The docs stay true to the tree: docs/architecture.md's code-layout table, and docs/decisions.md's anchors.

The layout table has one row per package (and per top-level directory). Every path and every module it names
exists, every package under packages/, services/ and tools/ has a row, and every module of a package is named
in that package's row. A module added, moved or renamed without its row fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DECISIONS = ROOT / "docs" / "decisions.md"
CODE_ROOTS = ("packages", "services", "tools")

if not ARCHITECTURE.exists():  # e.g. `make mutants` runs the unit tests in a copy without docs/
    pytest.skip("docs/ is not part of this copy of the tree", allow_module_level=True)

ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| (?P<holds>.*) \|$")
TICKED = re.compile(r"`([^`]+)`")
MODULE = re.compile(r"^[\w.-]+\.py$")
SUBDIR = re.compile(r"^[\w.-]+/$")


def layout_rows() -> dict[str, str]:
    """The code-layout table: directory path (with a trailing slash) → what its row says it holds."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if match := ROW.match(line):
            assert match["path"] not in rows, f"two rows for {match['path']}"
            rows[match["path"]] = match["holds"]
    assert rows, "no table found under '## Code layout' in docs/architecture.md"
    return rows


def named(holds: str, pattern: re.Pattern[str]) -> set[str]:
    return {token for token in TICKED.findall(holds) if pattern.match(token)}


def python_packages() -> list[Path]:
    """Every directory with an `__init__.py` under the code roots."""
    found = []
    for root in CODE_ROOTS:
        for init in (ROOT / root).rglob("__init__.py"):
            if not any(part.endswith(".egg-info") or part == "__pycache__" for part in init.parts):
                found.append(init.parent)
    return sorted(found)


def tracked_files() -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [name for name in listing.stdout.decode().split("\0") if name]


def test_every_listed_path_and_module_exists() -> None:
    for path, holds in layout_rows().items():
        directory = ROOT / path
        assert path.endswith("/") and directory.is_dir(), f"{path}: not a directory of the tree"
        for module in named(holds, MODULE):
            assert (directory / module).is_file(), f"{path} row names {module}, which is not in {path}"
        for subdir in named(holds, SUBDIR):
            assert (directory / subdir).is_dir(), f"{path} row names {subdir}, which is not in {path}"


def test_every_package_has_a_row_naming_each_of_its_modules() -> None:
    rows = layout_rows()
    packages = python_packages()
    assert len(packages) > 10  # the walk found the tree
    for package in packages:
        path = f"{package.relative_to(ROOT).as_posix()}/"
        assert path in rows, f"docs/architecture.md's code layout has no row for {path}"
        modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
        missing = sorted(modules - named(rows[path], MODULE))
        assert not missing, f"the {path} row does not name {missing}"


def test_every_top_level_directory_has_a_row() -> None:
    top = {name.split("/", 1)[0] for name in tracked_files() if "/" in name}
    paths = layout_rows()
    for directory in sorted(top):
        assert any(path.startswith(f"{directory}/") for path in paths), f"no code-layout row for {directory}/"


def test_decision_citations_name_existing_anchors() -> None:
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', DECISIONS.read_text()))
    cited = 0
    for name in tracked_files():
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".sql"} and path.name != "Makefile":
            continue
        for anchor in re.findall(r"decisions\.md#([\w-]+)", path.read_text()):
            cited += 1
            assert anchor in anchors, f"{name} cites decisions.md#{anchor}, which docs/decisions.md does not have"
    assert cited > 10


def test_the_design_brief_outside_the_repository_is_not_cited() -> None:
    outside = "DESIGN" + ".md"
    citing = [name for name in tracked_files() if outside in _text(ROOT / name)]
    assert not citing, f"these files cite {outside}, which is not in the repository: {citing}"


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except (UnicodeDecodeError, OSError):
        return ""
