"""A release's identity covers everything that decides an answer: adapters (test_release.py), the
centroids, the routing settings, the embedder's files and the base model's files. Changing any of
them changes `Release.digest`; changing one after the release was written is refused at load."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from fedrouter.router.release import CENTROIDS, MANIFEST, ReleaseError, load_release, write_release
from tests.tiny import TASK_EXAMPLES


def problems_of(path, **kw) -> str:
    with pytest.raises(ReleaseError) as e:
        load_release(path, **kw)
    return "\n".join(e.value.problems)


def model_folder(path, seed: int = 0):
    """A stand-in model folder: a config and a weights file (only their bytes matter here)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"hidden_size": 128}))
    (path / "model.safetensors").write_bytes(np.random.default_rng(seed).bytes(4096))
    return path


@pytest.fixture
def made(tmp_path, fake_adapters):
    """A release written with a local base model folder and an embedder given by its folder."""
    from fedrouter.router.build import build_release
    from fedrouter.router.embed import HashEmbedder
    from tests.tiny import write_examples

    base = model_folder(tmp_path / "base")
    first = build_release(
        tmp_path / "releases" / "v1",
        base_model=str(base),
        base_name="tiny",
        adapters=fake_adapters,
        examples=write_examples(tmp_path / "examples"),
        embedder=HashEmbedder(64),
    )
    embedder = model_folder(tmp_path / "embedder", seed=1)
    m = replace(first.manifest, embedder=replace(first.manifest.embedder, kind="static", name=str(embedder), digest=""))
    m.digests, m.digest = {}, ""
    folders = {n: first.adapter_dir(n) for n in m.adapters}

    def write(folder, manifest=m, centroids=first.centroids):
        manifest = replace(manifest, digests={}, digest="", centroids_digest="")
        return write_release(tmp_path / "releases" / folder, manifest, centroids, folders, update_latest=False)

    return write, write("v2"), base, embedder


def test_the_content_digests_are_recorded(made):
    _, release, base, embedder = made
    m = release.manifest
    assert len(m.centroids_digest) == len(m.base_model.digest) == len(m.embedder.digest) == 64
    raw = json.loads((release.path / MANIFEST).read_text())
    assert raw["centroids_digest"] == m.centroids_digest and raw["base_model"]["digest"] == m.base_model.digest


def test_centroids_alone_change_the_identity(made):
    write, release, _, _ = made
    other = write("v3", centroids=release.centroids[[1, 0, 2]])  # two clusters' rows swapped
    assert other.manifest.adapters == release.manifest.adapters and other.digest != release.digest
    assert write("v4").digest == release.digest  # same content, another folder: same identity


def test_routing_settings_change_the_identity(made):
    write, release, _, _ = made
    m = release.manifest
    assert write("v3", manifest=replace(m, routing=replace(m.routing, threshold=0.5))).digest != release.digest
    assert write("v4", manifest=replace(m, routing=replace(m.routing, fallback="nearest"))).digest != release.digest


def test_centroids_rewritten_after_the_write_are_refused(made):
    _, release, _, _ = made
    np.save(release.path / CENTROIDS, release.centroids[[1, 0, 2]])  # still valid, other routing
    assert f"{CENTROIDS} changed after the release was written" in problems_of(release.path)


def test_the_embedder_and_the_base_model_are_identified_by_their_files(made, tmp_path):
    write, release, base, embedder = made
    (embedder / "model.safetensors").write_bytes(b"other weights" * 100)
    assert f"embedder {str(embedder)!r}: its files here are not the ones" in problems_of(release.path)
    shutil.rmtree(embedder)  # not on this machine: nothing to check, the recorded digest stands
    assert load_release(release.path).digest == release.digest
    (base / "model.safetensors").write_bytes(b"other weights" * 100)
    assert f"base model {str(base)!r}: its files here are not the ones" in problems_of(release.path)


def test_a_base_model_with_other_weights_under_the_same_name_is_refused(made):
    _, release, _, _ = made
    problems = problems_of(release.path, expect_base_digest="0" * 64)
    assert "base model 'tiny' has other files than the one the server runs" in problems


def test_a_release_written_before_content_digests_still_gets_them_in_its_identity(made):
    """An older manifest (no centroids or model digests, no own digest): computed at load."""
    _, release, _, _ = made

    def strip(folder):
        raw = json.loads((folder / MANIFEST).read_text())
        for d in (raw, raw["embedder"], raw["base_model"]):
            d.pop("digest", None)
        raw.pop("centroids_digest")
        (folder / MANIFEST).write_text(json.dumps(raw))

    old = release.path.parent / "old"
    shutil.copytree(release.path, old)
    strip(old)
    before = load_release(old)
    assert before.manifest.centroids_digest == release.manifest.centroids_digest
    np.save(old / CENTROIDS, release.centroids[[1, 0, 2]])
    assert load_release(old).digest != before.digest
    assert TASK_EXAMPLES  # (the release's adapters are the shipped tasks')
