"""Which CPU this is: a fingerprint that keys native builds, so a `-march=native` binary is never reused elsewhere.

On Linux the fingerprint hashes, from every processor block of `/proc/cpuinfo`, the fields that say what the
CPU can execute (vendor, family, model, model name and the feature flags; on ARM the implementer, part and
`Features`), plus the machine architecture. Volatile fields (MHz, bogomips, core ids, microcode, `bugs`) are
left out. A kernel that names more flags gives a new fingerprint: a rebuild, never a wrong reuse.
Off Linux it falls back to the OS, the architecture and `platform.processor()` (coarse: the smoke test is
what catches a binary that does not fit there).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
FINGERPRINT_CHARS = 16
# The /proc/cpuinfo fields that describe the instruction set (x86, ARM, POWER, RISC-V, s390), never the clock.
X86_FIELDS = ("vendor_id", "cpu family", "model", "model name", "flags")
ARM_FIELDS = ("CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features")
OTHER_FIELDS = ("cpu", "isa", "uarch", "features", "facilities")  # POWER, RISC-V, s390
IDENTITY_FIELDS = frozenset(X86_FIELDS + ARM_FIELDS + OTHER_FIELDS)
SET_FIELDS = frozenset({"flags", "Features", "features", "facilities"})  # word lists: order does not matter


def cpuinfo_identity(text: str) -> list[dict[str, str]]:
    """The distinct processor descriptions in a `/proc/cpuinfo` text (identity fields only), sorted."""
    seen: set[str] = set()
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, sep, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if sep and name in IDENTITY_FIELDS:
                fields[name] = " ".join(sorted(set(value.split()))) if name in SET_FIELDS else value
        if fields:
            seen.add(json.dumps(fields, sort_keys=True))
    return [json.loads(item) for item in sorted(seen)]


def cpu_identity(cpuinfo: str | None = None) -> dict[str, object]:
    """What the fingerprint hashes: the architecture and the CPU's description (`cpuinfo` read if not given)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:  # not Linux (or no procfs)
            cpuinfo = ""
    described = cpuinfo_identity(cpuinfo)
    identity: dict[str, object] = {"machine": platform.machine(), "system": platform.system()}
    if described:
        identity["cpus"] = described
    else:
        identity["processor"] = platform.processor()
    return identity


def cpu_fingerprint(cpuinfo: str | None = None) -> str:
    """A short hex digest of `cpu_identity()`: equal on CPUs that execute the same instructions."""
    canonical = json.dumps(cpu_identity(cpuinfo), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]


def cpu_name(cpuinfo: str | None = None) -> str:
    """A human name for messages, e.g. "AMD EPYC (x86_64)"."""
    identity = cpu_identity(cpuinfo)
    cpus = identity.get("cpus")
    name = ""
    if isinstance(cpus, list) and cpus:
        first = cpus[0]
        name = first.get("model name") or first.get("cpu") or first.get("uarch") or first.get("CPU part", "")
    name = name or str(identity.get("processor") or "") or "unknown CPU"
    return f"{name} ({identity['machine']})"
