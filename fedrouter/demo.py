"""`fedrouter demo` (`make demo`): the whole loop on the default models, explained as it runs.

federate (Flower simulation) -> release v1 -> vLLM + gateway -> routed answers, scored
-> retrain on new data -> release v2 -> hot reload under traffic -> shut down.
What exists already (releases of an earlier run) is reused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from fedrouter.serving import launch

RUN = Path("runs/demo")
TOKEN = "demo-admin-token"
console = Console(width=None if sys.stdout.isatty() else 140)  # logs and CI: keep the tables one line a row


def _step(n: int, text: str) -> None:
    console.rule(f"[bold]{n}. {text}")


def _train(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "fedrouter.cli", "train", *args], check=True)


def _start_gateway(release: Path, log_dir: Path) -> launch.Launched:
    with console.status("starting vLLM with every adapter of the release, then the gateway (~30-60 s)"):
        args = [
            "--release",
            str(release),
            "--vllm-log",
            str(log_dir / "vllm.log"),
        ]
        gw = launch.start_gateway(args, log=log_dir / "gateway.log", env={"FEDROUTER_ADMIN_TOKEN": TOKEN})
    console.print(f"gateway up on {gw.url} in {gw.start_s:.0f} s (logs: {log_dir})")
    return gw


def _ask(client: httpx.Client, url: str, model: str, prompt: str) -> httpx.Response:
    return client.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 12, "temperature": 0},
    )


def _score_table(url: str, samples: list[dict], title: str) -> float:
    """Held-out prompts (never seen in training) answered three ways: routed (`auto`), by another
    cluster's adapter (what a wrong route or one adapter for every task gives), and by the base."""
    from fedrouter.training.evaluate import score

    table = Table(title=title, show_lines=False)
    # (title, width): fixed widths keep every column readable in a 140-column log
    for col, width in (
        ("held-out prompt", 34),
        ("routed to", 9),
        ("answer", 14),
        ("expected", 9),
        ("ok", 3),
        ("other", 9),
        ("its answer", 14),
        ("ok", 3),
        ("base ok", 7),
    ):
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=width, max_width=width)
    right = other_right = base_right = 0
    with httpx.Client(timeout=120) as client:
        base = _base(url, client)
        adapters = _adapters(url, client)
        for s in samples:
            r = _ask(client, url, "auto", s["prompt"])
            answer = r.json()["choices"][0]["message"]["content"].strip()
            routed = r.headers["x-fedrouter-adapter"]
            other = adapters[(adapters.index(routed) + 1) % len(adapters)] if routed in adapters else adapters[0]
            o = _ask(client, url, other, s["prompt"]).json()["choices"][0]["message"]["content"].strip()
            b = _ask(client, url, base, s["prompt"]).json()["choices"][0]["message"]["content"]
            ok, other_ok = score(answer, s["response"], "exact") == 1.0, score(o, s["response"], "exact") == 1.0
            base_ok = score(b, s["response"], "exact") == 1.0
            right, other_right, base_right = right + ok, other_right + other_ok, base_right + base_ok
            table.add_row(
                s["prompt"][:44],
                routed,
                answer[:20],
                s["response"],
                "[green]yes[/]" if ok else "[red]no[/]",
                other,
                o[:20],
                "yes" if other_ok else "no",
                "yes" if base_ok else "no",
            )
    console.print(table)
    n = len(samples)
    console.print(
        f"routed adapters: [bold]{right}/{n}[/] right; another cluster's adapter: {other_right}/{n}; "
        f"the base model alone: {base_right}/{n}.\nThe prompts are held out: their entities and numbers never "
        "occur in training. The gap between the first two is what routing buys."
    )
    return right / n


def _adapters(url: str, client: httpx.Client) -> list[str]:
    return [m["id"] for m in client.get(f"{url}/v1/models").json()["data"] if m["parent"] and m["id"] != "auto"]


def _base(url: str, client: httpx.Client) -> str:
    return next(m["id"] for m in client.get(f"{url}/v1/models").json()["data"] if m["parent"] is None)


def main() -> None:
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.data.scenarios import scenario_from_config

    started = time.monotonic()
    releases = RUN / "releases"
    _step(1, "federated training: 4 clients, 2 tasks each, data never leaves a client")
    console.print(
        "Each client embeds its prompts (the default embedder: a token table distilled from all-MiniLM-L6-v2),\n"
        "clusters them locally, and sends only centroids;\n"
        "the server clusters those into task clusters, and every client trains the LoRA of its clusters.\n"
        "Adapters are averaged within each cluster (FedRouter on Flower, simulation engine)."
    )
    if (releases / "v1").is_dir():
        console.print(f"release v1 exists in {releases}: reusing it (rm -rf {RUN} to train again)")
    else:
        _train(["--out", str(RUN), "--strategy", "fedrouter", "--scenario", "dual"])
    # a few held-out prompts of every client's tasks (the demo trains with the default settings)
    samples = [
        s for c in scenario_from_config(TrainConfig(out=str(RUN))).clients for s in c.test[6::12]
    ]  # 2 per task and client

    _step(2, "serve release v1: vLLM with every adapter + the routing gateway")
    logs = RUN / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    gw = _start_gateway(releases / "v1", logs)
    url = gw.url
    try:
        _step(3, 'model="auto": each prompt goes to the adapter of its nearest task cluster')
        _score_table(url, samples, "release v1, routed")

        _step(4, "retrain on new data -> release v2 (starts from v1's adapters and clusters)")
        if (releases / "v2").is_dir():
            console.print("release v2 exists: reusing it")
        else:
            _train(["--resume", str(RUN), "--rounds", "1", "--seed", "1"])

        _step(5, "hot reload v1 -> v2 while 8 clients keep sending requests")
        traffic = launch.Traffic(url, [s["prompt"] for s in samples], clients=8, max_tokens=12).start()
        time.sleep(3)
        r = httpx.post(
            f"{url}/admin/reload",
            json={"release": str((releases / "v2").resolve())},
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=300,
        )
        console.print(f"reload: {r.json()}")
        time.sleep(4)
        traffic.stop()
        seen = Counter((row[3] if row[2] else "error", row[2]) for row in traffic.results)
        failed = len(traffic.failures())
        for (rel, status), n in sorted(seen.items(), key=str):
            console.print(f"  {n:4d} responses from release {rel} (HTTP {status})")
        console.print(f"failed requests across the reload: [bold]{failed}[/]")
        _score_table(url, samples, "release v2, routed")
    finally:
        _step(6, "shut down")
        launch.stop(gw, grace_s=120)
        console.print("gateway and vLLM stopped")
    console.print(
        f"demo done in {time.monotonic() - started:.0f} s. Releases: {releases}; "
        f"try: fedrouter release inspect {releases / 'latest'}"
    )
