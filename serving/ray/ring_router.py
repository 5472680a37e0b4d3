"""Serve's request router for the engine deployment: each adapter's home replica on a hash ring.

Serve's default router (power of two choices with multiplexing) prefers a replica that already
holds the model id, but learns who holds what from the replicas' reports to the controller: a
burst of requests for new adapters lands by "fewest models" on stale counts, and an adapter's
requests were seen split 6/4 across two replicas (tests/integration/test_ray_cluster.py). Here
the choice is a pure function of the adapter's content name and the running replicas, the
consistent hashing of serving/affinity.py: every ingress replica that has seen the same adapters
computes the same homes with no gossip, at most ceil(K / n) adapters a replica (K: the deployed
release's adapters, given to every router at deploy, plus those of later releases as they are seen,
when homes may differ between ingress replicas until each has seen them), and a replica that comes or
goes moves only the adapters that hash to it. Ranks: the
home first, then the others in ring order; Serve moves to the next rank only when every replica
of a rank is at `max_ongoing_requests` (the load bound). The base model (no model id) goes to the
less loaded of two random replicas, as Serve's default does.
"""

from __future__ import annotations

import random

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from fedrouter.serving.affinity import AffinityRing


class AdapterRingRouter(FIFOMixin, RequestRouter):
    MAX_KEYS = 4096  # adapters remembered for balancing; past it the memory starts again

    def initialize_state(self, vnodes: int = 64, keys: list[str] = ()) -> None:
        self._vnodes = vnodes
        self._ring: AffinityRing | None = None
        # The adapters (content names) seen so far: their homes are balanced, at most ceil(K / n) a
        # replica (AffinityRing.set_keys), or a few adapters can all hash to one replica and leave
        # the others idle (seen: 3 adapters, 2 engines, one engine did all the adapter work).
        self._keys: set[str] = set(keys)  # the deployed release's content names

    def _ring_of(self, ids: list[str], model: str) -> AffinityRing:
        changed = self._ring is None or self._ring.replicas != ids
        if changed:
            self._ring = AffinityRing(ids, vnodes=self._vnodes)
        if model not in self._keys:
            if len(self._keys) >= self.MAX_KEYS:
                self._keys.clear()
            self._keys.add(model)
            changed = True
        if changed:
            self._ring.set_keys(self._keys)
        return self._ring

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        model = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        if not model:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        ring = self._ring_of(sorted(by_id), model)
        home = ring.home(model)
        rest = [by_id[i] for i in ring.order(model) if i != home]
        return [[by_id[home]], rest] if rest else [[by_id[home]]]
