"""The static embedder: distilled offline from the packaged MiniLM, cached, recorded in releases,
and good enough to route (held-out prompts of four tasks)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from fedrouter.router.build import build_release
from fedrouter.router.embed import DEFAULT_EMBEDDER, load_embedder, make_embedder
from fedrouter.router.static_embed import StaticEmbedder, distill_static, static_cache_dir, static_ready
from tests.tiny import write_examples


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private FEDROUTER_CACHE with the table distilled once (~20 s on 2 cores)."""
    root = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("FEDROUTER_CACHE")
    os.environ["FEDROUTER_CACHE"] = str(root)
    try:
        distill_static(DEFAULT_EMBEDDER)
        yield root
    finally:
        if saved is None:
            os.environ.pop("FEDROUTER_CACHE", None)
        else:
            os.environ["FEDROUTER_CACHE"] = saved


def test_the_table_is_cached_and_follows_its_source_weights(cache):
    folder = static_cache_dir(DEFAULT_EMBEDDER)
    assert folder.is_relative_to(cache) and static_ready(DEFAULT_EMBEDDER)
    table = np.load(folder / "vectors.npy")
    assert table.shape == (30522, 256) and np.isfinite(table).all()
    stamp = (folder / "vectors.npy").stat().st_mtime_ns
    assert distill_static(DEFAULT_EMBEDDER) == folder and (folder / "vectors.npy").stat().st_mtime_ns == stamp
    meta = json.loads((folder / "static.json").read_text())
    (folder / "static.json").write_text(json.dumps({**meta, "weights": [["model.safetensors", 1]]}))
    try:
        assert not static_ready(DEFAULT_EMBEDDER)  # other weights installed: made again on next use
    finally:
        (folder / "static.json").write_text(json.dumps(meta))


def test_vectors_are_unit_length_and_near_for_the_same_task(cache):
    emb = make_embedder("static")
    assert isinstance(emb, StaticEmbedder) and emb.info.kind == "static" and emb.info.dim == 256
    v = emb.embed(["What is 14 plus 27?", "What is 3 plus 58?", "The capital of France is", "", "   "])
    assert v.shape == (5, 256) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert np.array_equal(emb.embed(["What is 14 plus 27?"])[0], v[0])  # deterministic, batch-independent


def test_a_static_release_routes_held_out_prompts_in_its_own_space(cache, tmp_path, fake_adapters):
    from fedrouter.router.router import Router
    from fedrouter.training.data.scenarios import all_tasks

    tasks = {"math": "add", "geo": "capital", "sentiment": "sentiment"}
    rng = random.Random(0)
    train = {a: [all_tasks()[t].sample(rng, "train")[0] for _ in range(24)] for a, t in tasks.items()}
    examples = write_examples(tmp_path / "ex", train)  # each adapter's centroid: its task's training prompts
    release = build_release(
        tmp_path / "v1", base_model="base", adapters=fake_adapters, examples=examples, embedder=make_embedder("static")
    )
    assert release.manifest.embedder.kind == "static"
    router = Router(release, load_embedder(release.manifest.embedder, backend="auto", threads=1))
    hits = [
        router.route(all_tasks()[task].sample(rng, "test")[0]).adapter == adapter
        for adapter, task in tasks.items()
        for _ in range(20)
    ]
    assert np.mean(hits) >= 0.95


def test_static_is_the_default_routing_space_of_training_and_release_build(cache, tmp_path, fake_adapters):
    """`model="auto"` within 1 ms of naming the adapter by default: whatever makes a release without
    being told the embedder kind makes a static one (MiniLM on ONNX adds ~2-3 ms a prompt)."""
    from fedrouter.cli import main
    from fedrouter.router.release import load_release
    from fedrouter.training.config import TrainConfig

    assert TrainConfig().embedder_kind == "static" and TrainConfig().embedder == DEFAULT_EMBEDDER
    assert make_embedder().info.kind == "static"
    examples = write_examples(tmp_path / "ex")
    argv = ["release", "build", "--out", str(tmp_path / "v1"), "--base", "base"]
    for name, path in fake_adapters.items():
        argv += ["--adapter", f"{name}={path}", "--examples", f"{name}={examples[name]}"]
    main(argv)
    assert load_release(tmp_path / "v1").manifest.embedder.kind == "static"


@pytest.mark.parametrize(
    "kind,name",
    [
        ("static", None),
        ("static", DEFAULT_EMBEDDER),
        ("hash", ""),
        ("hash", "hash-256"),
        ("sentence-transformers", None),
    ],
)
def test_embedder_info_is_what_the_built_embedder_records(cache, kind, name):
    """A release's writer names the clients' embedder without building it (training/server_app.py)."""
    from fedrouter.router.embed import embedder_info

    built = make_embedder(kind, name).info
    assert embedder_info(kind, name, built.dim) == built


def test_embedder_info_refuses_what_make_embedder_refuses():
    from fedrouter.router.embed import embedder_info

    for kind, name in (("base-llm", None), ("word2vec", "x")):
        with pytest.raises(ValueError):
            embedder_info(kind, name, 8)
        with pytest.raises(ValueError):
            make_embedder(kind, name)
