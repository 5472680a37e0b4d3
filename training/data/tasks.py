"""Synthetic tasks with exactly scorable answers, generated from a seed (nothing downloaded).

Each task turns a random generator into (prompt, response) pairs. The prompts of one task share
a recognisable surface form, so an embedder can tell the tasks apart; their answers are short,
so a few dozen LoRA steps on a 135M model already move exact match.

Train and test are disjoint by construction: every task draws its entities (countries, words,
phrases, sentiment words) from a train or a test part of its lists (`held_out_part`), and every
task whose prompts are made of numbers keeps the number tuples whose digest falls in the test
fifth (`is_test_key`) for the test split only. A test prompt is therefore never a training prompt,
and for the lookup tasks (capital, letters, acronym, ...) its entity was never seen in training.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Example = tuple[str, str]  # (prompt, response)
TEST_SHARE = 5  # one entity / number tuple in 5 is held out for testing

POSITIVE = (
    "wonderful delightful brilliant charming superb moving gripping hilarious beautiful excellent "
    "touching stunning clever joyful splendid"
).split()
NEGATIVE = (
    "boring dull awful terrible tedious clumsy predictable bland painful dreadful messy shallow lifeless "
    "annoying forgettable"
).split()
NEUTRAL = "the film story plot actors music scenes ending director script".split()
CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Kenya": "Nairobi",
    "Australia": "Canberra",
    "Brazil": "Brasilia",
    "Germany": "Berlin",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "India": "Delhi",
    "China": "Beijing",
    "Russia": "Moscow",
    "Mexico": "Mexico City",
    "Turkey": "Ankara",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
    "Argentina": "Buenos Aires",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "Switzerland": "Bern",
    "Colombia": "Bogota",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Nigeria": "Abuja",
    "Ghana": "Accra",
    "Morocco": "Rabat",
}
WORDS = (
    "apple river stone garden window silver planet orange pencil rabbit forest candle market bridge "
    "castle winter dragon island mirror yellow pocket tunnel violin harbor jacket meadow rocket "
    "basket cotton ladder butter summer thunder kitten puzzle saddle lemon marble anchor helmet "
    "velvet canyon pepper cloud tiger piano wallet shadow copper flower button desert engine "
    "feather garlic hammer insect jungle kettle lantern needle oyster parrot"
).split()
PHRASES = [
    "portable network graphics",
    "central processing unit",
    "random access memory",
    "world health organization",
    "frequently asked questions",
    "as soon as possible",
    "graphical user interface",
    "hypertext markup language",
    "national aeronautics space administration",
    "artificial general intelligence",
    "domain name system",
    "virtual private network",
    "universal serial bus",
    "light emitting diode",
    "global positioning system",
    "read only memory",
    "solid state drive",
    "internet service provider",
    "chief executive officer",
    "very important person",
    "do it yourself",
    "rest in peace",
    "for your information",
    "application programming interface",
    "local area network",
    "operating system",
    "personal identification number",
    "unidentified flying object",
    "european union",
    "united nations",
]


def held_out_part(items: Sequence, split: str) -> list:
    """The train or test part of an entity list: every TEST_SHARE-th item (sorted) is for testing."""
    ordered = sorted(items)
    return [x for i, x in enumerate(ordered) if (i % TEST_SHARE == TEST_SHARE - 1) == (split == "test")]


def is_test_key(key: str) -> bool:
    """A number tuple's split, from a stable digest of its text (the same in every process)."""
    return zlib.crc32(key.encode()) % TEST_SHARE == 0


def _numbers(rng: random.Random, split: str, draw: Callable[[random.Random], tuple[int, ...]]) -> tuple[int, ...]:
    """Draw number tuples until one falls in `split`."""
    while True:
        xs = draw(rng)
        if is_test_key(",".join(map(str, xs))) == (split == "test"):
            return xs


def _add(rng: random.Random, split: str) -> Example:
    a, b = _numbers(rng, split, lambda r: (r.randint(10, 49), r.randint(10, 49)))
    return f"Add {a} and {b}.", str(a + b)


def _sentiment(rng: random.Random, split: str) -> Example:
    positive = rng.random() < 0.5
    words = rng.sample(held_out_part(POSITIVE if positive else NEGATIVE, split), 2) + rng.sample(NEUTRAL, 2)
    rng.shuffle(words)
    return f"Review: {' '.join(words)}. Is this review positive or negative?", "positive" if positive else "negative"


