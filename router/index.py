"""Nearest-centroid search: the faiss index that serving uses (the numpy reference is
`vectors.nearest`).

Both take L2-normalised float32 vectors and score by inner product (= cosine similarity).
A test checks that they agree.
"""

from __future__ import annotations

import numpy as np


class CentroidIndex:
    """faiss index over the centroids. Exact (IndexFlatIP) by default; `nlist` > 0 builds an
    approximate IVF index, worth it only for thousands of centroids."""

    def __init__(self, centroids: np.ndarray, nlist: int = 0, nprobe: int = 8):
        import faiss

        c = np.ascontiguousarray(centroids, dtype=np.float32)  # [K, dim]
        self.size, self.dim = c.shape
        if nlist > 0:
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(c)
            index.nprobe = nprobe
            self._quantizer = quantizer  # faiss does not own it from Python; keep it alive
        else:
            index = faiss.IndexFlatIP(self.dim)
        index.add(c)
        self._index = index

    def search(self, queries: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """queries [N, dim] -> (scores [N, k], ids [N, k]); same contract as `nearest`."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [N, {self.dim}], got {list(q.shape)}")
        scores, ids = self._index.search(q, k)
        scores[ids < 0] = -np.inf  # faiss pads with -FLT_MAX; say "none" the way `nearest` does
        return scores, ids
