"""SSE decoding cost: CPU seconds to decode n and 8n bytes fed one byte at a time (the worst case: a peer
trickling bytes) and in 4 KiB reads, for one large event and for a stream of small chunk-sized events. Linear
decoding keeps `ratio_8n` near 8; the old decoder, which rescanned its whole buffer on every feed, took 4.9 s
for 64 KiB of one event fed a byte at a time (quadratic: ratio ~64). Prints one JSON document.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable

from fedai.service.sse import SSEDecoder, format_sse

SIZES = (64 * 1024, 8 * 64 * 1024)


def one_event(n: int) -> bytes:
    return b"data: " + b"x" * n + b"\n\n"


def small_events(n: int) -> bytes:
    event = format_sse("chunk", b'{"seq":0,"delta":"' + b"y" * 200 + b'"}')
    return event * (n // len(event) + 1)


def decode(wire: bytes, step: int) -> float:
    decoder = SSEDecoder(max_event_bytes=len(wire) + 1)
    started = time.process_time()
    for i in range(0, len(wire), step):
        decoder.feed(wire[i : i + step])
    return time.process_time() - started


def case(make: Callable[[int], bytes], step: int) -> dict[str, float]:
    small, large = (decode(make(n), step) for n in SIZES)
    ratio = round(large / small, 2) if small else float("nan")
    return {"n_bytes": SIZES[0], "cpu_s_n": round(small, 4), "cpu_s_8n": round(large, 4), "ratio_8n": ratio}


def main() -> None:
    results = {
        f"{name}_step_{step}": case(make, step)
        for name, make in (("one_event", one_event), ("small_events", small_events))
        for step in (1, 4096)
    }
    meta = {"bench": "sse_decode", "python": sys.version.split()[0], "machine": platform.machine()}
    print(json.dumps({**meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
