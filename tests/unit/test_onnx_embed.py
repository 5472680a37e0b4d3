"""The ONNX embedder gives the PyTorch embedder's vectors (tiny sentence-transformers model, exported here)."""

import logging

import numpy as np
import pytest

from fedrouter.router.embed import SentenceTransformerEmbedder, load_embedder
from fedrouter.router.onnx_embed import OnnxEmbedder, export_onnx, export_ready, onnx_cache_dir
from fedrouter.router.release import EmbedderInfo
from tests.tiny import TASK_EXAMPLES, TASK_PROBES, make_tiny_sentence_transformer

pytest.importorskip("onnxruntime")
TEXTS = [p for ps in TASK_EXAMPLES.values() for p in ps] + [p for ps in TASK_PROBES.values() for p in ps] + ["x"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    folder = make_tiny_sentence_transformer(root)
    return folder, export_onnx(str(folder), root / "export")


def test_fp32_export_gives_the_torch_vectors_batched_and_alone(tiny):
    folder, export = tiny
    torch_vecs = SentenceTransformerEmbedder(str(folder)).embed(TEXTS)  # [N, 64]
    onnx = OnnxEmbedder(str(folder), "fp32", folder=export)
    batched = onnx.embed(TEXTS)  # padded to the longest text of the batch
    alone = np.concatenate([onnx.embed([t]) for t in TEXTS])
    assert batched.shape == (len(TEXTS), 64) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, torch_vecs, atol=1e-4)
    np.testing.assert_allclose(alone, torch_vecs, atol=1e-4)


def test_int8_export_stays_close(tiny):
    folder, export = tiny
    torch_vecs = SentenceTransformerEmbedder(str(folder)).embed(TEXTS)
    vecs = OnnxEmbedder(str(folder), "int8", folder=export).embed(TEXTS)
    assert (vecs * torch_vecs).sum(1).min() > 0.95  # a random tiny model; the real one is measured in benchmarks


def test_export_is_stale_once_the_weights_change(tiny, tmp_path):
    folder, export = tiny
    assert export_ready(str(folder), export)
    assert not export_ready(str(folder), tmp_path / "nothing")


def test_auto_falls_back_to_torch_with_a_log_line(tiny, tmp_path, monkeypatch, caplog):
    folder, _ = tiny
    monkeypatch.setenv("FEDROUTER_CACHE", str(tmp_path))  # no export there
    info = EmbedderInfo("sentence-transformers", str(folder), 64)
    with caplog.at_level(logging.WARNING, "fedrouter.router"):
        emb = load_embedder(info, backend="auto")
    assert emb.backend == "torch" and "PyTorch, not ONNX Runtime" in caplog.text
    with pytest.raises(FileNotFoundError):
        load_embedder(info, backend="onnx-int8")  # asked for explicitly: no silent fallback


def test_auto_uses_the_export_in_the_cache(tiny, tmp_path, monkeypatch):
    folder, _ = tiny
    monkeypatch.setenv("FEDROUTER_CACHE", str(tmp_path))
    export_onnx(str(folder))
    assert onnx_cache_dir(str(folder)).is_relative_to(tmp_path)
    info = EmbedderInfo("sentence-transformers", str(folder), 64)
    emb = load_embedder(info, backend="auto", threads=1)
    assert emb.backend == "onnx-int8" and emb.info == info  # same space: a release made with torch stays valid
    with pytest.raises(ValueError, match="unknown embedding backend"):
        load_embedder(info, backend="gpu-magic")
