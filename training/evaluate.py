"""Evaluate a release on a scenario's test data, routing exactly as the gateway routes.

Every test prompt is answered (greedy) by the base model and by every adapter of the release
once; the modes then pick, per prompt, whose answer counts:

- `routed`: the adapter the release's Router picks (the gateway's `model="auto"`);
- `oracle`: per task, the adapter that scores best on it (an upper bound on routing);
- `client`: the client's own adapter (client-centric strategies: local, clustered, floral, fedavg);
- `base`: the base model without LoRA.

Scores: exact match (case- and punctuation-insensitive) or ROUGE-1 F1, per the task.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedrouter.router.release import Release, load_release
from fedrouter.training.data.scenarios import Scenario, all_tasks

HELD_OUT = -1  # "client" id of the held-out tasks


def normalise(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.strip().lower()).strip()


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"])


def score(prediction: str, reference: str, metric: str) -> float:
    if metric == "rouge1":
        return _rouge().score(reference, prediction)["rouge1"].fmeasure
    pred = normalise(prediction)
    ref = normalise(reference)
    return float(pred == ref or pred.split("\n")[0].strip() == ref)


def _items(scenario: Scenario) -> list[tuple[int, dict]]:
    items = [(c, s) for c, data in enumerate(scenario.clients) for s in data.test]
    return items + [(HELD_OUT, s) for s in scenario.held_out]


def answer_all(
    release: Release, prompts: list[str], max_new_tokens: dict[str, int], tasks: list[str]
) -> dict[str, list[str]]:
    """Greedy answers of the base model (key "") and of every adapter, for every prompt."""
    from peft import PeftModel

    from fedrouter.training.model import generate, load_base, load_tokenizer

    base_path = release.manifest.base_model.path
    tok = load_tokenizer(base_path)
    names = list(release.manifest.adapters)
    model = PeftModel.from_pretrained(load_base(base_path), str(release.adapter_dir(names[0])), adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(str(release.adapter_dir(n)), adapter_name=n)
    model.eval()
    by_len: dict[int, list[int]] = defaultdict(list)  # one generate call per answer length
    for i, t in enumerate(tasks):
        by_len[max_new_tokens.get(t, 8)].append(i)
    out: dict[str, list[str]] = {}
    for who in ["", *names]:
        answers = [""] * len(prompts)
        for length, idx in by_len.items():
            if who:
                model.set_adapter(who)
                texts = generate(model, tok, [prompts[i] for i in idx], length)
            else:
                with model.disable_adapter():
                    texts = generate(model, tok, [prompts[i] for i in idx], length)
            for i, t in zip(idx, texts):
                answers[i] = t
        out[who] = answers
    return out


def evaluate_release(release_path: str | Path, scenario: Scenario) -> dict:
    from fedrouter.router.embed import load_embedder
    from fedrouter.router.router import Router

    release = load_release(release_path)
    items = _items(scenario)
    prompts = [s["prompt"] for _, s in items]
    tasks = [s["task"] for _, s in items]
    known = all_tasks()
    metric = {t: known[t].metric if t in known else "exact" for t in set(tasks)}
    lengths = {t: known[t].max_new_tokens if t in known else 32 for t in set(tasks)}
    answers = answer_all(release, prompts, lengths, tasks)
    scores = {
        who: np.array([score(a, s["response"], metric[s["task"]]) for a, (_, s) in zip(ans, items)])
        for who, ans in answers.items()
    }  # who -> [N]

    routes = Router(release, load_embedder(release.manifest.embedder)).route_batch(prompts)
    routed_to = [r.adapter or "" for r in routes]
    task_names = sorted(set(tasks))
    matrix = {
        who: {t: float(np.mean([scores[who][i] for i in range(len(items)) if tasks[i] == t])) for t in task_names}
        for who in scores
    }
    best = {t: max((w for w in scores if w), key=lambda w: matrix[w][t]) for t in task_names}
    client_adapters = {int(k): v for k, v in release.manifest.training.get("client_adapters", {}).items()}

    chosen = {
        "routed": routed_to,
        "oracle": [best[t] for t in tasks],
        "base": [""] * len(items),
    }
    if client_adapters:
        chosen["client"] = [client_adapters.get(c, "") for c, _ in items]
    result: dict = {
        "release": str(release.path),
        "strategy": release.manifest.training.get("strategy"),
        "n": len(items),
        "modes": {},
        "per_task": {},
        "per_client": {},
    }
    for mode, who in chosen.items():
        s = np.array([scores[w][i] for i, w in enumerate(who)])
        result["modes"][mode] = float(s.mean())
        result["per_task"][mode] = {
            t: float(s[[i for i in range(len(items)) if tasks[i] == t]].mean()) for t in task_names
        }
        result["per_client"][mode] = {
            str(c): float(s[[i for i, (cc, _) in enumerate(items) if cc == c]].mean())
            for c in sorted({c for c, _ in items})
        }
    result["routing_agrees_with_oracle"] = float(np.mean([routed_to[i] == best[tasks[i]] for i in range(len(items))]))
    result["matrix"] = {(w or "base"): v for w, v in matrix.items()}
    result["metric"] = metric
    return result


def markdown_table(result: dict) -> str:
    modes = list(result["modes"])
    tasks = list(next(iter(result["per_task"].values())))
    lines = ["| mode | all | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 2) + "|"]
    for m in modes:
        lines.append(
            f"| {m} | {result['modes'][m]:.3f} | " + " | ".join(f"{result['per_task'][m][t]:.3f}" for t in tasks) + " |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result["modes"])
    tasks = list(next(iter(result["per_task"].values())))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 3.6))
    width = 0.8 / len(modes)
    for j, m in enumerate(modes):
        ax.bar(
            np.arange(len(tasks)) + j * width,
            [result["per_task"][m][t] for t in tasks],
            width,
            label=f"{m} ({result['modes'][m]:.2f})",
        )
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20)
    ax.set_ylabel("score (exact match / ROUGE-1)")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"{result['strategy']}: score per task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
