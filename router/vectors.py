"""The vector math of routing and clustering, in one place: every embedding, centroid and query in
fedrouter is an L2-normalised float32 row, and similarity is their inner product (cosine).

Pure numpy, no faiss: the faiss index in `index.py` is checked against `nearest` here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length; float32. A zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def centroid(vectors: np.ndarray, weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The normalised (weighted) mean of vectors [N, dim] -> [dim]."""
    v = np.asarray(vectors, dtype=np.float64)
    w = np.ones(len(v)) if weights is None else np.asarray(weights, dtype=np.float64)
    return l2_normalize((v * w[:, None]).sum(axis=0))


def nearest(centroids: np.ndarray, queries: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Top-k centroids per query. centroids [K, dim], queries [N, dim] -> (scores [N, k], ids [N, k]).

    Columns past K are padded with score -inf and id -1 (faiss's convention)."""
    sims = queries @ centroids.T  # [N, K]
    kk = min(k, sims.shape[1])
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    scores = np.take_along_axis(sims, ids, axis=1)
    if kk < k:
        pad = k - kk
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores.astype(np.float32), ids.astype(np.int64)


def nearest_ids(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """vectors [N, dim], centroids [K, dim] -> index of the nearest centroid [N]."""
    return np.argmax(vectors @ centroids.T, axis=1)
