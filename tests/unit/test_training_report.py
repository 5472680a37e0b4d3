"""The training report uses only comparable records: counted compute, commit, its profile's settings."""

from benchmarks.training_bench import PROFILE_KEYS, PROFILES, counted
from benchmarks.training_tables import markdown, paired, split

SETTINGS = {k: v for k, v in PROFILES["quick"].items() if k in PROFILE_KEYS} | {
    "lora_targets": "q_proj,v_proj",
    "train_per_task": 96,
}
MACHINE = {"cores": 2, "cpu": "x86_64", "torch": "2", "date": "2026-11-27"}


def record(strategy, seed, score, steps=6.0, samples=24.0, routing=None, **extra):
    r = {
        "profile": "quick",
        "regime": "dual",
        "strategy": strategy,
        "seed": seed,
        "routing": routing or ("global" if strategy == "fedrouter" else "none"),
        "embedder": "minilm",
        "score": score,
        "curve": None,
        "adapters": 1,
        "train_s": 1.0,
        "settings": dict(SETTINGS),
        "machine": MACHINE,
        "commit": {"rev": "abcdef1234567", "dirty": False},
        "counted": {"steps_per_client_round": steps, "samples_per_client_round": samples},
    }
    r.update(extra)
    return r


def settings(profile, lr):
    """A record's settings at `profile`, but for the lr."""
    return {k: v for k, v in PROFILES[profile].items() if k in PROFILE_KEYS} | {
        "lr": lr,
        "lora_targets": "q_proj,v_proj",
        "train_per_task": 96,
    }


def test_records_without_counts_or_with_other_settings_are_refused():
    ok = record("fedavg", 0, 0.5)
    old = {k: v for k, v in record("fedavg", 1, 0.5).items() if k != "counted"}
    other = record("fedavg", 2, 0.5)
    other["settings"]["local_steps"] = 12
    usable, refused = split([ok, old, other])
    assert usable == [ok]
    assert [why for _, why in refused] == [
        "no counted compute or commit",
        "settings differ from profile `quick`: local_steps",
    ]


def test_pairs_that_counted_different_compute_are_not_compared():
    rs = [record("fedrouter", s, 0.8, steps=12.0, samples=48.0) for s in (0, 1)]
    rs += [record("fedavg", s, 0.5) for s in (0, 1)] + [
        record("local", s, 0.6, steps=12.0, samples=48.0) for s in (0, 1)
    ]
    rs += [record("base", s, 0.1, steps=0.0, samples=0.0) for s in (0, 1)]
    d = paired(rs, "dual")
    assert "diff" not in d[("fedavg", "none")] and "12 vs 6 steps" in d[("fedavg", "none")]["unmatched"]
    assert abs(d[("local", "none")]["diff"][0] - 0.2) < 1e-9
    assert (
        abs(d[("base", "none")]["diff"][0] - 0.7) < 1e-9
    )  # the base model is a reference point, not a compute partner


def test_the_rendered_section_says_not_matched_and_lists_refusals(tmp_path):
    rs = [record("fedrouter", s, 0.8, steps=12.0, samples=48.0) for s in (0, 1)]
    rs += [record("fedavg", s, 0.5) for s in (0, 1)] + [record("base", s, 0.1, steps=0.0, samples=0.0) for s in (0, 1)]
    rs.append({k: v for k, v in record("fedavg", 5, 0.9).items() if k != "commit"})
    text = markdown(rs, png_dir=tmp_path)
    assert "Headline FedRouter − FedAvg: **not matched**" in text
    assert "| fedavg (none) | not matched: 12 vs 6 steps" in text
    assert "| base | none (compared) | 0.100" in text
    assert "Refused records of `quick`: 1 × no counted compute or commit" in text
    assert (tmp_path / "training_quick.png").exists()


def test_counted_compute_comes_from_the_clients_reports():
    history = [
        {"steps": {"0": 6, "1": 6}, "samples": {"0": 24, "1": 24}},
        {"steps": {"0": 6, "1": 3}, "samples": {"0": 24, "1": 12}},
    ]
    c = counted(history)
    assert c["steps_per_client_round"] == 5.25 and c["samples_per_client_round"] == 21.0
    assert c["steps_range"] == [3, 6] and c["samples_range"] == [12, 24]


