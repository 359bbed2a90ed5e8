"""Child processes that must not outlive whoever started them."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent goes away; None elsewhere.

    Linux ties this to the thread that forked the child, not the whole process: start children from the main
    thread (or one that lives as long as they should), and stop them yourself too.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


DIE_WITH_PARENT = parent_death_signal()
