"""Throughput of the same work on two real vLLM replicas: the single gateway (`--backend` x2) against
Ray Serve (ingress + 2 engine replicas, each supervising its vLLM), and how often Ray answers an
adapter's request on the adapter's home replica.

Both setups serve one release of the tiny model from tests/tiny.py (starts fast) with its LoRA
adapters, and run at once: the gateway attaches to 2 standalone vLLMs (as benchmarks/replicas.py
starts them), Ray runs on a local cluster (`ray.init(num_cpus=2)`) with the engine replicas at
fractional CPUs. Each vLLM computes on a core of its own: Ray's engine replicas choose theirs by rank
on the node (serving/ray/engine.py `cpu_binding`) and the gateway's two are bound the same way (vLLM's
default would put all four on core 0). `--min-inflight N` sets both setups' affinity_min_inflight. At each concurrency level, `--rounds` rounds of one closed-loop window per setup
(order alternated per round: A B, B A), streamed chat completions of `--max-tokens` tokens
(`ignore_eos`), each naming an adapter in turn. Throughput is counted inside each window
(benchmarks/serving.py `load`); the result is the median over rounds of the same round's Ray /
gateway ratio. Home hits: each engine replica counts the requests it answered per adapter (the
engine's `served()`); the home is the replica the ring router ranks first for the adapter's content
name (serving/ray/ring_router.py), so the share is counted, not inferred from routing. The single
gateway's share is its own count (/metrics: adapter requests placed on their home replica, or
spilled past the load bound), under the same bound. Where the CPU goes: every process's user +
system time over each window, by part (client, gateway or ingress, engine replicas, Ray's own
processes, vLLM), per request answered.

    python -m benchmarks.ray_throughput [--levels 8,32] [--seconds 4] [--rounds 2] [--max-tokens 16]

Writes benchmarks/results/ray_throughput.json, or `--out NAME`.json (rendered by `python -m
benchmarks.report`). `--front proxy`: Serve's proxy in front of the ingress replicas;
`--data-plane handle`: Ray's ingress calls the engines through a DeploymentHandle per request
instead of over HTTP to their doors (serving/ray/door.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

from benchmarks.serving import load, summarize, timed_load
from benchmarks.stack import RESULTS, machine, metric_samples
from fedrouter.cli.cluster import add_path_flags

SETUPS = ("gateway", "ray")


def tiny_release(work: Path, adapters: int = 3) -> Path:
    """A release of the tiny Llama with `adapters` random LoRAs (built once per count): one per task
    of tests/tiny.py, and past 3 more of the same tasks' examples under new names (the benchmark
    names each adapter itself, so the router's centroids only need to exist)."""
    from fedrouter.router.build import build_release
    from fedrouter.router.embed import HashEmbedder
    from tests.tiny import TASK_EXAMPLES, make_lora, make_tiny_llama, write_examples

    release = work / "releases" / ("v1" if adapters == 3 else f"v1-{adapters}")
    if release.exists():
        return release
    tasks = list(TASK_EXAMPLES)
    names = {}  # adapter -> its task: math, geo, sentiment, math2, geo2, ...
    for i in range(adapters):
        task = tasks[i % len(tasks)]
        names[task if i < len(tasks) else f"{task}{i // len(tasks) + 1}"] = task
    base = work / "base"
    if not base.exists():
        make_tiny_llama(base)
    built = {n: make_lora(base, work / "adapters" / n, seed=i + 1) for i, n in enumerate(names)}
    examples = {n: TASK_EXAMPLES[t] for n, t in names.items()}
    build_release(
        release,
        base_model=str(base),
        base_name="tiny",
        adapters=built,
        examples=write_examples(work / f"examples-{adapters}", examples),
        embedder=HashEmbedder(256),
    )
    return release


