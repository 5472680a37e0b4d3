import json
import os

import numpy as np
import pytest

from fedrouter.router.build import build_release
from fedrouter.router.embed import HashEmbedder
from fedrouter.router.release import CENTROIDS, MANIFEST, ReleaseError, load_release, next_release_dir, write_release
from tests.tiny import TASK_EXAMPLES, write_examples


@pytest.fixture
def release(tmp_path, fake_adapters):
    examples = write_examples(tmp_path / "examples")
    return build_release(
        tmp_path / "releases" / "v1",
        base_model="tiny-base",
        adapters=fake_adapters,
        examples=examples,
        embedder=HashEmbedder(64),
    )


def edit_manifest(release, change):
    m = json.loads((release.path / MANIFEST).read_text())
    change(m)
    (release.path / MANIFEST).write_text(json.dumps(m))


def problems_of(path, **kw):
    with pytest.raises(ReleaseError) as e:
        load_release(path, **kw)
    return "\n".join(e.value.problems)


def test_build_writes_a_valid_release_and_points_latest(release, tmp_path):
    assert release.id == "v1"
    assert list(release.manifest.adapters) == list(TASK_EXAMPLES)
    assert release.centroids.shape == (3, 64) and release.centroids.dtype == np.float32
    latest = tmp_path / "releases" / "latest"
    assert latest.is_symlink() and load_release(latest).path == release.path
    assert release.manifest.embedder.kind == "hash" and release.manifest.lora.r == 8
    assert [p.name for p in (tmp_path / "releases").iterdir() if p.name.startswith(".")] == []


def test_next_release_dir(tmp_path):
    assert next_release_dir(tmp_path).name == "v1"
    (tmp_path / "v1").mkdir(), (tmp_path / "v12").mkdir(), (tmp_path / "vx").mkdir()
    assert next_release_dir(tmp_path).name == "v13"


def test_write_refuses_existing_folder(release, fake_adapters):
    with pytest.raises(FileExistsError):
        write_release(release.path, release.manifest, release.centroids, fake_adapters)


def test_failed_write_leaves_nothing_behind(release, tmp_path, fake_adapters):
    bad = np.ones((3, 64), np.float32)  # not normalised: validation fails before the rename
    with pytest.raises(ReleaseError):
        write_release(tmp_path / "releases" / "v2", release.manifest, bad, fake_adapters)
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == ["latest", "v1"]
    assert os.readlink(tmp_path / "releases" / "latest") == "v1"


def test_missing_folder_and_manifest(tmp_path):
    assert "not a folder" in problems_of(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert f"missing {MANIFEST}" in problems_of(tmp_path / "empty")


def test_manifest_not_json(release):
    (release.path / MANIFEST).write_text("{oops")
    assert "not valid JSON" in problems_of(release.path)


def test_manifest_missing_field(release):
    edit_manifest(release, lambda m: m.pop("embedder"))
    assert "does not follow the schema" in problems_of(release.path) and "embedder" in problems_of(release.path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["clusters"][0].update(adapter="auto"), "'auto' is not a safe name"),
        (lambda m: m["clusters"][0].update(adapter="a b;rm"), "'a b;rm' is not a safe name"),
        (lambda m: m["clusters"][0].update(adapter="tiny-base"), "is the base model's name"),
        (lambda m: m["clusters"][0].update(path="../../etc"), "leaves the release folder"),
        (lambda m: m["clusters"][0].update(path="/etc"), "must be relative"),
        (lambda m: m["clusters"][1].update(id=5), "cluster ids must be 0..K-1"),
        (lambda m: m["routing"].update(fallback="random"), "routing.fallback 'random'"),
        (lambda m: m["routing"].update(threshold=2), "outside [-1, 1]"),
        (lambda m: m["lora"].update(r=4), "rank 8 is above the release's lora.r 4"),
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.update(release_id="../v1"), "release_id '../v1'"),
        (lambda m: m["embedder"].update(dim=32), "shape [3, 64], expected [K=3, dim=32]"),
        (lambda m: m.update(client_clusters={"c0": {"7": 3}}), "client_clusters['c0'] must map cluster ids 0..2"),
        (lambda m: m.update(client_clusters={"c0": {"0": -1}}), "client_clusters['c0'] must map"),
    ],
)
def test_each_bad_manifest_names_its_problem(release, change, message):
    edit_manifest(release, change)
    assert message in problems_of(release.path)


