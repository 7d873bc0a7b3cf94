"""A multi-hop question corpus generated offline and deterministically: invented entities, their relations, one
document per entity, distractor documents that mention entities without their facts, and questions of 1 to 4 hops.

Entities (names built from syllables, unique): countries, cities (each in a country, on a river), people (a job, a
city of birth, an employer), companies (an industry, a founder, a city of headquarters). Relation paths and their
questions:

- 1 hop, person -> born in: "In which city was P born?"
- 2 hops, person -> born in -> country: "In which country was P born?"
- 3 hops, company -> founder -> born in -> country: "In which country was the founder of X born?"
- 4 hops, person -> employer -> founder -> born in -> country: "In which country was the founder of the company
  that P works for born?"

At 2 hops or more a question can ask for the river of that last city instead of its country (``ask="river"``,
"On which river lies the city where P was born?"), or either, drawn per question (``ask="either"``): an agent
that no longer sees the question when it reads the city's document (a short window) cannot tell which fact to give.

Each question carries its gold chain (the documents to open, in order) and its answer. A corpus of ``size``
documents holds about 2 % countries, 5 % cities, 40 % people, 10 % companies and distractors for the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from clew.tools.search import Doc

ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v",
          "z", "th", "sh", "qu"]  # fmt: skip
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
CODAS = ["", "n", "r", "s", "l", "m", "nd", "rk", "x", "th"]
JOBS = ["chemist", "painter", "engineer", "farmer", "sailor", "teacher", "judge", "baker", "surgeon", "poet"]
INDUSTRIES = ["shipping", "software", "mining", "textile", "banking", "brewing", "printing", "glass"]
SUFFIXES = ["Labs", "Works", "Holdings", "Group", "Mills", "Trading", "Foundry", "Partners"]
MAX_HOPS = 4
ASKS = ("country", "river", "either")


def check_ask(ask: str, hops: int) -> None:
    if ask not in ASKS or (hops == 1 and ask != "country"):
        raise ValueError(f"search ask must be one of {ASKS} ('country' only at 1 hop), got {ask!r} at {hops} hops")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)).capitalize()


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    chain: tuple[str, ...]  # doc ids to open, in order
    hops: int
    alternatives: tuple[str, ...] = ()  # wrong answers the last document also states (the fact not asked for)


@dataclass(frozen=True)
class Corpus:
    docs: tuple[Doc, ...]
    people: tuple[str, ...]  # doc ids
    companies: tuple[str, ...]
    facts: dict[str, dict[str, str]]  # doc id -> relation -> doc id (or a value)
    titles: dict[str, str]

    def question(self, seed: int, hops: int, ask: str = "country") -> Question:
        """The question of ``hops`` hops drawn by ``seed`` (a person or company with the relations it needs); ``ask``
        is the last city's fact asked for at 2 hops or more (module docstring)."""
        if not 1 <= hops <= MAX_HOPS:
            raise ValueError(f"search questions have 1 to {MAX_HOPS} hops, got {hops}")
        check_ask(ask, hops)
        rng = random.Random(seed * 7919 + hops)
        for _ in range(1000):
            start = rng.choice(self.companies if hops == 3 else self.people)
            chain = self._chain(start, hops)
            if chain is not None and len(set(chain)) == len(chain):
                break
        else:
            raise ValueError("the corpus is too small to draw a question with a chain of distinct documents")
        name = self.titles[start]
        if hops == 1:
            return Question(f"In which city was {name} born?", self.titles[self.facts[start]["born_in"]], chain, 1)
        if ask == "either":  # its own stream: the chains drawn above are the same whatever is asked
            ask = random.Random(seed * 7919 + hops + 104_729).choice(("country", "river"))
        city = self.facts[chain[-1]]
        facts = {"country": self.titles[city["country"]], "river": city["river"]}
        answer = facts.pop(ask)
        whose = {2: name, 3: f"the founder of {name}", 4: f"the founder of the company that {name} works for"}[hops]
        asked = {
            "country": f"In which country was {whose} born?",
            "river": f"On which river lies the city where {whose} was born?",
        }
        return Question(asked[ask], answer, chain, hops, tuple(facts.values()))

    def _chain(self, start: str, hops: int) -> tuple[str, ...] | None:
        f = self.facts
        if hops == 1:
            return (start,)
        if hops == 2:
            return (start, f[start]["born_in"])
        if hops == 3:
            founder = f[start]["founder"]
            return (start, founder, f[founder]["born_in"])
        company = f[start]["works_for"]
        founder = f[company]["founder"]
        return (start, company, founder, f[founder]["born_in"]) if founder != start else None