def test_the_budget_is_called_converged_only_when_fedavgs_last_rounds_agree_within_their_error():
    from benchmarks.training_tables import convergence_line

    rising = [record("fedavg", s, 0.6, curve=[0.4, 0.6], n=100) for s in (0, 1)]
    assert "not converged" in convergence_line(rising, "dual")[0]  # Δ 0.2 against SE 0.035
    flat = [record("fedavg", s, 0.6, curve=[0.59, 0.6], n=100) for s in (0, 1)]
    assert "**converged**" in convergence_line(flat, "dual")[0]


def test_lr_sweep_records_may_differ_in_lr_only_and_swept_runs_must_use_the_chosen_lr(tmp_path):
    sweep = [record("fedavg", 0, sc, profile="quick-sweep") for sc in (0.2, 0.4)]
    sweep[0]["settings"]["lr"], sweep[1]["settings"]["lr"] = 3e-4, 3e-3
    chosen = {"grid": [3e-4, 3e-3], "scores": [0.2, 0.4], "chosen": 3e-3}
    good = record("fedavg", 0, 0.5, profile="quick-swept", lr_sweep=chosen)
    good["settings"]["lr"] = 3e-3
    wrong = record("fedavg", 1, 0.5, profile="quick-swept", lr_sweep=chosen)  # ran at the profile's 1e-3
    other = record("fedavg", 2, 0.5, profile="quick-sweep")
    other["settings"]["rounds"] = 9
    usable, refused = split([*sweep, good, wrong, other])
    assert usable == [*sweep, good]
    assert [why for _, why in refused] == [
        "lr is not the one its sweep chose",
        "settings differ from profile `quick-sweep`: rounds",
    ]
    text = markdown(usable, png_dir=tmp_path)
    assert "| dual | fedavg | 0.0003 | 0.200 | 0 |" in text and "| dual | fedavg | 0.003 | 0.400 | 0 |" in text
    assert "lr swept per regime and strategy (dual: fedavg 0.003)" in text


def test_the_swept_profile_uses_the_profiles_own_records_where_the_sweep_chose_its_lr(tmp_path):
    import json

    from benchmarks.training_tables import load, swept_records

    sweep = []
    for strategy, scores in (("fedavg", (0.2, 0.5, 0.4)), ("fedrouter", (0.3, 0.5, 0.6))):
        for lr, sc in zip((3e-4, 1e-3, 3e-3), scores):
            r = record(strategy, 0, sc, profile="quick-sweep")
            r["settings"]["lr"] = lr
            sweep.append(r)
    plain = [record(s, k, sc) for s, sc in (("fedavg", 0.5), ("fedrouter", 0.55), ("local", 0.4)) for k in (0, 1)]
    chosen = {"grid": [3e-4, 1e-3, 3e-3], "scores": [0.3, 0.5, 0.6], "chosen": 3e-3}
    ran = [record("fedrouter", k, 0.7, profile="quick-swept", lr_sweep=chosen) for k in (0, 1)]
    for r in ran:
        r["settings"]["lr"] = 3e-3
    rs, notes = swept_records([*sweep, *plain, *ran], "quick")
    assert sorted((r["strategy"], r["profile"], r["seed"]) for r in rs) == [
        ("fedavg", "quick", 0), ("fedavg", "quick", 1), ("fedrouter", "quick-swept", 0), ("fedrouter", "quick-swept", 1),
    ]  # fmt: skip
    assert notes == [
        "- dual fedavg: lr 0.001, the `quick` profile's own lr: its `quick` records (seeds [0, 1])",
        "- dual fedrouter: lr 0.003 (the largest of its grid: a wider grid might choose another), its own runs (seeds [0, 1])",
    ]
    assert swept_records([*sweep, *ran], "quick")[1][0] == (  # fedavg's chosen lr, without its `quick` records
        "- dual fedavg: lr 0.001, the `quick` profile's own lr: its `quick` records: none yet (not run at this profile)"
    )
    path = tmp_path / "runs.jsonl"  # the grid points of a sweep are all kept when read back
    path.write_text("".join(json.dumps(r) + "\n" for r in (*sweep, *plain, *ran)))
    assert (
        sorted(r["settings"]["lr"] for r in load(path) if r["profile"] == "quick-sweep")
        == [3e-4] * 2 + [1e-3] * 2 + [3e-3] * 2
    )
    text = markdown(load(path), png_dir=tmp_path)
    swept = text.split("#### Profile `quick-swept`")[1]
    assert "lr swept per regime and strategy (dual: fedavg 0.001, fedrouter 0.003)" in swept
    assert "| fedavg (none) | +0.200 ± 0.000 |" in swept  # 0.7 − 0.5 in both seeds
    assert "- FedRouter − fedavg: +0.050 ± 0.000 at one lr for all (2 seeds), +0.200 ± 0.000 at each" in swept


