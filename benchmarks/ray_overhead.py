"""What the Ray Serve path adds to one short request, against the single gateway, and how long a
publish takes to reach every ingress replica.

Both paths end at the same stand-in for vLLM (benchmarks/stub_vllm.py, answers at once), so the
difference is the hops alone: single gateway = uvicorn + gateway + HTTP to the stub; Ray = Serve's
proxy + ingress replica (the same gateway code) + DeploymentHandle call + engine replica + HTTP to
the stub. One ingress and one engine replica on a local Ray cluster (`ray.init(num_cpus=2)`), the
static embedder for `auto`. Requests go one at a time (concurrency 1), interleaved and rotated, as
in gateway_overhead.py: `--runs` runs of `--n` rounds, each run's p50 per path, the result the
median over runs. Then `--publishes` publishes alternate v2 / v1 (`fedrouter release publish`'s
code): seconds from the config update to every ingress replica serving the release.

    python -m benchmarks.ray_overhead [--n 200] [--runs 3] [--publishes 4]

`--front proxy` puts Serve's proxy in front of the ingress replicas instead of letting them listen
on the port themselves; `--data-plane handle` sends every request from the ingress to the engine as a DeploymentHandle
call instead of over HTTP to the engine replica's door (serving/ray/door.py); `--router serve`
(handle only) uses Serve's own request router for the engines instead of the ring.
`--serve-env K=V` (repeatable) sets Ray Serve switches in every replica (RaySpec.serve_env), e.g.
RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0. Writes benchmarks/results/ray_overhead.json, or
`--out NAME`.json (a variant rendered beside it). Throughput at concurrency 8-32 with real vLLM
replicas, and the share of home hits under load: benchmarks/ray_throughput.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.stack import PROBES, RESULTS, TASKS, bench_releases, free_port, gateway, machine
from fedrouter.cli.cluster import add_path_flags

# <where>_<model>; "models" is GET /v1/models, answered by the gateway itself: on Ray it costs
# the proxy -> ingress hop alone, so (explicit - models) is the engine hop
PATHS = ("stub_direct", "gateway_explicit", "ray_explicit", "gateway_auto", "ray_auto", "gateway_models", "ray_models")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="rounds per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--publishes", type=int, default=4)
    ap.add_argument("--work", default="runs/bench/ray")
    ap.add_argument("--router", choices=["ring", "serve"], default="ring", help="the engines' request router")
    add_path_flags(ap)  # --front, --data-plane
    ap.add_argument(
        "--serve-env", action="append", default=[], metavar="K=V", help="a Ray Serve switch in every replica"
    )
    ap.add_argument("--out", default="ray_overhead", help="results/NAME.json")
    args = ap.parse_args()

    import ray

    from fedrouter.serving.ray.app import RaySpec
    from fedrouter.serving.ray.cluster import deploy, publish

    v1, v2 = bench_releases(Path(args.work), ["v1", "v2"], embedder_kind="static")
    stub_port, ray_port = free_port(), free_port()
    stub = subprocess.Popen([sys.executable, "-m", "benchmarks.stub_vllm", str(stub_port)])
    stub_url = f"http://127.0.0.1:{stub_port}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.monotonic()
    spec = RaySpec(
        release=str(Path(v1).resolve()),
        engine="attached",
        router=args.router,
        data_plane=args.data_plane,
        front=args.front,
        engine_options={"url": stub_url},
        engine_num_cpus=0.5,
        ingress_num_cpus=0.5,
        serve_env=dict(kv.split("=", 1) for kv in args.serve_env),
    )
    deploy(spec, port=ray_port)
    deploy_s = time.monotonic() - started
    runs: list[dict[str, list[float]]] = []
    try:
        # the stub answers any route on loopback (no vLLM to protect): the attach check would refuse it
        with gateway(
            v1, Path(args.work) / "logs", backends=[stub_url], env={"FEDROUTER_ALLOW_OPEN_BACKEND": "1"}
        ) as stack:
            clients = {
                "stub": httpx.Client(base_url=stub_url, timeout=60),
                "gateway": httpx.Client(base_url=stack.url, timeout=60),
                "ray": httpx.Client(base_url=f"http://127.0.0.1:{ray_port}", timeout=60),
            }
            for run in range(args.runs):
                lat: dict[str, list[float]] = {p: [] for p in PATHS}
                for i in range(args.n + 10):  # the first 10 rounds warm up and are dropped
                    adapter = list(TASKS)[i % len(TASKS)]
                    order = PATHS[i % len(PATHS) :] + PATHS[: i % len(PATHS)]  # no position bias
                    for path in order:
                        where, how = path.split("_")
                        model = {"direct": "stub-base", "explicit": adapter, "auto": "auto", "models": ""}[how]
                        body = {"model": model, "prompt": PROBES[i % len(PROBES)], "max_tokens": 1}
                        t = time.perf_counter()
                        if how == "models":
                            r = clients[where].get("/v1/models")
                        else:
                            r = clients[where].post("/v1/completions", json=body)
                        ms = (time.perf_counter() - t) * 1000
                        r.raise_for_status()
                        if i >= 10:
                            lat[path].append(ms)
                runs.append(lat)
                print(f"run {run}: " + "  ".join(f"{p} {statistics.median(v):.2f}" for p, v in lat.items()), flush=True)
        publishes = []
        for i in range(args.publishes):
            target = v2 if i % 2 == 0 else v1
            publishes.append(publish(str(Path(target).resolve()))["seconds"])
            print(f"publish {Path(target).name}: {publishes[-1]} s", flush=True)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        stub.kill()

    def p50s(path: str) -> list[float]:
        return [round(statistics.median(r[path]), 3) for r in runs]

    def added(path: str, over: str) -> float:
        return round(statistics.median(a - b for a, b in zip(p50s(path), p50s(over))), 3)

    result = {
        "benchmark": "ray_overhead",
        "machine": machine(),
        "settings": {
            "n": args.n,
            "runs": args.runs,
            "router": args.router,
            "data_plane": args.data_plane,
            "front": args.front,
            "ingress_replicas": 1,
            "engine_replicas": 1,
            "embedder": "static",
            "serve_env": spec.serve_env,
        },
        "p50_ms": {p: p50s(p) for p in PATHS},
        "ray_over_gateway_ms": {
            "explicit": added("ray_explicit", "gateway_explicit"),
            "auto": added("ray_auto", "gateway_auto"),
        },
        "gateway_over_stub_ms": added("gateway_explicit", "stub_direct"),
        "ray_models_over_gateway_ms": added("ray_models", "gateway_models"),  # Serve's proxy -> ingress hop
        "deploy_s": round(deploy_s, 1),
        "publish_s": publishes,
    }
    out = RESULTS / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def render(r: dict) -> str:
    m = r["machine"]
    plane = r["settings"].get("data_plane", "handle")  # results before the doors: every request a handle call
    hop = "HTTP to the engine replica's door" if plane == "direct" else "the handle call to the engine replica"
    front = r["settings"].get("front", "proxy")  # results before the ingress listened itself: Serve's proxy
    rows = [
        f"### Ray Serve path against the single gateway, stub engine ({m['cores']} cores {m['cpu']}, "
        f"Python {m['python']}, Ray ingress + 1 engine replica, {r['settings'].get('router', 'ring')} router, "
        f"front `{front}`, data plane `{plane}`, {m['date']})",
        "",
        "Ray Serve switches in the replicas: "
        + (", ".join(f"`{k}={v}`" for k, v in r["settings"].get("serve_env", {}).items()) or "Ray's defaults")
        + ".",
        "",
        "| path | p50 per run (ms) |",
        "|---|---|",
    ]
    rows += [f"| {p} | {', '.join(f'{x:.2f}' for x in r['p50_ms'][p])} |" for p in PATHS]
    over = r["ray_over_gateway_ms"]
    rows += [
        "",
        f"Added by the Ray path over the single gateway (median over runs of the p50 difference): explicit "
        f"adapter {over['explicit']:.2f} ms, `auto` {over['auto']:.2f} ms (goal ≤ 2 ms); the gateway over the "
        f"stub itself: {r['gateway_over_stub_ms']:.2f} ms. Of the Ray path's extra, "
        + (
            "Serve's proxy -> ingress hop (`/v1/models`, answered by the ingress) is "
            if front == "proxy"
            else "the ingress replica's own answer to `/v1/models` (no proxy) costs, over the single gateway's, "
        )
        + f"{r['ray_models_over_gateway_ms']:.2f} ms; the rest is "
        + (
            "the request's body (a replica fetches it from the proxy: one more actor call) and "
            if front == "proxy"
            else ""
        )
        + f"{hop}. Both paths end at the same stub "
        f"(answers at once): "
        + ("Serve's proxy, " if front == "proxy" else "")
        + f"{hop} and the engine replica are the difference. Deploy (ingress + engine, "
        f"local cluster): {r['deploy_s']} s. Publish to every ingress replica: {r['publish_s']} s. Throughput "
        "with real vLLM replicas and home-hit share under load: `benchmarks/ray_throughput.py`. On this "
        f"shared 2-core machine Ray's own processes (raylet, GCS, controller{', proxy' if front == 'proxy' else ''}) and both replicas compete "
        "with the client for the same cores.",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
