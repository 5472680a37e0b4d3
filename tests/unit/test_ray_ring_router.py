"""Serve's request router for the engine deployment (serving/ray/ring_router.py): every ingress
computes the same home for an adapter, homes of the published release are balanced, and a publish
reseeds them. The ranking alone, without Serve's internals."""

from collections import Counter

import pytest

pytest.importorskip("ray.serve")


class _Replica:
    def __init__(self, unique_id):
        self.replica_id = type("ReplicaID", (), {"unique_id": unique_id})()


class _Pending:
    def __init__(self, model):
        self.metadata = type("Metadata", (), {"multiplexed_model_id": model})()


async def test_the_ring_router_sends_an_adapter_home_from_any_ingress():
    """Two routers (two ingress replicas) seeing the replicas in different orders agree on every
    adapter's home; the others follow as the fallback rank; the base model spreads."""
    from fedrouter.serving.ray.ring_router import AdapterRingRouter

    replicas = [_Replica(i) for i in ("r-a", "r-b", "r-c")]
    routers = []
    for _ in range(2):
        router = AdapterRingRouter.__new__(AdapterRingRouter)  # the ranking only: no Serve internals
        router.initialize_state()
        routers.append(router)
    homes = Counter()
    for n in range(30):
        model = f"adapter{n}@{n:016x}"
        a = await routers[0].choose_replicas(replicas, _Pending(model))
        b = await routers[1].choose_replicas(list(reversed(replicas)), _Pending(model))
        assert [r.replica_id.unique_id for r in a[0]] == [r.replica_id.unique_id for r in b[0]]
        assert len(a) == 2 and {*a[0], *a[1]} == set(replicas)
        homes[a[0][0].replica_id.unique_id] += 1
    assert len(homes) == 3  # every replica is home to some adapters
    base = await routers[0].choose_replicas(replicas, _Pending(""))
    assert len(base) == 1 and len(base[0]) == 2


async def test_the_ring_router_balances_adapters_that_hash_to_one_replica():
    """Three adapters of the published release whose plain ring home is the same replica: their homes
    are balanced (at most ceil(3 / 2) a replica), so both engines get adapter work."""
    from fedrouter.serving.affinity import AffinityRing
    from fedrouter.serving.ray.ring_router import AdapterRingRouter

    replicas = [_Replica(i) for i in ("r-a", "r-b")]
    plain = AffinityRing(["r-a", "r-b"])
    models = [m for m in (f"adapter{n}@{n:016x}" for n in range(200)) if plain.order(m)[0] == "r-a"][:3]
    router = AdapterRingRouter.__new__(AdapterRingRouter)
    router.initialize_state(keys=models)
    homes = Counter()
    for model in models:
        ranks = await router.choose_replicas(replicas, _Pending(model))
        homes[ranks[0][0].replica_id.unique_id] += 1
        assert len(ranks) == 2 and ranks[1][0] is not ranks[0][0]  # the other replica is the fallback
    assert sorted(homes.values()) == [1, 2]


async def test_after_a_publish_every_ingress_agrees_on_the_homes_whatever_it_saw_before():
    """One ingress deployed with release A took the publish of B (reseed) after serving A's adapters
    and an unknown one; another started with B. They agree on every adapter of B (balanced over B
    alone) and on any other adapter (its plain ring home); an unseeded adapter changes nothing."""
    from fedrouter.serving.affinity import AffinityRing
    from fedrouter.serving.ray import ring_router

    replicas = [_Replica(i) for i in ("r-a", "r-b")]
    plain = AffinityRing(["r-a", "r-b"])
    models = [f"adapter{n}@{n:016x}" for n in range(40)]
    release_a, release_b = models[:6], [m for m in models[6:] if plain.order(m)[0] == "r-b"][:4]
    old = ring_router.AdapterRingRouter.__new__(ring_router.AdapterRingRouter)
    old.initialize_state(keys=release_a)
    for model in [*release_a, models[-1]]:
        await old.choose_replicas(replicas, _Pending(model))
    assert ring_router.reseed(release_b) >= 1  # Ingress.reconfigure does this before it swaps
    new = ring_router.AdapterRingRouter.__new__(ring_router.AdapterRingRouter)
    new.initialize_state(keys=release_b)

    async def home(router, model):
        return (await router.choose_replicas(replicas, _Pending(model)))[0][0].replica_id.unique_id

    homes = [await home(old, m) for m in release_b]
    assert homes == [await home(new, m) for m in release_b]
    assert sorted(Counter(homes).values()) == [2, 2]  # balanced, though all four hash to r-b
    for model in [*release_a, models[-1]]:  # a draining release's adapters: the plain ring home
        assert await home(old, model) == await home(new, model) == plain.order(model)[0]
