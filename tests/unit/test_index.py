import numpy as np
import pytest

from fedrouter.router.index import CentroidIndex
from fedrouter.router.vectors import l2_normalize, nearest


def test_nearest_on_hand_made_points():
    centroids = l2_normalize(np.array([[1, 0], [0, 1], [-1, 0]], np.float32))
    queries = l2_normalize(np.array([[0.9, 0.1], [0.1, 0.9], [-1, -0.2]], np.float32))
    scores, ids = nearest(centroids, queries, k=2)
    assert ids[:, 0].tolist() == [0, 1, 2]
    assert ids[0, 1] == 1  # (0.9, 0.1) is nearer to (0, 1) than to (-1, 0)
    np.testing.assert_allclose(scores[0, 0], 0.9 / np.hypot(0.9, 0.1), rtol=1e-6)


@pytest.mark.parametrize("k_centroids", [1, 3, 50])
def test_faiss_index_agrees_with_numpy_reference(k_centroids):
    rng = np.random.default_rng(k_centroids)
    centroids = l2_normalize(rng.normal(size=(k_centroids, 32)))
    queries = l2_normalize(rng.normal(size=(200, 32)))
    ref_scores, ref_ids = nearest(centroids, queries, k=2)
    scores, ids = CentroidIndex(centroids).search(queries, k=2)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_single_centroid_pads_second_neighbour():
    scores, ids = nearest(np.array([[1.0, 0.0]], np.float32), np.array([[1.0, 0.0]], np.float32), k=2)
    assert ids.tolist() == [[0, -1]] and scores[0, 1] == -np.inf


def test_approximate_index_finds_well_separated_clusters():
    rng = np.random.default_rng(0)
    centroids = l2_normalize(rng.normal(size=(1024, 64)))
    queries = l2_normalize(centroids[:100] + 0.05 * rng.normal(size=(100, 64)))
    _, ids = CentroidIndex(centroids, nlist=32, nprobe=8).search(queries, k=1)
    assert (ids[:, 0] == np.arange(100)).mean() >= 0.95


def test_index_rejects_wrong_dimension():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        CentroidIndex(np.eye(4, dtype=np.float32)).search(np.ones((1, 3), np.float32))