def test_the_sweep_picks_each_strategys_best_lr_on_validation_runs(monkeypatch):
    from benchmarks import training_bench

    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False):
        calls.append((strategy, p["lr"], profile, validation))
        return {("fedavg", 1e-3): 0.5, ("fedavg", 3e-3): 0.7, ("fedrouter", 1e-3): 0.6}.get((strategy, p["lr"]), 0.1)

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    p = dict(PROFILES["quick"])
    out = training_bench.sweep_lr(["dual"], ["fedavg", "fedrouter"], 0, [1e-3, 3e-3], "quick", p, None, None, {})
    assert out[("dual", "fedavg")]["chosen"] == 3e-3 and out[("dual", "fedrouter")]["chosen"] == 1e-3
    assert all(prof == "quick-sweep" and val for _, _, prof, val in calls) and len(calls) == 4


def test_a_widened_sweep_runs_only_the_grid_points_it_has_no_record_of(monkeypatch, tmp_path):
    import json

    from benchmarks import training_bench

    old = []
    for lr, sc in ((3e-4, 0.2), (1e-3, 0.5), (3e-3, 0.6)):
        r = record("fedavg", 0, sc, profile="quick-sweep")
        r["settings"]["lr"] = lr
        old.append(r)
    other_seed = record("fedavg", 1, 0.9, profile="quick-sweep")
    other_steps = record("fedavg", 0, 0.9, profile="quick-sweep")
    other_steps["settings"]["local_steps"] = 99
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (*old, other_seed, other_steps)))
    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False):
        calls.append(p["lr"])
        return 0.55

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    grid = [3e-4, 1e-3, 3e-3, 1e-2]
    out = training_bench.sweep_lr(["dual"], ["fedavg"], 0, grid, "quick", dict(PROFILES["quick"]), None, path, {})
    assert calls == [1e-2]  # the three recorded points are not run again
    assert out[("dual", "fedavg")] == {"grid": grid, "scores": [0.2, 0.5, 0.6, 0.55], "chosen": 3e-3}


def test_the_validation_split_is_carved_from_training_data_and_never_trained_on():
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.data.scenarios import scenario_from_config

    cfg = TrainConfig(out="x", tasks="add,capital", num_clients=2, train_per_task=20, test_per_task=4)
    plain = scenario_from_config(cfg)
    tuned = scenario_from_config(TrainConfig(**{**cfg.to_record(), "validation": True}))
    for p, t in zip(plain.clients, tuned.clients):
        assert t.test == p.train[4::5] and len(t.test) == 8  # every 5th training sample
        assert not {s["prompt"] for s in t.train} & {s["prompt"] for s in t.test}
        assert all(s in p.train for s in t.train) and not {s["prompt"] for s in t.test} & {s["prompt"] for s in p.test}


