"""Local and global clustering of FedRouter, and client clustering by LoRA weights.

All vectors are L2-normalised embeddings; k-means is scikit-learn's (weighted where the paper
weights), and centroids are re-normalised so that routing is a cosine comparison. Clients are
grouped by their LoRA updates with scipy's Ward linkage (the clustered-FL baseline).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from fedrouter.router.vectors import l2_normalize


def kmeans(x: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x [N, dim] -> (centroids [k', dim] L2-normalised, labels [N]); k' = min(k, distinct rows)."""
    k = max(1, min(k, len(np.unique(x.round(6), axis=0))))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x, sample_weight=weights)
    return l2_normalize(km.cluster_centers_.astype(np.float32)), km.labels_.astype(np.int64)


def local_clusters(emb: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A client's own clusters: (centroids [k, dim], labels [N], counts [k])."""
    centroids, labels = kmeans(emb, k, seed)
    return centroids, labels, np.bincount(labels, minlength=len(centroids)).astype(np.int64)


def global_clusters(
    local: list[np.ndarray], counts: list[np.ndarray], k: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Server side: k-means over every client's local centroids, weighted by their sample counts.

    local[c] [k_c, dim], counts[c] [k_c] -> (global centroids [K, dim], per client the global id of
    each of its local clusters [k_c]). A global centroid is the count-weighted mean of the local
    centroids assigned to it, so it is the mean embedding of all the samples behind them."""
    stacked = np.concatenate(local)  # [sum k_c, dim]
    w = np.concatenate(counts).astype(np.float64)
    _, labels = kmeans(stacked, k, seed, weights=w)
    K = labels.max() + 1
    centroids = np.stack([(stacked[labels == j] * w[labels == j, None]).sum(0) for j in range(K)])
    out, start = [], 0
    for c in local:
        out.append(labels[start : start + len(c)])
        start += len(c)
    return l2_normalize(centroids), out


def hierarchical_clusters(updates: list[np.ndarray], k: int) -> np.ndarray:
    """Clustered FL baseline, as GabrielTalasso/FedRouter's federated_learning/fed_clustered.py
    does it: the clients' cosine-similarity matrix of their flattened LoRA updates, Ward linkage
    over the pairwise distances of its rows, cut into (at most) k clusters.

    updates[c] [P] -> labels [C] in 0..k'-1, numbered by first appearance."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    x = l2_normalize(np.stack(updates).astype(np.float64))  # [C, P]
    if len(x) <= k:
        return np.arange(len(x), dtype=np.int64)
    similarity = x @ x.T  # [C, C]
    raw = fcluster(linkage(pdist(similarity), method="ward"), t=k, criterion="maxclust")
    order = list(dict.fromkeys(raw.tolist()))
    return np.array([order.index(v) for v in raw], dtype=np.int64)