def home_share(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], homes: dict[str, str]) -> dict:
    """Requests answered per adapter in a window (`after` - `before`, per replica: replica -> content
    name -> count) and the share answered by the adapter's home replica (`homes`: name -> replica)."""
    per: dict[str, Counter] = {name: Counter() for name in homes}
    for replica, counts in after.items():
        for name, n in counts.items():
            if name in per:
                per[name][replica] += n - before.get(replica, {}).get(name, 0)
    total = sum(sum(c.values()) for c in per.values())
    home = sum(c[homes[name]] for name, c in per.items())
    return {
        "requests": total,
        "on_home": home,
        "share": round(home / total, 4) if total else None,
        "per_adapter": {name: round(c[homes[name]] / sum(c.values()), 4) for name, c in per.items() if c.total()},
    }


def gateway_placements(url: str) -> Counter:
    """The single gateway's adapter placements so far, from its /metrics (see `placements`)."""
    import httpx

    return placements(httpx.get(f"{url}/metrics", timeout=10).text)


def placements(metrics: str) -> Counter:
    """Requests per placement in a gateway's /metrics text (`fedrouter_backend_requests`: home,
    spill or least-loaded, serving/backends.py), summed over its replicas."""
    counts: Counter = Counter()
    for labels, value in metric_samples(metrics, "fedrouter_backend_requests_total"):
        counts[labels.split('placement="', 1)[1].split('"', 1)[0]] += int(value)
    return counts


def gateway_home_share(before: Counter, after: Counter) -> dict:
    """The gateway's share of adapter requests placed on their home replica in a window, over those
    placed home or spilled past the load bound (the base model's, placed least-loaded, do not count)."""
    home, spilled = after["home"] - before["home"], after["spill"] - before["spill"]
    total = home + spilled
    return {"requests": total, "on_home": home, "share": round(home / total, 4) if total else None}


PARTS = ("client", "gateway", "gateway vLLM", "ray ingress", "ray engine", "ray vLLM", "ray system", "other")


def process_parts(gateway_pid: int) -> dict[int, tuple[str, float]]:
    """Every process of the machine: pid -> (its part of the two setups, CPU seconds used so far).
    Ray's replicas are told apart by their titles (ray::ServeReplica:APP:DEPLOYMENT); a process
    started by an engine replica is its vLLM; a vLLM this driver started is the gateway's; the
    rest of this driver's tree (raylet, GCS, Serve's controller and Ray's workers) is Ray's."""
    import psutil

    me = psutil.Process()
    part: dict[int, str] = {me.pid: "client", gateway_pid: "gateway"}
    procs = {p.pid: p for p in psutil.process_iter(["cmdline"])}
    for pid, p in procs.items():
        title = " ".join(p.info["cmdline"] or [])
        if "ServeReplica:" in title:
            own = "ray engine" if ":Engine" in title else "ray ingress"
            part[pid] = own
            if own == "ray engine":
                for child in _descendants(p):
                    part[child.pid] = "ray vLLM"
    for child in me.children():
        if child.pid not in part and "vllm" in " ".join(_cmdline(child)):
            for q in [child, *_descendants(child)]:
                part[q.pid] = "gateway vLLM"
    for q in _descendants(me):
        part.setdefault(q.pid, "ray system")
    used = {}
    for pid, p in procs.items():
        try:
            t = p.cpu_times()
        except Exception:  # gone meanwhile
            continue
        used[pid] = (part.get(pid, "other"), t.user + t.system)
    return used


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except Exception:
        return []


def _descendants(p) -> list:
    try:
        return p.children(recursive=True)
    except Exception:
        return []


def cpu_ms_per_request(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], answered: int
) -> dict:
    """CPU milliseconds each part used per request answered between two `process_parts` snapshots
    (a process born in between counts from zero)."""
    used = Counter()
    for pid, (part, seconds) in after.items():
        used[part] += seconds - (before[pid][1] if pid in before else 0.0)
    return {part: round(1000 * used[part] / answered, 2) if answered else None for part in PARTS}


