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
