"""search/<corpus>: answer a multi-hop question by searching a local document collection (BM25, ``clew.tools.search``).

Actions, one per turn (case-insensitive prefix):

- ``search: <query>`` lists the ``k`` best documents (id, title, opening);
- ``open: <doc_id>`` shows a whole document;
- ``answer: <text>`` ends the episode, scored against the gold answer by normalised exact match (reward 1) or token
  F1 (``reward="f1"``); both are in ``info`` (``em``, ``f1``), ``success`` is the exact match.

Anything else, or an unknown document, is an invalid action: it costs a turn and returns an error observation; the
env never raises on model output. Corpora: ``search/synthetic`` (``clew.envs.library.search_corpus``: ``size``
documents from ``corpus_seed``, questions of ``hops`` hops asking for the last city's ``ask``: ``country``, ``river``
or ``either``) or ``search/jsonl`` (``docs``: a JSONL of ``{"id", "title", "text"}``, ``questions``: a JSONL of
``{"question", "answer", "chain"?}`` with ``chain`` the doc ids to open in order, which the scripted expert follows).
The state key is how many documents of the gold chain have been opened in order and whether the next one has been
listed; the expert searches for the next document's title, opens it, and answers after the last. Indexes are built
once per machine (``<cache>/search``).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from clew.envs.base import PickledSnapshot, StepResult, ensure_running
from clew.envs.library.search_corpus import MAX_HOPS, Question, check_ask, synthetic_corpus
from clew.paths import cache_root
from clew.tools.search import Doc, SearchIndex, format_doc, format_hits

USAGE = "Tools: 'search: <query>' lists documents; 'open: <doc_id>' reads one; 'answer: <text>' ends the episode."


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalise(prediction).split(), normalise(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Collection:
    index: SearchIndex
    questions: tuple[Question, ...] | None  # None: drawn from a synthetic corpus by seed


@lru_cache(maxsize=4)
def _synthetic(size: int, corpus_seed: int) -> Collection:
    corpus = synthetic_corpus(size, corpus_seed)
    return Collection(SearchIndex.cached(corpus.docs, cache_root() / "search"), None)


@lru_cache(maxsize=4)
def _jsonl(docs: str, questions: str) -> Collection:
    rows = [json.loads(line) for line in Path(docs).read_text().splitlines() if line.strip()]
    items = tuple(Doc(str(r["id"]), str(r.get("title", "")), str(r["text"])) for r in rows)
    qs = []
    for line in Path(questions).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            chain = tuple(str(x) for x in r.get("chain", ()))
            qs.append(Question(str(r["question"]), str(r["answer"]), chain, len(chain)))
    if not qs:
        raise ValueError(f"{questions}: no questions")
    return Collection(SearchIndex.cached(items, cache_root() / "search"), tuple(qs))


class SearchEnv(PickledSnapshot):
    """One question per episode over a shared, read-only collection (module docstring)."""

    def __init__(self, corpus: str = "synthetic", size: int = 1000, hops: int = 2, corpus_seed: int = 0, k: int = 3,
                 max_steps: int | None = None, reward: str = "em", docs: str | None = None,
                 questions: str | None = None, ask: str = "country") -> None:  # fmt: skip
        if corpus not in ("synthetic", "jsonl"):
            raise ValueError(f"search corpus must be 'synthetic' or 'jsonl', got {corpus!r}")
        if not 1 <= hops <= MAX_HOPS:
            raise ValueError(f"search hops must be in [1, {MAX_HOPS}], got {hops}")
        if reward not in ("em", "f1"):
            raise ValueError(f"search reward must be 'em' or 'f1', got {reward!r}")
        if not 1 <= k <= 20:
            raise ValueError(f"search k must be in [1, 20], got {k}")
        check_ask(ask, hops)
        if corpus == "jsonl" and ask != "country":
            raise ValueError("search ask is for the synthetic corpus; a JSONL corpus's questions are its own")
        if corpus == "jsonl" and not (docs and questions):
            raise ValueError("search/jsonl needs docs=<path.jsonl> and questions=<path.jsonl>")
        self.corpus, self.size, self.hops, self.corpus_seed, self.k = corpus, size, hops, corpus_seed, k
        self.reward, self.docs_path, self.questions_path, self.ask = reward, docs, questions, ask
        self.max_steps = max_steps or 2 * hops + 2
        self._finished = True

    @property
    def collection(self) -> Collection:
        if self.corpus == "synthetic":
            return _synthetic(self.size, self.corpus_seed)
        assert self.docs_path and self.questions_path
        return _jsonl(self.docs_path, self.questions_path)

    def reset(self, seed: int) -> str:
        fixed = self.collection.questions
        if fixed is None:
            self.question = synthetic_corpus(self.size, self.corpus_seed).question(seed, self.hops, self.ask)
        else:
            self.question = fixed[random.Random(seed).randrange(len(fixed))]
        self.progress, self.steps, self.listed = 0, 0, set[str]()
        self._finished = False
        return f"Question: {self.question.text}\n{USAGE}"

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "SearchEnv")
        self.steps += 1
        head, _, body = action.strip().partition(":")
        kind, body = head.strip().lower(), body.strip()
        if kind == "answer":
            return self._answer(body)
        if kind == "search" and body:
            hits = self.collection.index.search(body, self.k)
            self.listed.update(h.doc_id for h in hits)
            return self._next(format_hits(body, hits), {"tool_call": f"search: {body}"})
        if kind == "open" and body:
            doc = self.collection.index.get(body.strip("[] "))
            if doc is None:
                return self._next(f"Error: no document {body[:40]!r}.", {"invalid_action": True})
            chain = self.question.chain
            if self.progress < len(chain) and doc.doc_id == chain[self.progress]:
                self.progress += 1
            return self._next(format_doc(doc), {"tool_call": f"open: {doc.doc_id}"})
        return self._next(f"Error: expected 'search: ...', 'open: ...' or 'answer: ...', got {action.strip()[:40]!r}.",
                          {"invalid_action": True})  # fmt: skip

    def _answer(self, body: str) -> StepResult:
        self._finished = True
        em = normalise(body) == normalise(self.question.answer)
        score = f1(body, self.question.answer)
        reward = float(em) if self.reward == "em" else score
        info = {"em": em, "f1": score, "success": em, "answer": body, "optimal_steps": self.optimal_steps}
        return StepResult("Correct." if em else "Wrong.", reward, True, False, info)

    def _next(self, observation: str, info: dict[str, object]) -> StepResult:
        info["optimal_steps"] = self.optimal_steps
        if self.steps >= self.max_steps:
            self._finished = True
            return StepResult(observation + "\nOut of steps.", 0.0, False, True, info)
        return StepResult(observation, 0.0, False, False, info)

    @property
    def optimal_steps(self) -> int:
        return 2 * len(self.question.chain) + 1

    def state_key(self) -> str:
        chain = self.question.chain
        listed = self.progress < len(chain) and chain[self.progress] in self.listed
        return f"{self.progress}:{int(listed)}"

    def expert_action(self) -> str:
        chain = self.question.chain
        if self.progress >= len(chain):
            return f"answer: {self.question.answer}"
        doc = chain[self.progress]
        if doc in self.listed:
            return f"open: {doc}"
        title = self.collection.index.by_id[doc].title
        return f"search: {title}"

    def gold_reply(self) -> str:
        return f"answer: {self.question.answer}"

    def valid_actions(self) -> list[str]:
        """The expert's action, searches for the chain's titles, opening what was listed, and wrong answers (the
        chain's own titles): noisy demonstrations never guess the answer without reading it."""
        by_id = self.collection.index.by_id
        titles = [by_id[d].title for d in self.question.chain if d in by_id]
        actions = [f"search: {t}" for t in titles] + [f"open: {d}" for d in sorted(self.listed)[:5]]
        wrong = [*titles, *self.question.alternatives]
        actions += [f"answer: {t}" for t in wrong if normalise(t) != normalise(self.question.answer)]
        return sorted({*actions, self.expert_action()})