def test_the_suite_check_flags_saturated_and_unlearned_tasks_from_fedavg_and_base_alone():
    from benchmarks.training_tables import suite_table

    tasks = [{"sum": 1.0, "copy": 0.12, "topic": 0.6}, {"sum": 1.0, "copy": 0.1, "topic": 0.5}]
    rs = [record("fedavg", s, 0.5, per_task=t) for s, t in enumerate(tasks)]
    rs += [record("base", s, 0.1, per_task={"sum": 0.2, "copy": 0.1, "topic": 0.0}) for s in (0, 1)]
    rs += [record("fedrouter", 0, 0.9, per_task={"sum": 0.0, "copy": 1.0, "topic": 1.0})]  # never read
    rows = {line.split(" | ")[0].strip("| "): line for line in suite_table(rs, "dual")[2:]}
    assert rows["sum"].endswith("no: saturated |")
    assert rows["copy"].endswith("no: not learned |")
    assert rows["topic"].endswith("yes |") and "| 0.55 |" in rows["topic"]


def test_the_long_profile_runs_at_the_lrs_fulls_sweep_chose_and_renders_them(monkeypatch, tmp_path):
    import json
    import sys

    from benchmarks import training_bench

    sweep = []
    for strategy, scores in (("fedavg", (0.2, 0.5, 0.7)), ("fedrouter", (0.3, 0.6, 0.5))):
        for lr, sc in zip((3e-4, 1e-3, 3e-3), scores):
            sweep.append(record(strategy, 0, sc, profile="full-sweep", settings=settings("full", lr)))
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sweep))
    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False, extra=None):
        calls.append((strategy, seed, profile, p["lr"], p["rounds"], validation, extra["lr_sweep"]["profile"]))
        return 0.5

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    argv = [
        "training_bench",
        "--profile",
        "long",
        "--records",
        str(path),
        "--seeds",
        "1",
        "--strategies",
        "fedavg,fedrouter",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    training_bench.main()
    # no sweep point runs again (full's are recorded, at seed 0 whichever seeds run); each at its chosen lr
    assert calls == [
        ("fedavg", 1, "long-swept", 3e-3, 16, False, "full-sweep"),
        ("fedrouter", 1, "long-swept", 1e-3, 16, False, "full-sweep"),
    ]
    chosen = {"grid": [3e-4, 1e-3, 3e-3], "chosen": 3e-3}
    ran = [
        record("fedavg", k, 0.5, profile="long-swept", settings=settings("long", 3e-3), lr_sweep=chosen) for k in (0, 1)
    ]
    ran += [
        record("fedrouter", k, 0.6, profile="long-swept", settings=settings("long", 1e-3), lr_sweep=chosen | {"chosen": 1e-3})
        for k in (0, 1)
    ]  # fmt: skip
    usable, refused = split([*sweep, *ran])
    assert not refused
    text = markdown(usable, png_dir=tmp_path).split("#### Profile `long-swept`")[1]
    assert (
        "- dual fedavg: lr 0.003 (the largest of its grid: a wider grid might choose another), chosen by `full`'s sweep"
        in text
    )
    assert "16 rounds × 8 steps" in text and "| fedavg (none) | +0.100 ± 0.000 |" in text
    assert "FedRouter − fedavg" not in text  # no `full-swept` runs to set beside these
    # after 8 rounds: fedavg's swept runs; fedrouter's sweep chose full's own lr, so its `full` records
    at8 = [
        record("fedavg", k, 0.4, profile="full-swept", settings=settings("full", 3e-3), lr_sweep=chosen) for k in (0, 1)
    ]
    at8 += [record("fedrouter", k, 0.6, profile="full", settings=settings("full", 1e-3)) for k in (0, 1)]
    text = markdown([*usable, *at8], png_dir=tmp_path).split("#### Profile `long-swept`")[1]
    assert (
        "- FedRouter − fedavg: +0.200 ± 0.000 after 8 rounds (`full-swept`) (2 seeds), "
        "+0.100 ± 0.000 after 16 rounds (here) (2 seeds)." in text
    )


def test_a_sweep_that_chooses_the_profiles_lr_runs_the_profile_only_where_a_seed_has_no_record(monkeypatch, tmp_path):
    import json
    import sys

    from benchmarks import training_bench

    full = {k: v for k, v in PROFILES["full"].items() if k in PROFILE_KEYS}
    rows = []
    for lr, sc in ((1e-3, 0.7), (3e-3, 0.4)):  # the sweep chooses full's own lr, 1e-3
        rows.append(record("fedavg", 0, sc, profile="full-sweep", regime="interference", settings=full | {"lr": lr}))
    rows.append(record("fedavg", 1, 0.5, profile="full", regime="interference", settings=dict(full)))  # seed 1 ran
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False, extra=None):
        calls.append((regime, seed, profile, p["lr"], validation))
        return 0.5

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    argv = ["training_bench", "--records", str(path), "--regimes", "interference", "--strategies", "fedavg"]
    monkeypatch.setattr(sys, "argv", [*argv, "--lr-sweep", "1e-3,3e-3", "--seeds", "0,1,2"])
    training_bench.main()
    # seed 0's sweep points are recorded; seed 1 has its `full` record; seeds 0 and 2 run as `full`
    assert calls == [("interference", 0, "full", 1e-3, False), ("interference", 2, "full", 1e-3, False)]