def per_replica(homes: dict[str, str], replicas: int) -> list[int]:
    """Adapters whose home each replica is, most first, replicas that are no adapter's home included."""
    counts = sorted(Counter(homes.values()).values(), reverse=True)
    return counts + [0] * (replicas - len(counts))


def paired_ratios(windows: dict[str, list[dict]], key: str) -> list[float]:
    """Ray / gateway of `key` for each round (the same round's windows)."""
    return [round(r[key] / g[key], 3) if g[key] else float("nan") for g, r in zip(windows["gateway"], windows["ray"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="8,32")
    ap.add_argument("--seconds", type=float, default=4.0, help="window per setup, level and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--adapters", type=int, default=3, help="LoRA adapters in the release (named in turn)")
    ap.add_argument("--work", default="runs/bench/ray_throughput")
    add_path_flags(ap)  # --front, --data-plane
    ap.add_argument("--out", default="ray_throughput", help="results/NAME.json")
    ap.add_argument(
        "--ray-load-factor",
        type=float,
        default=None,
        help="the Ray ingress's affinity_load_factor (default: the gateway's, as the single gateway's)",
    )
    ap.add_argument(
        "--min-inflight",
        type=int,
        default=None,
        help="affinity_min_inflight of both setups (a home keeps its adapters below this many in flight; "
        "default: the gateway's)",
    )
    args = ap.parse_args()

    import ray
    from ray import serve

    from fedrouter.router.release import load_release
    from fedrouter.serving import launch
    from fedrouter.serving.ray.app import APP, RaySpec
    from fedrouter.serving.ray.cluster import deploy
    from fedrouter.serving.ray.engine import CPU_BIND, own_cores
    from fedrouter.serving.ray.ring_router import SeededRing
    from fedrouter.serving.registry import backend_adapter_name

    work = Path(args.work).resolve()
    release = tiny_release(work, args.adapters)
    rel = load_release(release)
    names = list(rel.manifest.adapters)
    content = {n: backend_adapter_name(n, rel.manifest.digests[n]) for n in names}
    slots = len(names)  # both setups: every vLLM has room for every adapter
    levels = [int(x) for x in args.levels.split(",")]
    load_avg = [os.getloadavg()]
    windows: dict[int, dict[str, list[dict]]] = {c: {s: [] for s in SETUPS} for c in levels}
    vllm_args = ["--max-loras", str(slots), "--max-cpu-loras", str(slots)]
    # each of the gateway's vLLMs on its own core, as Ray's engine replicas bind theirs (by rank on
    # the node, serving/ray/engine.py `cpu_binding`): vLLM's default binds every vLLM to core 0
    cores = [own_cores(i, 1, sorted(os.sched_getaffinity(0))) for i in range(2)]
    pins = [{CPU_BIND: c} for c in cores]
    with launch.vllm_servers(release, work / "logs", 2, extra_args=vllm_args, env=pins) as (urls, key):
        # the standalone vLLMs listen on loopback TCP (as in benchmarks/replicas.py): allowed here
        env = {"FEDROUTER_VLLM_API_KEY": key, "FEDROUTER_ALLOW_OPEN_BACKEND": "1"}
        floor = {} if args.min_inflight is None else {"affinity_min_inflight": args.min_inflight}
        env.update({f"FEDROUTER_{k.upper()}": str(v) for k, v in floor.items()})
        with launch.gateway(release, work / "logs" / "gateway", backends=urls, env=env) as gw:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                ray_port = launch.free_port()
                started = time.monotonic()
                spec = RaySpec(
                    release=str(release),
                    engine_replicas=2,
                    engine_num_cpus=0.5,
                    ingress_num_cpus=0.5,
                    models_per_replica=slots,
                    data_plane=args.data_plane,
                    front=args.front,
                    gateway={
                        **floor,
                        **({"affinity_load_factor": args.ray_load_factor} if args.ray_load_factor else {}),
                    },
                    engine_options={"kv_cache_gib": 2},
                )
                deploy(spec, port=ray_port, timeout_s=900)
                deploy_s = round(time.monotonic() - started, 1)
                engine = serve.get_deployment_handle("Engine", APP)
                served = _served(engine)
                ray_cores = sorted(_cores(engine).values())
                # the ring both Serve's router and the doors' chooser place with (ring_router.py)
                ring = SeededRing(sorted(content.values())).of(sorted(served))
                homes = {content[n]: ring.home(content[n]) for n in names}
                url = {"gateway": gw.url, "ray": f"http://127.0.0.1:{ray_port}"}
                turn = iter(range(10**9))

                def model_of(_prompt: str) -> str:
                    return names[next(turn) % len(names)]

                for setup in SETUPS:  # warm-up: every adapter loaded on its replicas
                    asyncio.run(load(url[setup], model_of, 4, 2, args.max_tokens))
                for c in levels:
                    for rnd in range(args.rounds):
                        for setup in SETUPS if rnd % 2 == 0 else SETUPS[::-1]:
                            before = _served(engine) if setup == "ray" else gateway_placements(gw.url)
                            cpu = process_parts(gw.proc.pid)
                            run = asyncio.run(timed_load(url[setup], model_of, c, args.seconds, args.max_tokens))
                            row = summarize([run])
                            row["cpu_ms_per_request"] = cpu_ms_per_request(
                                cpu, process_parts(gw.proc.pid), len(run["results"])
                            )
                            if setup == "ray":
                                row["home"] = home_share(before, _served(engine), homes)
                            else:
                                row["home"] = gateway_home_share(before, gateway_placements(gw.url))
                            row["load_avg_1m"] = round(os.getloadavg()[0], 2)
                            windows[c][setup].append(row)
                            print(f"c={c} round {rnd} {setup:7s} {row}", flush=True)
            finally:
                serve.shutdown()
                ray.shutdown()
    load_avg.append(os.getloadavg())
    result = {
        "benchmark": "ray_throughput",
        "machine": machine(),
        "settings": {
            "model": "tiny Llama (tests/tiny.py)",
            "adapters": len(names),
            "replicas": 2,
            "levels": levels,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "max_loras": slots,
            "ray_engine_num_cpus": spec.engine_num_cpus,
            "ray_router": spec.router,
            "ray_data_plane": spec.data_plane,
            "ray_front": spec.front,
            "ray_affinity_load_factor": spec.gateway.get("affinity_load_factor", "default"),
            "affinity_min_inflight": spec.gateway.get("affinity_min_inflight", "default"),
            "adapters_per_home_replica": per_replica(homes, 2),
            "vllm_cores": {"gateway": cores, "ray": ray_cores},
        },
        "load_avg_start_end": [[round(x, 2) for x in la] for la in load_avg],
        "deploy_s": deploy_s,
        "windows": {str(c): w for c, w in windows.items()},
        "ratios": {
            str(c): {
                "req_per_s": paired_ratios(w, "req_per_s"),
                "out_tok_per_s": paired_ratios(w, "out_tok_per_s"),
            }
            for c, w in windows.items()
        },
        "failed": {s: sum(x["failed"] for w in windows.values() for x in w[s]) for s in SETUPS},
    }
    for r in result["ratios"].values():
        r["median_out_tok_per_s"] = statistics.median(r["out_tok_per_s"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "windows")}, indent=2))


