"""A local retrieval tool: BM25 over a document collection (``bm25s``), ``search(query, k)`` and ``open(doc_id)``.

``SearchIndex`` holds the documents and their BM25 index (Lucene's BM25 variant, k1 1.5, b 0.75, English stop words
removed, no stemming); an index built once can be saved next to a hash of its documents and loaded again
(``SearchIndex.cached``), so a million-document corpus is indexed once per machine. ``SearchTools`` offers the two
calls as OpenAI function tools for the gateway, with the interface of ``clew.tools.builtin.BuiltinTools``: bad
arguments and unknown ids are replies with ``error`` set, never exceptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clew.tools.calls import ToolReply

SNIPPET_CHARS = 90


@dataclass(frozen=True)
class Doc:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str
    score: float
    snippet: str


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise ImportError("the search tool needs bm25s: pip install 'clew[search]'") from None
    return bm25s


def fingerprint(docs: Sequence[Doc]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{doc.doc_id}\x00{doc.title}\x00{doc.text}\x01".encode())
    return digest.hexdigest()[:16]


class SearchIndex:
    """BM25 over ``docs`` (title and text); ``search`` and ``get`` are thread-safe."""

    def __init__(self, docs: Sequence[Doc], retriever: Any = None) -> None:
        if not docs:
            raise ValueError("a search index needs at least one document")
        self.docs = list(docs)
        self.by_id = {d.doc_id: d for d in self.docs}
        if len(self.by_id) != len(self.docs):
            raise ValueError("document ids must be unique")
        bm25s = _bm25s()
        self._lock = threading.Lock()
        if retriever is None:
            retriever = bm25s.BM25(k1=1.5, b=0.75)
            corpus = bm25s.tokenize([f"{d.title} {d.text}" for d in self.docs], stopwords="en", show_progress=False)
            retriever.index(corpus, show_progress=False)
        self.retriever = retriever

    @classmethod
    def cached(cls, docs: Sequence[Doc], folder: Path) -> SearchIndex:
        """The index of ``docs`` saved in ``folder/<fingerprint>`` (built and saved there the first time)."""
        where = folder / fingerprint(docs)
        if (where / "done").exists():
            return cls(docs, _bm25s().BM25.load(str(where)))
        index = cls(docs)
        where.mkdir(parents=True, exist_ok=True)
        index.retriever.save(str(where))
        (where / "done").write_text("ok")
        return index

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` best documents for ``query`` (fewer when fewer match any of its words), best first."""
        bm25s = _bm25s()
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:
            return []
        k = max(1, min(k, len(self.docs)))
        with self._lock:
            results, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        hits = []
        for index, score in zip(results[0], scores[0]):
            if score <= 0:
                continue
            doc = self.docs[int(index)]
            hits.append(Hit(doc.doc_id, doc.title, float(score), doc.text[:SNIPPET_CHARS]))
        return hits

    def get(self, doc_id: str) -> Doc | None:
        return self.by_id.get(doc_id.strip())


def format_hits(query: str, hits: Sequence[Hit]) -> str:
    if not hits:
        return f"No results for {query!r}."
    lines = [f"Results for {query!r}:"]
    lines += [f"[{h.doc_id}] {h.title}: {h.snippet}{'...' if len(h.snippet) == SNIPPET_CHARS else ''}" for h in hits]
    return "\n".join(lines)


def format_doc(doc: Doc) -> str:
    return f"[{doc.doc_id}] {doc.title}\n{doc.text}"


SEARCH: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the document collection (BM25); returns the best documents' ids, titles and openings.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
                       "required": ["query"]},
    },
}  # fmt: skip
OPEN: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "open",
        "description": "Read a whole document by its id (from search results).",
        "parameters": {"type": "object", "properties": {"doc_id": {"type": "string"}}, "required": ["doc_id"]},
    },
}


@dataclass
class SearchTools:
    """``search`` and ``open`` over ``index`` as function tools (``schemas``, ``call``, ``acall``)."""

    index: SearchIndex
    max_k: int = 10

    def schemas(self) -> list[dict[str, Any]]:
        return [SEARCH, OPEN]

    def call(self, name: str, arguments: str | dict[str, Any]) -> ToolReply:
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        except json.JSONDecodeError as exc:
            return ToolReply(f"Error: arguments are not JSON ({exc.msg}).", error="bad_arguments")
        if name == "search":
            query = args.get("query")
            if not isinstance(query, str) or not query.strip():
                return ToolReply("Error: search needs a non-empty string 'query'.", error="bad_arguments")
            k = args.get("k", 3)
            k = min(max(int(k), 1), self.max_k) if isinstance(k, int) else 3
            return ToolReply(format_hits(query, self.index.search(query, k)))
        if name == "open":
            doc = self.index.get(str(args.get("doc_id", "")))
            if doc is None:
                return ToolReply(f"Error: no document {args.get('doc_id')!r}.", error="unknown_document")
            return ToolReply(format_doc(doc))
        return ToolReply(f"Error: unknown tool {name!r}; the tools are search and open.", error="unknown_tool")

    async def acall(self, name: str, arguments: str | dict[str, Any]) -> ToolReply:
        return await asyncio.to_thread(self.call, name, arguments)
