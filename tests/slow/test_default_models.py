"""The default models, as `make demo` uses them (slow: ~1 min; `make test-all`)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_base_model_prepares_from_the_gguf_and_generates(tmp_path):
    from fedrouter.training.base_model import is_prepared, prepare_base_model
    from fedrouter.training.model import generate, load_base, load_tokenizer

    path = prepare_base_model(tmp_path / "smollm2")
    assert is_prepared(path)
    tok = load_tokenizer(str(path))
    assert tok.chat_template  # vLLM's chat endpoint needs one
    answer = generate(load_base(str(path)), tok, ["What is the capital of France?"], max_new_tokens=8)[0]
    assert "Paris" in answer


def test_default_embedder_loads_offline_and_separates_tasks():
    from fedrouter.router.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    v = emb.embed(["What is 2 plus 2?", "Add 3 and 5.", "What is the capital of Peru?"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_onnx_embedder_agrees_with_torch_on_the_default_model():
    """Same adapter and cosine >= 0.99 per prompt on a small set (the full set: benchmarks/routing.py)."""
    from fedrouter.router.embed import DEFAULT_EMBEDDER, load_embedder
    from fedrouter.router.onnx_embed import export_ready
    from fedrouter.router.release import EmbedderInfo
    from fedrouter.router.vectors import centroid
    from tests.tiny import TASK_EXAMPLES, TASK_PROBES

    if not export_ready(DEFAULT_EMBEDDER):
        pytest.skip("no ONNX export: run `fedrouter models prepare`")
    info = EmbedderInfo("sentence-transformers", DEFAULT_EMBEDDER, 384)
    torch_emb = load_embedder(info, backend="torch")
    centroids = np.stack([centroid(torch_emb.embed(ps)) for ps in TASK_EXAMPLES.values()])  # [3, 384]
    probes = [p for ps in TASK_PROBES.values() for p in ps] + [p for ps in TASK_EXAMPLES.values() for p in ps]
    ref = torch_emb.embed(probes)
    for backend in ("onnx-fp32", "onnx-int8"):
        vecs = load_embedder(info, backend=backend, threads=1).embed(probes)
        assert (vecs * ref).sum(1).min() >= 0.99, backend
        assert ((vecs @ centroids.T).argmax(1) == (ref @ centroids.T).argmax(1)).all(), backend