def test_the_long_profile_takes_each_regimes_own_recorded_grid_and_stops_where_a_pair_was_not_swept(
    monkeypatch, tmp_path
):
    import json
    import sys

    import pytest

    from benchmarks import training_bench

    full = {k: v for k, v in PROFILES["full"].items() if k in PROFILE_KEYS}
    rows = [  # dual swept 3e-4..3e-3, interference 1e-3..3e-2: neither grid point is missing for the other
        record("fedavg", 0, sc, profile="full-sweep", settings=full | {"lr": lr})
        for lr, sc in ((3e-4, 0.2), (1e-3, 0.5), (3e-3, 0.6))
    ]
    rows += [
        record("fedavg", 0, sc, profile="full-sweep", regime="interference", settings=full | {"lr": lr})
        for lr, sc in ((1e-3, 0.5), (1e-2, 0.8), (3e-2, 0.3))
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False, extra=None):
        calls.append((regime, strategy, profile, p["lr"], validation, extra["lr_sweep"]["grid"]))
        return 0.5

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    argv = ["training_bench", "--profile", "long", "--records", str(path), "--seeds", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--regimes", "interference", "--strategies", "fedavg"])
    training_bench.main()
    assert calls == [("interference", "fedavg", "long-swept", 1e-2, False, [1e-3, 1e-2, 3e-2])]
    monkeypatch.setattr(sys, "argv", [*argv, "--regimes", "interference", "--strategies", "fedavg,fedrouter"])
    with pytest.raises(SystemExit, match="no records at seed 0 for interference fedrouter"):
        training_bench.main()
    assert len(calls) == 1  # nothing ran


def test_schedule_alignment_reads_round_robin_from_the_schedule_and_judges_the_sign():
    import numpy as np

    from benchmarks.schedule_alignment import render, rounds_per_task

    # local cluster 0 (task a) is picked in even rounds, 1 (task b) in odd ones (rnd % 2)
    labels, tasks = np.array([1, 0, 0, 1]), ["b", "a", "a", "b"]
    assert rounds_per_task(labels, tasks, 4) == {"a": (2, 4), "b": (1, 3)}

    def run(strategy, in_step, scores):
        return {"profile": "full", "seed": 0, "strategy": strategy, "in_step": in_step, "per_task": scores}

    fr = run("fedrouter", ["b"], {"a": 0.6, "b": 0.6})
    same_sign = render({"runs": [fr, run("oracle", ["a"], {"a": 0.4, "b": 0.4})]})
    assert "FedRouter alternating, oracle in step: mean FedRouter − oracle +0.200 over 1" in same_sign
    assert "does not predict the sign" in same_sign
    opposite = render({"runs": [fr, run("oracle", ["a"], {"a": 0.4, "b": 0.8})]})
    assert "consistent with the schedule causing the difference" in opposite


def test_a_deadline_starts_no_run_the_longest_so_far_would_carry_past_it(monkeypatch, tmp_path):
    import sys

    from benchmarks import training_bench

    clock = [0.0]
    monkeypatch.setattr(training_bench.time, "monotonic", lambda: clock[0])
    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False, extra=None):
        calls.append((strategy, seed))
        clock[0] += 100.0  # every run takes 100 s
        return 0.5

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    argv = ["training_bench", "--records", str(tmp_path / "r.jsonl"), "--strategies", "fedrouter,fedavg"]
    monkeypatch.setattr(sys, "argv", [*argv, "--seeds", "0,1,2", "--deadline-min", str(350 / 60)])
    training_bench.main()
    # 3 runs end by 300 s; a fourth would end at 400 s > 350 s: not started, nor any after it
    assert calls == [("fedrouter", 0), ("fedavg", 0), ("fedrouter", 1)]