def test_all_problems_are_reported_at_once(release):
    edit_manifest(release, lambda m: (m["routing"].update(fallback="x"), m["clusters"][0].update(adapter="auto")))
    problems = problems_of(release.path)
    assert "fallback" in problems and "'auto'" in problems


def test_missing_adapter_weights(release):
    (release.path / "adapters" / "geo" / "adapter_model.safetensors").unlink()
    assert "adapter 'geo': missing adapter_model.safetensors" in problems_of(release.path)


def test_rank_above_serving_limit(release):
    assert "above the serving limit 4" in problems_of(release.path, max_lora_rank=4)


def test_base_and_embedder_mismatch(release):
    assert "base model is 'tiny-base', the server runs 'other'" in problems_of(release.path, expect_base="other")
    assert "embedder is 'hash-64'" in problems_of(release.path, expect_embedder="all-MiniLM-L6-v2")


@pytest.mark.parametrize(
    "centroids, message",
    [
        (np.ones((2, 64), np.float32), "shape [2, 64]"),
        (np.ones((3, 64), np.float64) / 8, "dtype float64"),
        (np.ones((3, 64), np.float32), "not L2-normalised"),
        (np.full((3, 64), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_centroids(release, centroids, message):
    np.save(release.path / CENTROIDS, centroids)
    assert message in problems_of(release.path)


def test_missing_centroids(release):
    (release.path / CENTROIDS).unlink()
    assert f"missing {CENTROIDS}" in problems_of(release.path)


def test_build_rejects_mismatched_examples(tmp_path, fake_adapters):
    examples = write_examples(tmp_path / "ex", {"math": ["1+1?"]})
    with pytest.raises(ValueError, match="every adapter needs examples"):
        build_release(
            tmp_path / "v1", base_model="b", adapters=fake_adapters, examples=examples, embedder=HashEmbedder()
        )


def test_build_names_bad_jsonl_line(tmp_path, fake_adapters):
    examples = write_examples(tmp_path / "ex")
    examples["geo"].write_text('{"prompt": "ok"}\n{"response": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"geo.jsonl:2: missing a non-empty string field 'prompt'"):
        build_release(
            tmp_path / "v1", base_model="b", adapters=fake_adapters, examples=examples, embedder=HashEmbedder()
        )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["embedder"].update(dim="384"), "manifest.embedder.dim must be int, got str"),
        (lambda m: m["clusters"][0].update(id="a"), "manifest.clusters[0].id must be int"),
        (lambda m: m.update(clusters={"a": 1}), "manifest.clusters must be a list"),
        (lambda m: m["routing"].update(threshold=None), "manifest.routing.threshold must be float"),
        (lambda m: m["lora"].update(targets="q_proj"), "manifest.lora.targets must be a list"),
        (lambda m: m.update(training=[1]), "manifest.training must be an object"),
    ],
)
def test_mistyped_manifest_fields_are_named(release, change, message):
    edit_manifest(release, change)
    assert message in problems_of(release.path)


def test_weights_are_checked_against_the_header_and_config(release):
    weights = release.path / "adapters" / "geo" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])
    assert "truncated" in problems_of(release.path)
    weights.write_bytes(b"\xff" * 64)
    assert "adapter 'geo': adapter_model.safetensors" in problems_of(release.path)
    config = release.path / "adapters" / "math" / "adapter_config.json"
    config.write_bytes(b'{"r": 8, "x": "\xff"}')
    assert "adapter 'math': adapter_config.json is not valid UTF-8 JSON" in problems_of(release.path)


