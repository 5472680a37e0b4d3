"""Routing: text -> the adapter whose task cluster is nearest, or "no match" below the threshold.

The router knows nothing about generation or HTTP. It owns a release's centroids (as an index)
and its embedder, and answers `route(text)` / `route_batch(texts)`.

Two modes, as the FedRouter paper evaluates: global (every cluster; the default) and local, among
the clusters one client trained (`clusters=router.clusters_of(client)`; None for an unknown
client, which means global routing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedrouter.router.embed import Embedder
from fedrouter.router.index import CentroidIndex
from fedrouter.router.release import Release
from fedrouter.router.vectors import nearest


@dataclass(frozen=True)
class Route:
    adapter: str | None  # None: below the threshold with fallback "base" -> the base model
    cluster: int  # nearest cluster id, also when it was not taken
    score: float  # cosine similarity to that cluster's centroid
    margin: float  # score minus the second-best cluster's score (inf with one cluster)


class Router:
    """Text -> Route over one release's centroids. The router knows nothing about generation."""

    def __init__(self, release: Release, embedder: Embedder, nlist: int = 0):
        if embedder.info.dim != release.manifest.embedder.dim:
            raise ValueError(
                f"embedder gives {embedder.info.dim}-d vectors, release {release.id} expects {release.manifest.embedder.dim}"
            )
        self.release = release
        self.embedder = embedder
        self.index = CentroidIndex(release.centroids, nlist=nlist)
        by_id = {c.id: c.adapter for c in release.manifest.clusters}
        self._adapter_of = [by_id[i] for i in range(len(by_id))]
        self._threshold = release.manifest.routing.threshold
        self._fallback = release.manifest.routing.fallback

    @classmethod
    def from_release(cls, release: Release, device: str = "cpu") -> Router:
        """A router with the embedder the release's manifest records (loaded offline)."""
        from fedrouter.router.embed import load_embedder

        return cls(release, load_embedder(release.manifest.embedder, device))

    def clusters_of(self, client: str) -> list[int] | None:
        """The cluster ids a client trained (the manifest's `client_clusters`); None if unknown."""
        counts = self.release.manifest.client_clusters.get(str(client))
        return sorted(counts) if counts else None

    def route(self, text: str, clusters: Sequence[int] | None = None) -> Route:
        return self.route_batch([text], clusters)[0]

    def route_batch(self, texts: Sequence[str], clusters: Sequence[int] | None = None) -> list[Route]:
        """`clusters`: route among these cluster ids only (local mode); None: among all (global)."""
        return self.route_vectors(self.embedder.embed(texts), clusters)

    def route_vectors(self, vectors: np.ndarray, clusters: Sequence[int] | None = None) -> list[Route]:
        """vectors [N, dim], L2-normalised -> one Route each; `clusters` as in route_batch."""
        if len(vectors) == 0:
            return []
        if clusters is not None:
            allowed = np.array(sorted(set(int(c) for c in clusters)), dtype=np.int64)
            if len(allowed) == 0 or allowed.min() < 0 or allowed.max() >= len(self._adapter_of):
                raise ValueError(f"cluster ids {list(clusters)} are not all in 0..{len(self._adapter_of) - 1}")
            scores, local_ids = nearest(self.release.centroids[allowed], np.asarray(vectors, np.float32), k=2)
            ids = np.where(local_ids >= 0, allowed[np.maximum(local_ids, 0)], -1)
        else:
            scores, ids = self.index.search(vectors, k=2)  # [N, 2]
        routes = []
        for s, i in zip(scores.tolist(), ids.tolist()):
            margin = s[0] - s[1] if i[1] >= 0 else float("inf")
            take = s[0] >= self._threshold or self._fallback == "nearest"
            routes.append(Route(self._adapter_of[i[0]] if take else None, i[0], s[0], margin))
        return routes
