"""Evaluate a release on a scenario's test data, in the routing modes of the FedRouter paper.

Per test prompt, whose greedy answer counts:

- `global`: the adapter the release's Router picks among all clusters (the gateway's `model="auto"`);
- `local`: the Router among the clusters the prompt's client trained (the manifest's
  `client_clusters`; the paper's local mode); prompts of no known client fall back to global;
- `oracle`: per task, the adapter that scores best on it (an upper bound on routing), picked on
  `validation` samples of the task when given (the benchmark passes training-part prompts: never
  a test prompt), else on the task's first `probe` test prompts;
- `client`: the client's own adapter (client-centric strategies: local, clustered, floral, fedavg);
- `base`: the base model without LoRA.

Answers are generated lazily, only for the (adapter, prompt) pairs some mode needs, in one
batched pass per answer length with the adapters mixed within a batch (PEFT's `adapter_names`). Scores: exact match (case- and punctuation-insensitive) or ROUGE-1 F1, per the task.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedrouter.router.release import Release, load_release
from fedrouter.training.data.scenarios import Scenario, tasks_named

HELD_OUT = -1  # "client" id of the held-out tasks
MODES = ("global", "local", "oracle", "client", "base")
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


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


class Answers:
    """Greedy answers of the base model (key "") and the release's adapters, made on demand."""

    def __init__(
        self,
        release: Release,
        prompts: list[str],
        lengths: list[int],
        batch_size: int | None = None,
        dtype: str = "float32",
    ):
        from fedrouter.training.model import device

        # 48 prompts a pass on the CPU; a GPU is nowhere near full at that size
        batch_size = batch_size or (256 if device().type == "cuda" else 48)
        self.release, self.prompts, self.lengths, self.batch_size = release, prompts, lengths, batch_size
        self.dtype = dtype
        self.cache: dict[str, dict[int, str]] = defaultdict(dict)
        self._model = self._tok = None

    def _load(self):
        from peft import PeftModel

        from fedrouter.training.model import hold_linear_in_bf16, load_base, load_tokenizer

        base_path = self.release.manifest.base_model.path
        self._tok = load_tokenizer(base_path)
        names = list(self.release.manifest.adapters)
        model = PeftModel.from_pretrained(
            load_base(base_path, self.dtype), str(self.release.adapter_dir(names[0])), adapter_name=names[0]
        )
        for n in names[1:]:
            model.load_adapter(str(self.release.adapter_dir(n)), adapter_name=n)
        self._model = hold_linear_in_bf16(model).eval()  # generate runs under autocast: the same values

    def get(self, needs: dict[str, list[int]]) -> None:
        """Generate what `needs` ({who: prompt indices}) asks for and the cache lacks: one batched
        pass per answer length, adapters mixed within a batch (PEFT's `adapter_names`; "__base__"
        for the base model), so the passes do not multiply with the number of adapters."""
        from fedrouter.training.model import generate

        todo = sorted((who, i) for who, idx in needs.items() for i in set(idx) - set(self.cache[who]))
        if not todo:
            return
        if self._model is None:
            self._load()
        by_len: dict[int, list[tuple[str, int]]] = defaultdict(list)  # one pass per answer length
        for who, i in todo:
            by_len[self.lengths[i]].append((who, i))
        for length, pairs in by_len.items():
            texts = [self.prompts[i] for _, i in pairs]
            names = [who or BASE_ADAPTER for who, _ in pairs]
            out = generate(self._model, self._tok, texts, length, self.batch_size, adapter_names=names)
            for (who, i), answer in zip(pairs, out):
                self.cache[who][i] = answer


