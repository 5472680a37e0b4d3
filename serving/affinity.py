"""Which replica serves a request for an adapter: consistent hashing with bounded load.

vLLM keeps at most `--max-loras` adapters active per batch; a replica asked for more adapters than
that swaps them in and out and runs smaller batches. So each adapter's requests go to its *home*
replica: the first one clockwise from the adapter's point on a hash ring (64 virtual points per
replica), so adding or losing a replica moves only the adapters that hashed to it. When the set
of adapters is known (`set_keys`: those the replicas serve), homes are bounded too: taken in ring
order, an adapter whose home already has ceil(K / n) adapters goes on clockwise, so a few adapters
cannot all land on one replica by chance. The load bound (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded
Loads") keeps a popular adapter from swamping its home: a replica takes a request only while its
requests in flight stay within `load_factor` x the mean (`ceil(c * (total + 1) / n)`), or below
`min_inflight` whatever the others hold (an engine that batches is not overloaded by a few requests
more than its neighbour: the bound alone spills a home's third request while the other replica has
none); past that, the request spills to the least loaded replica. Requests with no adapter (the
base model) go to the least loaded replica. Pure: no I/O, replicas are names, loads are numbers.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class AffinityRing:
    def __init__(self, replicas: Sequence[str], vnodes: int = 64, load_factor: float = 1.25, min_inflight: int = 0):
        if not replicas:
            raise ValueError("at least one replica is needed")
        if load_factor < 1:
            raise ValueError(f"load_factor must be >= 1, got {load_factor}")
        if min_inflight < 0:
            raise ValueError(f"min_inflight must be >= 0, got {min_inflight}")
        self.replicas = list(replicas)
        self.load_factor = load_factor
        self.min_inflight = min_inflight
        ring = sorted((_point(f"{r}#{i}"), r) for r in self.replicas for i in range(vnodes))
        self._points = [p for p, _ in ring]
        self._owners = [r for _, r in ring]
        self.order = lru_cache(maxsize=4096)(self._order)
        self._homes: dict[str, str] = {}  # adapter -> home, when the adapter set is known

    def set_keys(self, keys: Sequence[str] | set[str]) -> None:
        """Balance the homes of a known set of adapters: at most ceil(K / n) per replica."""
        keys = sorted(set(keys), key=_point)
        cap = math.ceil(len(keys) / len(self.replicas)) if keys else 0
        count = dict.fromkeys(self.replicas, 0)
        homes = {}
        for key in keys:
            home = next(r for r in self.order(key) if count[r] < cap)
            homes[key], count[home] = home, count[home] + 1
        self._homes = homes

    def home(self, key: str) -> str:
        return self._homes.get(key) or self.order(key)[0]

    def _order(self, key: str) -> tuple[str, ...]:
        """Every replica, in the order met clockwise from `key`'s point: [0] is its home."""
        start = bisect.bisect(self._points, _point(key))
        seen: dict[str, None] = {}
        for i in range(len(self._owners)):
            seen.setdefault(self._owners[(start + i) % len(self._owners)])
            if len(seen) == len(self.replicas):
                break
        return tuple(seen)

    def choose(self, key: str | None, loads: Mapping[str, int]) -> tuple[str, bool]:
        """The replica for a request on adapter `key`, among `loads` (the replicas that can take it, with
        their requests in flight); and whether it is the adapter's home (False: spilled or no key)."""
        if not loads:
            raise ValueError("no replica to choose from")
        if key is not None:
            cap = max(self.min_inflight, math.ceil(self.load_factor * (sum(loads.values()) + 1) / len(loads)))
            preferred = self._homes.get(key)
            home = preferred if preferred in loads else next((r for r in self.order(key) if r in loads), None)
            if home is not None and loads[home] + 1 <= cap:
                return home, True
        rank = {r: i for i, r in enumerate(self.order(key) if key is not None else self.replicas)}
        return min(loads, key=lambda r: (loads[r], rank.get(r, len(rank)))), False
