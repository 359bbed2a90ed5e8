"""Envelope throughput: sign/s, full verify/s (id recomputed + signature), raw coincurve verify/s, and the ratio.

Prints one JSON document. Each figure is the median of several timed rounds (the machines are noisy).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable

from coincurve import PrivateKey, PublicKeyXOnly

from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.event import sign_event, verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest

ROUNDS = 7
PER_ROUND = 3000


def rate(fn: Callable[[], object], n: int = PER_ROUND, rounds: int = ROUNDS) -> float:
    """Median operations per second over `rounds` rounds of `n` calls."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append(n / (time.perf_counter() - start))
    return statistics.median(results)


def main() -> None:
    keys = Keys.generate()
    payload = InferenceRequest(model="bench-model", prompt="What is 2+2? " * 8, max_tokens=64)
    content = '{"model":"bench-model","prompt":"What is 2+2?","max_tokens":64}'
    event = sign_event(keys, Kind.INFER_REQUEST, content, [["p", keys.pubkey], ["nonce", "0" * 32]])
    envelope = seal(keys, Kind.INFER_REQUEST, payload, to=keys.pubkey, nonce=True).to_json()

    raw_priv = PrivateKey(bytes.fromhex(keys.secret_hex))
    digest = bytes.fromhex(event.id)
    sig = bytes.fromhex(event.sig)
    xonly = PublicKeyXOnly(bytes.fromhex(keys.pubkey))

    results = {
        "sign_per_s": rate(lambda: sign_event(keys, Kind.INFER_REQUEST, content, [["p", keys.pubkey]])),
        "coincurve_sign_schnorr_per_s": rate(lambda: raw_priv.sign_schnorr(digest)),
        "full_verify_per_s": rate(lambda: verify_event(event)),
        "raw_coincurve_verify_per_s": rate(lambda: xonly.verify(sig, digest)),
        "open_envelope_per_s": rate(
            lambda: open_envelope(
                envelope, InferenceRequest, kinds=(Kind.INFER_REQUEST,), recipient=keys.pubkey, skew_s=None
            )
        ),
    }
    results["verify_ratio"] = results["full_verify_per_s"] / results["raw_coincurve_verify_per_s"]
    results["sign_speedup_vs_coincurve"] = results["sign_per_s"] / results["coincurve_sign_schnorr_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "envelope",
                "machine": {"python": platform.python_version(), "arch": platform.machine()},
                "rounds": ROUNDS,
                "ops_per_round": PER_ROUND,
                "statistic": "median",
                "results": {k: round(v, 3 if k.endswith(("ratio", "coincurve")) else 0) for k, v in results.items()},
                "target": {"verify_ratio_min": 0.8},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