def evaluate_release(
    release_path: str | Path,
    scenario: Scenario,
    modes: tuple[str, ...] = MODES,
    probe: int = 8,
    embedder=None,
    validation: list[dict] | None = None,
    dtype: str = "float32",
) -> dict:
    """Scores of a release per mode (mean, per task, per client), and routing agreement.

    `embedder`: the release's own (loaded from its manifest) unless given. `validation`: samples
    ({"task", "prompt", "response"}) the oracle picks each task's adapter on (`probe` per task);
    never scored. `dtype`: the base model's weights while generating (TrainConfig.base_dtype)."""
    from fedrouter.router.embed import load_embedder
    from fedrouter.router.router import Router

    release = load_release(release_path)
    m = release.manifest
    items = _items(scenario)
    task_names = sorted({s["task"] for _, s in items})
    val = [v for t in task_names for v in [v for v in validation or [] if v["task"] == t][:probe]]
    samples = [s for _, s in items] + val  # indices past len(items): validation, never scored
    prompts = [s["prompt"] for s in samples]
    tasks = [s["task"] for s in samples]
    known = tasks_named(tasks)
    metric = {t: known[t].metric if t in known else "exact" for t in set(tasks)}
    lengths = [known[t].max_new_tokens if t in known else 32 for t in tasks]
    answers = Answers(release, prompts, lengths, dtype=dtype)
    by_task = {t: [i for i in range(len(items)) if tasks[i] == t] for t in task_names}
    pick_on = {
        t: [i for i in range(len(items), len(samples)) if tasks[i] == t] or by_task[t][:probe] for t in task_names
    }

    def scores_of(who: str, idx: list[int]) -> list[float]:
        return [score(answers.cache[who][i], samples[i]["response"], metric[tasks[i]]) for i in idx]

    router = Router(release, embedder or load_embedder(m.embedder))
    vectors = router.embedder.embed(prompts[: len(items)])  # [N, dim]: the test prompts
    chosen: dict[str, list[str]] = {}
    if "global" in modes:
        chosen["global"] = [r.adapter or "" for r in router.route_vectors(vectors)]
    if "local" in modes and m.client_clusters:
        local = list(chosen.get("global") or [r.adapter or "" for r in router.route_vectors(vectors)])
        for c in sorted({c for c, _ in items}):
            allowed = router.clusters_of(str(c))
            idx = [i for i, (cc, _) in enumerate(items) if cc == c]
            if allowed is not None and idx:
                for i, r in zip(idx, router.route_vectors(vectors[idx], allowed)):
                    local[i] = r.adapter or ""
        chosen["local"] = local
    best: dict[str, str] = {}
    if "oracle" in modes:
        names = list(m.adapters)
        answers.get({n: [i for t in task_names for i in pick_on[t]] for n in names})
        best = {t: max(names, key=lambda n: np.mean(scores_of(n, pick_on[t]))) for t in task_names}
        chosen["oracle"] = [best[t] for t in tasks[: len(items)]]
    client_adapters = {int(k): v for k, v in m.training.get("client_adapters", {}).items()}
    if "client" in modes and client_adapters:
        chosen["client"] = [client_adapters.get(c, "") for c, _ in items]
    if "base" in modes:
        chosen["base"] = [""] * len(items)
    needs: dict[str, list[int]] = defaultdict(list)
    for who in chosen.values():
        for i, w in enumerate(who):
            needs[w].append(i)
    answers.get(needs)

    result: dict = {
        "release": str(release.path),
        "strategy": m.training.get("strategy"),
        "n": len(items),
        "modes": {},
        "per_task": {},
        "per_client": {},
        "metric": metric,
        "oracle_adapters": best,
        "oracle_picked_on": "validation" if val else "test",
    }
    for mode, who in chosen.items():
        s = np.array([scores_of(w, [i])[0] for i, w in enumerate(who)])
        result["modes"][mode] = float(s.mean())
        result["per_task"][mode] = {t: float(s[by_task[t]].mean()) for t in task_names}
        result["per_client"][mode] = {
            str(c): float(s[[i for i, (cc, _) in enumerate(items) if cc == c]].mean())
            for c in sorted({c for c, _ in items})
        }
    if best and "global" in chosen:
        agree = [chosen["global"][i] == best[tasks[i]] for i in range(len(items))]
        result["routing_agrees_with_oracle"] = float(np.mean(agree))
    if "global" in chosen:  # how consistently one task's prompts go to one adapter (label-free of scores)
        majority = [
            max(np.unique([chosen["global"][i] for i in by_task[t]], return_counts=True)[1]) for t in task_names
        ]
        result["routing_purity"] = float(sum(majority) / sum(len(by_task[t]) for t in task_names))
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