def test_rank_and_target_mismatches_are_found(tmp_path, release):
    from tests.conftest import fake_adapter

    cfg = release.path / "adapters" / "geo" / "adapter_config.json"
    fake_adapter(tmp_path / "r4", r=4)
    (release.path / "adapters" / "geo" / "adapter_model.safetensors").write_bytes(
        (tmp_path / "r4" / "adapter_model.safetensors").read_bytes()
    )
    assert "not a rank-8 LoRA" in problems_of(release.path)
    cfg.write_text(json.dumps({"r": 4, "target_modules": ["k_proj"]}))
    assert "which is not in target_modules ['k_proj']" in problems_of(release.path)


def test_digests_identify_content_and_detect_changes(tmp_path, release, fake_adapters):
    assert len(release.digest) == 64 and set(release.manifest.digests) == set(release.manifest.adapters)
    again = load_release(release.path)
    assert again.digest == release.digest
    other = build_release(
        tmp_path / "other" / "v1",
        base_model="tiny-base",
        adapters={**fake_adapters, "geo": fake_adapters["math"]},
        examples=write_examples(tmp_path / "examples"),
        embedder=HashEmbedder(64),
    )
    assert other.id == release.id and other.digest != release.digest
    assert other.manifest.digests["geo"] == release.manifest.digests["math"]
    (release.path / "adapters" / "geo" / "adapter_model.safetensors").write_bytes(
        (fake_adapters["math"] / "adapter_model.safetensors").read_bytes()
    )
    assert "adapter 'geo': its files changed" in problems_of(release.path)


def test_unreadable_paths_are_release_errors(tmp_path):
    assert "cannot read the release" in problems_of(tmp_path / ("x" * 5000))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / MANIFEST).write_bytes(b'{"a": "\xff"}')
    assert "cannot read the release" in problems_of(tmp_path / "r")
    (tmp_path / "r" / MANIFEST).write_text('{"format_version": NaN}')
    assert "not valid JSON" in problems_of(tmp_path / "r")


def test_absurd_json_in_release_files_is_a_release_error(release):
    (release.path / "adapters" / "geo" / "adapter_config.json").write_text("[" * 100000 + "]" * 100000)
    assert "adapter 'geo': adapter_config.json is not valid UTF-8 JSON" in problems_of(release.path)
    text = (release.path / MANIFEST).read_text()
    (release.path / MANIFEST).write_text(text.replace('"threshold": 0.0', '"threshold": 1e999'))
    assert "manifest.routing.threshold must be float" in problems_of(release.path)
    (release.path / MANIFEST).write_text('{"a": ' + "[" * 100000 + "]" * 100000 + "}")
    assert "not valid JSON" in problems_of(release.path)


def test_many_adapters_are_checked_each_under_its_own_name(tmp_path):
    """A release of 10 adapters is validated on several threads: every digest and every problem
    must still belong to its own adapter, in manifest order."""
    from fedrouter.router.adapter_files import adapter_digest
    from tests.conftest import fake_adapter

    names = [f"t{i:02d}" for i in range(10)]
    adapters = {n: fake_adapter(tmp_path / "src" / n, seed=i) for i, n in enumerate(names)}
    examples = write_examples(tmp_path / "examples", {n: [f"prompt {n} {k}" for k in range(3)] for n in names})
    rel = build_release(
        tmp_path / "releases" / "v1", base_model="tiny-base", adapters=adapters, examples=examples,
        embedder=HashEmbedder(64),
    )  # fmt: skip
    again = load_release(rel.path)
    assert again.manifest.digests == {n: adapter_digest(rel.path / "adapters" / n) for n in names}
    assert len(set(again.manifest.digests.values())) == 10
    weights = rel.path / "adapters" / "t07" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # truncated
    (rel.path / "adapters" / "t03" / "adapter_config.json").write_text("{")
    found = problems_of(rel.path)
    assert found.index("adapter 't03'") < found.index("adapter 't07'")
    assert "t07" in found.split("truncated")[0].splitlines()[-1] and "adapter 't03': adapter_config.json" in found
