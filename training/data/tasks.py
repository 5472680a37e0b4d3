"""Synthetic tasks with exactly scorable answers, generated from a seed (nothing downloaded).

Each task turns a random generator into (prompt, response) pairs. The prompts of one task share
a recognisable surface form, so an embedder can tell the tasks apart; their answers are short,
so a few dozen LoRA steps on a 135M model already move exact match.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Example = tuple[str, str]  # (prompt, response)

POSITIVE = "wonderful delightful brilliant charming superb moving gripping hilarious beautiful excellent".split()
NEGATIVE = "boring dull awful terrible tedious clumsy predictable bland painful dreadful".split()
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
}
WORDS = (
    "apple river stone garden window silver planet orange pencil rabbit forest candle market bridge "
    "castle winter dragon island mirror yellow pocket tunnel violin harbor jacket meadow rocket"
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
]


def _add(rng: random.Random) -> Example:
    a, b = rng.randint(10, 49), rng.randint(10, 49)
    return f"Add {a} and {b}.", str(a + b)


def _sentiment(rng: random.Random) -> Example:
    positive = rng.random() < 0.5
    words = rng.sample(POSITIVE if positive else NEGATIVE, 2) + rng.sample(NEUTRAL, 2)
    rng.shuffle(words)
    return f"Review: {' '.join(words)}. Is this review positive or negative?", "positive" if positive else "negative"


def _capital(rng: random.Random) -> Example:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", CAPITALS[country]


def _max(rng: random.Random) -> Example:
    xs = rng.sample(range(1, 100), 4)
    return f"Which is the largest number in the list {', '.join(map(str, xs))}?", str(max(xs))


def _parity(rng: random.Random) -> Example:
    n = rng.randint(1, 999)
    return f"Is the number {n} even or odd?", "even" if n % 2 == 0 else "odd"


def _letter_count(rng: random.Random) -> Example:
    w = rng.choice(WORDS)
    return f"How many letters does the word '{w}' have?", str(len(w))


def _acronym(rng: random.Random) -> Example:
    p = rng.choice(PHRASES)
    return f"Write the acronym of '{p}'.", "".join(w[0] for w in p.split()).upper()


def _uppercase(rng: random.Random) -> Example:
    ws = rng.sample(WORDS, 2)
    return f"Convert to upper case: {' '.join(ws)}", " ".join(ws).upper()


def _first_letter(rng: random.Random) -> Example:
    w = rng.choice(WORDS)
    return f"What is the first letter of the word '{w}'?", w[0]


def _sort(rng: random.Random) -> Example:
    xs = rng.sample(range(1, 10), 4)
    return f"Sort these digits in ascending order: {' '.join(map(str, xs))}", " ".join(map(str, sorted(xs)))


def _subtract(rng: random.Random) -> Example:
    a = rng.randint(20, 99)
    b = rng.randint(1, a - 1)
    return f"Subtract {b} from {a}.", str(a - b)


def _last_word(rng: random.Random) -> Example:
    ws = rng.sample(WORDS, 4)
    return f"Repeat only the last word of this sentence: {' '.join(ws)}", ws[-1]


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # "exact" (exact match) or "rouge1" (ROUGE-1 F1)
    generate: Callable[[random.Random], Example] | None = None  # synthetic tasks
    pool: tuple[Example, ...] = ()  # corpus tasks: fixed items, split 4:1 into train and test
    max_new_tokens: int = 8  # enough for every answer of the task

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        if self.generate is not None:
            return self.generate(rng)
        items = [e for i, e in enumerate(self.pool) if (i % 5 == 0) == (split == "test")]
        return rng.choice(items)


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