def _served(engine, key: str = "counts") -> dict[str, dict[str, int]]:
    """replica -> content name -> requests it answered (or `key` of its `served()`), from every engine
    replica (Serve picks the replica of a call without a model id, so it is asked until both were seen)."""
    seen: dict[str, dict[str, int]] = {}
    for _ in range(200):
        s = engine.served.remote().result()
        seen[s["replica"]] = s[key]
        if len(seen) == 2:
            return seen
    raise RuntimeError(f"only engine replicas {sorted(seen)} answered")


def _cores(engine) -> dict[str, str]:
    """replica -> the cores its vLLM computes on ("" where vLLM chose)."""
    return _served(engine, "cores")


# the parts each setup's requests run through, as cpu_table shows them
CPU_COLUMNS = {
    "gateway": {"front": ("gateway",), "engine replicas (Python)": (), "Ray's own": (), "vLLM": ("gateway vLLM",)},
    "ray": {
        "front": ("ray ingress",),
        "engine replicas (Python)": ("ray engine",),
        "Ray's own": ("ray system",),
        "vLLM": ("ray vLLM",),
    },
}


def cpu_table(windows: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Median over rounds of the CPU milliseconds per request each part of a setup used (windows
    measured since 2026-11-28; none before)."""
    if not any("cpu_ms_per_request" in x for w in windows.values() for ws in w.values() for x in ws):
        return []
    columns = list(CPU_COLUMNS["ray"])
    rows = [
        "",
        "CPU milliseconds per request answered, by part (median over rounds; user + system time of each "
        "process over the window, from /proc): where each setup's work goes on this machine's cores.",
        "",
        f"| c | setup | client | {' | '.join(columns)} | all but the client |",
        "|---|---|---|" + "---|" * (len(columns) + 1),
    ]
    for c, w in windows.items():
        for setup, ws in w.items():
            per = [x["cpu_ms_per_request"] for x in ws if "cpu_ms_per_request" in x]
            if not per:
                continue
            cell = {}
            for name, parts in CPU_COLUMNS[setup].items():
                cell[name] = statistics.median(sum(p[part] or 0 for part in parts) for p in per) if parts else None
            client = statistics.median(p["client"] or 0 for p in per)
            total = sum(v for v in cell.values() if v is not None)
            shown = [f"{cell[n]:.2f}" if cell[n] is not None else "–" for n in columns]
            rows.append(f"| {c} | {setup} | {client:.2f} | {' | '.join(shown)} | {total:.2f} |")
    return rows


def render(r: dict) -> str:
    s, m = r["settings"], r["machine"]
    homes = s["adapters_per_home_replica"]
    homes = homes + [0] * (s["replicas"] - len(homes))  # results written before per_replica listed idle ones
    strict = s.get("ray_affinity_load_factor", "default") != "default"  # Ray's homes kept past the gateway's bound
    floor = s.get("affinity_min_inflight", "default") != "default"
    rows = [
        f"### Ray Serve vs the single gateway, 2 real vLLM replicas each: {s['adapters']} adapters, "
        + ("strict homes" if strict else "the same load bound")
        + (f" with a floor of {s['affinity_min_inflight']} in flight" if floor else "")
        + f", data plane `{s.get('ray_data_plane', 'handle')}`"
        + (", each vLLM on its own core" if "vllm_cores" in s else ", every vLLM on core 0")
        + f" ({m['cores']} cores {m['cpu']}, vLLM {m['vllm']}, {m['date']})",
        "",
        f"{s['model']}, {s['adapters']} LoRA adapters (named in turn), streamed chat completions of "
        f"{s['max_tokens']} tokens, closed loop, {s['rounds']} rounds of {s['seconds']:.0f} s windows per setup and "
        f"level (order alternated). Gateway: `--backend` x2 (its affinity ring); Ray: ingress + 2 engine replicas "
        f"at {s['ray_engine_num_cpus']} CPU each, `{s['ray_router']}` router, front `{s.get('ray_front', 'proxy')}`, data plane "
        f"`{s.get('ray_data_plane', 'handle')}`"
        + (
            f", the ingress's affinity load factor {s['ray_affinity_load_factor']} (a request spills off its home "
            "past that multiple of the mean load in flight; the gateway's: 1.25)"
            if strict
            else ""
        )
        + (
            f"; both setups' `affinity_min_inflight` {s['affinity_min_inflight']} (a replica keeps its adapters' "
            f"requests while it has fewer than {s['affinity_min_inflight']} in flight, whatever the other holds)"
            if floor
            else ""
        )
        + f"; adapters per home replica {homes}. Ray deploy: {r['deploy_s']} s. "
        + (
            f"vLLM's compute threads on cores {' and '.join(s['vllm_cores']['gateway'])} (the gateway's two) and "
            f"{' and '.join(s['vllm_cores']['ray'])} (Ray's engine replicas, each choosing by its rank on the node)."
            if "vllm_cores" in s
            else "vLLM's default core binding (`auto`): **every vLLM's compute threads on core 0** (the other core "
            "left to vLLM's front ends), all four vLLMs of both setups on one core: a vLLM could hold its requests "
            "for seconds while the other answered, and the load bound then spilled its adapters' requests to the "
            "other, so the home shares below measure that more than placement (rerun with each vLLM on its own core "
            "where a section says so)."
        ),
        "",
        "| c | setup | req/s per round | out tok/s per round | failed | home share per round |",
        "|---|---|---|---|---|---|",
    ]
    for c, w in r["windows"].items():
        for setup, ws in w.items():
            home = ", ".join(str(x["home"]["share"]) for x in ws if "home" in x)  # the gateway's: since 2026-11-28
            rows.append(
                f"| {c} | {setup} | {', '.join(str(x['req_per_s']) for x in ws)} | "
                f"{', '.join(str(x['out_tok_per_s']) for x in ws)} | {sum(x['failed'] for x in ws)} | {home} |"
            )
    rows += [
        "",
        "| c | Ray / gateway out tok/s per round | median (goal ≥ 0.95) | req/s per round |",
        "|---|---|---|---|",
    ]
    for c, v in r["ratios"].items():
        rows.append(f"| {c} | {v['out_tok_per_s']} | {round(v['median_out_tok_per_s'], 3)} | {v['req_per_s']} |")
    rows += cpu_table(r["windows"])
    la = r["load_avg_start_end"]
    rows += [
        "",
        "Single rounds' pairs can disagree by more than any effect (compare them before the median): read "
        "the median against the goal only when most pairs agree.",
        "",
        f"Failed requests: gateway {r['failed']['gateway']}, Ray {r['failed']['ray']}. Load average 1/5/15 min at "
        f"start {la[0]}, at end {la[-1]} (per window in the JSON; other jobs, if any, show there): all four vLLMs, "
        "Ray's processes and the client share the machine's cores, so the paired rounds are the measure and short "
        "windows are noisy. Home share, Ray: requests each engine replica counted per adapter, over those the ring "
        "router ranks first; the gateway: its own count of adapter requests placed on their home replica (its "
        "/metrics `fedrouter_backend_requests`, placement home over home + spilled), "
        + (
            "under its own load bound (1.25x the mean in flight) where Ray's homes are strict."
            if strict
            else "under the same load bound as Ray's."
        ),
    ]
    if 0 not in homes and len(set(homes)) > 1 and not strict:
        top = max(homes) / sum(homes)
        rows += [
            "",
            f"Adapters per home replica {homes}: with every adapter named equally often, one replica is the home "
            f"of {top:.0%} of the requests, over the load bound's {1.25 / s['replicas']:.1%} (1.25 x the mean in "
            "flight) whenever the requests in flight are many; the bound spills the rest, in both setups alike, so "
            "the home share measures the bound as much as the placement; a release whose homes are even "
            "(`--adapters 8`: 4 and 4) shows how much of the spill is this imbalance.",
        ]
    if 0 in homes:
        rows += [
            "",
            f"**Ray's ring made one engine replica the home of every adapter** ({homes}): the ring router ranks "
            "replicas by hash alone (serving/ray/ring_router.py: no cap of ceil(K/n) homes per replica, which the "
            "single gateway's ring applies once it knows the adapters, serving/affinity.py `set_keys`; the "
            "gateway's placements were not counted in this run) and spills only at `max_ongoing_requests`, so all "
            "adapter traffic went to one engine replica. A 100% home share here means one vLLM did the work; the "
            "ratio then compares one replica against the gateway's two on the same shared cores.",
        ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
