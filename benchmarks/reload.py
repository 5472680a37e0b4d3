"""Hot reload under load: how long a swap takes, what it costs the requests in flight, and
whether any is lost.

Default models: SmolLM2-135M under vLLM, all-MiniLM-L6-v2 routing, 3 LoRA adapters per release.
8 clients send routed chat requests back to back (16 new tokens each); after a steady phase the
gateway is asked to reload release v2 (`POST /admin/reload`), whose adapters have other weights (so
vLLM registers each under a new name while traffic flows); traffic goes on, then stops.

    python -m benchmarks.reload [--clients 8] [--steady-s 20]

Writes benchmarks/results/reload.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.gateway_overhead import percentile
from benchmarks.stack import PROBES, RESULTS, TASKS, bench_releases, gateway, machine, vllm_names
from fedrouter.serving.launch import Traffic

TOKEN = "bench-token"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--steady-s", type=float, default=20.0, help="traffic before and after the reload")
    ap.add_argument("--work", default="runs/bench")
    args = ap.parse_args()

    work = Path(args.work) / "reload"
    bench_releases(work, ["v1", "v2"])
    v1_only = set(vllm_names(work / "releases" / "v1").values()) - set(vllm_names(work / "releases" / "v2").values())
    if len(v1_only) != len(TASKS):  # v2 cached by an older version of this benchmark, with v1's weights
        raise SystemExit(f"release v2 shares adapters with v1; delete {work / 'releases' / 'v2'} and run again")

    os.environ["FEDROUTER_ADMIN_TOKEN"] = TOKEN
    with gateway(work / "releases" / "v1", work / "logs") as stack:
        traffic = Traffic(stack.url, PROBES, clients=args.clients, max_tokens=16).start()
        time.sleep(args.steady_s)
        asked = time.monotonic()
        r = httpx.post(
            f"{stack.url}/admin/reload",
            json={"release": str((work / "releases" / "v2").resolve())},
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=300,
        )
        answered = time.monotonic()
        r.raise_for_status()
        time.sleep(args.steady_s)
        traffic.stop()
        rows = [row[:4] for row in traffic.results]  # (sent, done, status, release)
        served = httpx.get(f"{stack.url}/admin/health", headers={"authorization": f"Bearer {TOKEN}"}).json()
        unloaded = not (v1_only & set(served["backends"][0]["served"]))

    def lat(sel) -> dict:
        xs = [(d - s) * 1000 for s, d, st, _ in rows if sel(s, d)]
        return {
            "n": len(xs),
            "p50_ms": round(statistics.median(xs), 1) if xs else None,
            "p99_ms": round(percentile(xs, 99), 1) if xs else None,
        }

    result = {
        "benchmark": "reload",
        "machine": machine(),
        "settings": {
            "base": "SmolLM2-135M-Instruct",
            "adapters_per_release": len(TASKS),
            "clients": args.clients,
            "max_tokens": 16,
            "steady_s": args.steady_s,
        },
        "reload_request_to_switch_s": round(answered - asked, 3),
        "switch_s_reported": r.json().get("switch_s"),
        "requests": len(rows),
        "failed_requests": sum(1 for row in rows if row[2] != 200),
        "responses_by_release": {rel: sum(1 for row in rows if row[3] == rel) for rel in ("v1", "v2")},
        "sent_after_switch_answered_by_v1": sum(1 for s, _, _, rel in rows if s > answered and rel == "v1"),
        "old_adapters_unloaded": unloaded,
        "latency": {
            "before": lat(lambda s, d: d < asked),
            "in_flight_during_swap": lat(lambda s, d: s <= answered and d >= asked),
            "after": lat(lambda s, d: s > answered),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reload.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
