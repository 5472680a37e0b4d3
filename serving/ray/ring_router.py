"""Serve's request router for the engine deployment: each adapter's home replica on a hash ring.

Serve's default router (power of two choices with multiplexing) prefers a replica that already
holds the model id, but learns who holds what from the replicas' reports to the controller: a
burst of requests for new adapters lands by "fewest models" on stale counts, and an adapter's
requests were seen split 6/4 across two replicas (tests/integration/test_ray_cluster.py). Here
the choice is a pure function of the adapter's content name and the running replicas, the
consistent hashing of serving/affinity.py, so every ingress replica computes the same homes with
no gossip. The adapters whose homes are balanced (at most ceil(K / n) a replica) are exactly those
of the published release: given to every router at deploy (`keys`), and replaced in every router of
an ingress replica when it takes a publish (`reseed`, called by `Ingress.reconfigure` before it
swaps), so the homes of the release being served never depend on what a replica has seen. Any
other adapter (one of a release still draining) goes to its plain ring home, also the same from
every ingress. A replica that comes or goes moves only the adapters that hash to it. Ranks: the
home first, then the others in ring order; Serve moves to the next rank only when every replica
of a rank is at `max_ongoing_requests` (the load bound). The base model (no model id) goes to the
less loaded of two random replicas, as Serve's default does.
"""

from __future__ import annotations

import random
import weakref

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from fedrouter.serving.affinity import AffinityRing

_ROUTERS: weakref.WeakSet = weakref.WeakSet()  # this process's rings (Serve makes one router per handle)


def reseed(keys: list[str]) -> int:
    """Balance every ring of this process (routers and door choosers) over `keys` (a newly
    published release's content names) from its next request on; returns how many took them."""
    frozen = frozenset(keys)
    rings = list(_ROUTERS)
    for ring in rings:
        ring.seed = frozen  # one assignment: the ring's loop sees the old set or the new one
    return len(rings)


class SeededRing:
    """The hash ring over the running replicas' ids, its homes balanced over the published
    release's adapters (`seed`); rebuilt only when the replicas or the seed change. Serve's router
    below and the ingress's door chooser (serving/ray/direct_transport.py) both place with it, so
    they agree on every adapter's home."""

    def __init__(
        self, keys: list[str] | tuple[str, ...] = (), vnodes: int = 64, load_factor: float = 1.25, min_inflight: int = 0
    ):
        self._vnodes, self._load_factor, self._min_inflight = vnodes, load_factor, min_inflight
        self._ring: AffinityRing | None = None
        # Balanced: without it a few adapters can all hash to one replica and leave the others idle
        # (seen: 3 adapters, 2 engines, one engine did all the adapter work).
        self.seed: frozenset[str] = frozenset(keys)  # the published release's content names
        self._applied: frozenset[str] | None = None
        _ROUTERS.add(self)

    def of(self, ids: list[str]) -> AffinityRing:
        """The ring over `ids` (sorted replica ids)."""
        seed = self.seed
        if self._ring is None or self._ring.replicas != ids:
            self._ring = AffinityRing(
                ids, vnodes=self._vnodes, load_factor=self._load_factor, min_inflight=self._min_inflight
            )
            self._applied = None
        if self._applied is not seed:
            self._ring.set_keys(seed)
            self._applied = seed
        return self._ring


class AdapterRingRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, vnodes: int = 64, keys: list[str] = ()) -> None:
        self._homes = SeededRing(keys, vnodes)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        model = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        if not model:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        ring = self._homes.of(sorted(by_id))
        home = ring.home(model)
        rest = [by_id[i] for i in ring.order(model) if i != home]
        return [[by_id[home]], rest] if rest else [[by_id[home]]]