def _capital(rng: random.Random, split: str) -> Example:
    country = rng.choice(held_out_part(CAPITALS, split))
    return f"What is the capital of {country}?", CAPITALS[country]


def _max(rng: random.Random, split: str) -> Example:
    xs = _numbers(rng, split, lambda r: tuple(r.sample(range(1, 100), 4)))
    return f"Which is the largest number in the list {', '.join(map(str, xs))}?", str(max(xs))


def _parity(rng: random.Random, split: str) -> Example:
    (n,) = _numbers(rng, split, lambda r: (r.randint(1, 999),))
    return f"Is the number {n} even or odd?", "even" if n % 2 == 0 else "odd"


def _letter_count(rng: random.Random, split: str) -> Example:
    w = rng.choice(held_out_part(WORDS, split))
    return f"How many letters does the word '{w}' have?", str(len(w))


def _acronym(rng: random.Random, split: str) -> Example:
    p = rng.choice(held_out_part(PHRASES, split))
    return f"Write the acronym of '{p}'.", "".join(w[0] for w in p.split()).upper()


def _uppercase(rng: random.Random, split: str) -> Example:
    ws = rng.sample(held_out_part(WORDS, split), 2)
    return f"Convert to upper case: {' '.join(ws)}", " ".join(ws).upper()


def _first_letter(rng: random.Random, split: str) -> Example:
    w = rng.choice(held_out_part(WORDS, split))
    return f"What is the first letter of the word '{w}'?", w[0]


def _sort(rng: random.Random, split: str) -> Example:
    xs = _numbers(rng, split, lambda r: tuple(r.sample(range(1, 10), 4)))
    return f"Sort these digits in ascending order: {' '.join(map(str, xs))}", " ".join(map(str, sorted(xs)))


def _subtract(rng: random.Random, split: str) -> Example:
    def draw(r: random.Random) -> tuple[int, int]:
        a = r.randint(20, 99)
        return a, r.randint(1, a - 1)

    a, b = _numbers(rng, split, draw)
    return f"Subtract {b} from {a}.", str(a - b)


def _last_word(rng: random.Random, split: str) -> Example:
    ws = rng.sample(held_out_part(WORDS, split), 4)
    return f"Repeat only the last word of this sentence: {' '.join(ws)}", ws[-1]


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # "exact" (exact match) or "rouge1" (ROUGE-1 F1)
    generate: Callable[[random.Random, str], Example] | None = None  # synthetic tasks: (rng, split)
    pool: tuple[Example, ...] = ()  # corpus tasks: fixed items, split by item (every 5th for testing)
    test_pool: tuple[Example, ...] = ()  # if given, `pool` is the train split and this the test split
    max_new_tokens: int = 8  # enough for every answer of the task
    _splits: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        """One example of the train or test split; the two never share a prompt."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.generate is not None:
            return self.generate(rng, split)
        return rng.choice(self.items(split))

    def items(self, split: str) -> list[Example]:
        """A corpus task's items of one split (the pool is deduplicated by prompt first)."""
        if split in self._splits:
            return self._splits[split]
        seen: dict[str, Example] = {}
        for e in self.pool:
            seen.setdefault(e[0], e)
        unique = list(seen.values())
        if self.test_pool:  # given splits: a test prompt that is also a training prompt is dropped
            test = [e for e in dict((e[0], e) for e in self.test_pool).values() if e[0] not in seen]
            self._splits.update(train=unique, test=test)
        else:
            self._splits["train"] = [e for i, e in enumerate(unique) if i % TEST_SHARE != 0]
            self._splits["test"] = [e for i, e in enumerate(unique) if i % TEST_SHARE == 0]
        return self._splits[split]


SYNTHETIC: dict[str, Task] = {
    t.name: t
    for t in [
        Task("add", "exact", _add),
        Task("sentiment", "exact", _sentiment),
        Task("capital", "exact", _capital),
        Task("max", "exact", _max),
        Task("parity", "exact", _parity),
        Task("letters", "exact", _letter_count),
        Task("acronym", "exact", _acronym),
        Task("uppercase", "exact", _uppercase, max_new_tokens=12),
        Task("first_letter", "exact", _first_letter),
        Task("sort", "exact", _sort, max_new_tokens=10),
        Task("subtract", "exact", _subtract),
        Task("last_word", "exact", _last_word),
    ]
}