def test_the_reference_profile_is_the_references_scale_at_fulls_swept_lrs():
    ref = PROFILES["reference"]
    assert (ref["rounds"], ref["local_steps"], ref["batch_size"]) == (25, 10, 16)
    assert ref["lrs_from"] == "full" and ref["regimes"] == ["dual"]
    assert ref["strategies"].split(",")[:2] == ["fedrouter", "fedavg"]  # the headline pair first in every seed


def test_a_profile_without_records_says_so_and_where_it_runs(tmp_path):
    text = markdown([record("fedavg", 0, 0.5)], png_dir=tmp_path)
    part = text.split("#### Profile `reference-swept`")[1]
    assert part.lstrip().startswith("No records yet.") and "scripts/device_reference.sh" in part


def test_headline_says_what_a_narrow_ci_shows():
    from benchmarks.training_tables import headline_line

    def line(scores_fr, scores_fa):
        rs = [record("fedrouter", i, s) for i, s in enumerate(scores_fr)]
        rs += [record("fedavg", i, s) for i, s in enumerate(scores_fa)]
        return headline_line(rs, "dual")[0]

    # paired differences 0.01, 0.00, -0.01, 0.005: CI covers 0 and is narrow
    covers = line([0.51, 0.60, 0.69, 0.805], [0.50, 0.60, 0.70, 0.80])
    assert "covers 0: no difference is shown" in covers
    # each side's bound of the CI (+0.001 ± 0.014), not the larger of the two for both
    assert "FedRouter ahead by more than 0.015, or FedAvg by more than 0.012, is ruled out" in covers
    assert "FedRouter is ahead by" in line([0.56, 0.65, 0.76, 0.855], [0.50, 0.60, 0.70, 0.80])
    assert "FedAvg is ahead by" in line([0.44, 0.55, 0.64, 0.745], [0.50, 0.60, 0.70, 0.80])
    assert "falls short of ≤ 0.03" in line([0.6, 0.5, 0.8], [0.5, 0.6, 0.7])


def test_sweep_only_sweeps_at_the_profiles_own_budget_and_the_report_checks_the_lrs_its_runs_use(monkeypatch, tmp_path):
    import json
    import sys

    from benchmarks import training_bench

    # `full`'s sweep chose 3e-3 for fedavg and 1e-3 for fedrouter; `long` runs at those lrs
    full = [
        record(s, 0, sc, profile="full-sweep", settings=settings("full", lr))
        for s, lr, sc in (("fedavg", 1e-3, 0.5), ("fedavg", 3e-3, 0.7), ("fedrouter", 1e-3, 0.6), ("fedrouter", 3e-3, 0.4))
    ]  # fmt: skip
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in full))
    calls = []

    def fake_run_one(regime, strategy, seed, embedder, profile, p, work, records, commit, validation=False, extra=None):
        calls.append((strategy, profile, p["lr"], p["rounds"], validation))
        return {("fedavg", 1e-3): 0.55, ("fedavg", 3e-3): 0.75, ("fedrouter", 1e-3): 0.5}.get((strategy, p["lr"]), 0.6)

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    argv = ["training_bench", "--profile", "long", "--records", str(path), "--seeds", "2"]
    argv += ["--strategies", "fedavg,fedrouter", "--lr-sweep", "1e-3,3e-3", "--sweep-only"]
    monkeypatch.setattr(sys, "argv", argv)
    training_bench.main()
    # validation runs at `long`'s 16 rounds, at every grid point, and nothing after them
    assert calls == [
        (s, "long-sweep", lr, 16, True) for s in ("fedavg", "fedrouter") for lr in (1e-3, 3e-3)
    ]  # fmt: skip
    mine = [
        record(s, 2, sc, profile="long-sweep", settings=settings("long", lr), n=150)
        for s, lr, sc in (("fedavg", 1e-3, 0.55), ("fedavg", 3e-3, 0.75), ("fedrouter", 1e-3, 0.5), ("fedrouter", 3e-3, 0.7))
    ]  # fmt: skip
    usable, refused = split([*full, *mine])
    assert not refused

    def check(records):
        return markdown(records, png_dir=tmp_path).split("#### Profile `long-sweep`")[1].split("#### Profile")[0]

    text = check(usable)
    assert "- dual fedavg: lr 0.003 is the best here (validation 0.750), as `full`'s sweep chose" in text
    assert (  # 0.2 behind, the difference's standard error sqrt(0.7*0.3/150 + 0.5*0.5/150) = 0.055
        "- dual fedrouter: lr 0.003 is the best here (validation 0.700); `full`'s sweep chose 0.001, the lr its "
        "runs use: 0.200 behind here, more than twice the difference's standard error (unpaired: at most ≈ 0.055): "
        "not the best at this budget." in text
    )
    # a gap within the noise of one seed's validation scores does not overturn the lr the runs use
    close = [r if r["score"] != 0.5 else {**r, "score": 0.66} for r in usable]
    assert "0.040 behind here, within the noise of one seed's validation scores" in check(close)