def _names(rng: random.Random, n: int, syllables: tuple[int, int], taken: set[str], suffix: list[str] | None = None,
           two_words: bool = False) -> list[str]:  # fmt: skip
    out: list[str] = []
    while len(out) < n:
        name = _word(rng, rng.randint(*syllables))
        if two_words:
            name = f"{name} {_word(rng, rng.randint(1, 2))}"
        if suffix:
            name = f"{name} {rng.choice(suffix)}"
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


@lru_cache(maxsize=4)
def synthetic_corpus(size: int = 1000, seed: int = 0) -> Corpus:
    """The corpus of about ``size`` documents generated from ``seed`` (cached per process)."""
    if size < 100:
        raise ValueError(f"a synthetic search corpus needs >= 100 documents, got {size}")
    rng = random.Random(seed)
    taken: set[str] = set()
    countries = _names(rng, max(4, size // 50), (2, 3), taken)
    cities = _names(rng, max(8, size // 20), (2, 3), taken)
    rivers = _names(rng, max(4, size // 100), (2, 2), taken)
    people = _names(rng, size * 4 // 10, (1, 2), taken, two_words=True)
    companies = _names(rng, max(4, size // 10), (1, 2), taken, suffix=SUFFIXES)
    ids = {name: f"d{i}" for i, name in enumerate([*countries, *cities, *people, *companies])}
    facts: dict[str, dict[str, str]] = {}
    docs: list[Doc] = []
    city_country = {c: rng.choice(countries) for c in cities}
    for k in countries:
        mine = [c for c in cities if city_country[c] == k][:4]
        docs.append(Doc(ids[k], k, f"{k} is a country." + (f" Its cities include {', '.join(mine)}." if mine else "")))
    for c in cities:
        river = rng.choice(rivers)  # a name, no document of its own
        facts[ids[c]] = {"country": ids[city_country[c]], "river": river}
        docs.append(Doc(ids[c], c, f"{c} is a city in {city_country[c]}. It lies on the {river} river."))
    founders = {x: rng.choice(people) for x in companies}
    for p in people:
        born, employer = rng.choice(cities), rng.choice(companies)
        facts[ids[p]] = {"born_in": ids[born], "works_for": ids[employer]}
        docs.append(Doc(ids[p], p, f"{p} is a {rng.choice(JOBS)}. {p} was born in {born}. {p} works for {employer}."))
    for x in companies:
        hq = rng.choice(cities)
        facts[ids[x]] = {"founder": ids[founders[x]], "hq": ids[hq]}
        docs.append(Doc(ids[x], x, f"{x} is a {rng.choice(INDUSTRIES)} company founded by {founders[x]}. "
                                    f"Its headquarters are in {hq}."))  # fmt: skip
    for n in range(max(0, size - len(docs))):  # distractors: the names, none of the facts
        a, b = rng.sample(people, 2)
        text = f"{a} met {b} in {rng.choice(cities)} to talk about {rng.choice(companies)} and {rng.choice(countries)}."
        docs.append(Doc(f"d{len(docs)}", f"Meeting notes {n}", text))
    titles = {d.doc_id: d.title for d in docs}
    return Corpus(tuple(docs), tuple(ids[p] for p in people), tuple(ids[x] for x in companies), facts, titles)