def test_a_rerun_is_set_beside_the_committed_record_of_the_same_run_and_settings(tmp_path):
    import json

    from benchmarks.training_repro import markdown as repro_markdown

    def write(name, rs):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rs))
        return path

    then = [record("fedrouter", 0, 0.6, n=100), record("fedrouter", 1, 0.7, n=100)]
    then += [record("fedavg", s, 0.5, n=100) for s in (0, 1)]
    then += [record("fedavg", 3, 0.5, n=100)]
    now = [record("fedrouter", 0, 0.65, n=100), record("fedrouter", 1, 0.7, n=100)]
    now += [record("fedrouter", 0, 0.1, n=100, routing="local")]  # not its compared routing: not shown
    now += [record("fedavg", 0, 0.5, n=100), record("fedavg", 1, 0.45, n=100), record("fedavg", 2, 0.4, n=100)]
    then.append(record("base", 0, 0.1, n=100, steps=0.0, samples=0.0))
    now.append(record("base", 0, 0.3, n=100, steps=0.0, samples=0.0))  # shown, not in the trained records' mean
    other = record("fedavg", 3, 0.5, n=100)
    other["settings"]["train_per_task"] = 48  # not a profile key: usable, yet not the committed run
    now.append(other)
    now[0]["settings"]["new_knob"] = 1  # recorded on one side only: named, not compared
    text = repro_markdown(write("repro.jsonl", now), write("runs.jsonl", then))
    assert "| dual | fedrouter (global) | 0 | 0.600 | 0.650 | +0.050 | 0.048 |" in text
    assert "| dual | fedavg (none) | 1 | 0.500 | 0.450 | -0.050 |" in text
    assert "| dual | fedavg (none) | 2 | none | 0.400 | – |" in text
    assert "| dual | fedavg (none) | 3 | 0.500 | 0.500 | settings differ: train_per_task |" in text
    assert "(local)" not in text
    assert "Settings that only one side records (added or renamed in between; not compared): new_knob." in text
    # the four matched records: +0.05, 0, 0, -0.05; headline over seeds 0 and 1: (0.1, 0.2) then, (0.15, 0.25) now
    assert "| dual | base (none) | 0 | 0.100 | 0.300 | +0.200 |" in text
    assert "dual: rerun − committed over 4 trained records: mean +0.000, largest |Δ| 0.050." in text
    assert "committed +0.150 ± 0.635, rerun +0.200 ± 0.635; the rerun's mean lies inside the committed CI." in text
    assert repro_markdown(tmp_path / "none.jsonl", tmp_path / "runs.jsonl") == ""
