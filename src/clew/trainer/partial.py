"""The episodes of the rollout in flight, kept as they end, so a run killed mid-rollout does not play them again.

``RUN/rollout/iter_<N>.jsonl`` gets one line per episode of iteration N as it ends: the round's seed (a
dynamic-sampling refill round is a collect of its own), the group id, the member and the episode, appended and
fsynced (a kill leaves at most a torn last line, which ``read_jsonl`` skips). A resumed run hands the episodes
of the iteration it resumes at back to ``collect`` (``finished``): they are kept as recorded and the others
are played with the request seeds they would have drawn, so a killed 40-minute rollout loses only its
unfinished episodes. An episode ended by an ``infra`` failure (a lost engine worker) is not kept: it is
played again, as an engine retry plays it. The file goes once the iteration is recorded; files of other
iterations are removed at resume (their iterations replay from the checkpoint in full). A kill before the first
checkpoint resumes as a fresh start that keeps iteration 0's file.

Bit-identity: the resumed episodes are sampled in smaller batches than the uninterrupted ones would have been,
and batched matmuls round differently in the last bits (~5e-7 in a log-prob). With a batch-invariant engine
(``rollout.engine_params={batch_invariant: true}`` for ``hf``) a resumed run ends bit-identical to an
uninterrupted one (tested); with a batching engine it differs by that rounding. Rollouts sampled ahead
(``rollout.max_staleness >= 1``) are not kept: resumed, they would mix samples of two policies.
"""

from __future__ import annotations

import json
from pathlib import Path

from clew.store.run import append_jsonl, atomic_write_text, read_jsonl
from clew.types import Episode

Key = tuple[int, int]  # (group id, member)


class EpisodeLog:
    """``RUN/rollout/iter_<N>.jsonl``: record, read back, drop."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / "rollout"

    def path(self, iteration: int) -> Path:
        return self.folder / f"iter_{iteration:06d}.jsonl"

    def record(self, iteration: int, round_seed: int, episode: Episode, member: int) -> None:
        line = {"round_seed": round_seed, "group_id": episode.group_id, "member": member, "episode": episode.to_dict()}
        append_jsonl(self.path(iteration), line)

    def finished(self, iteration: int, round_seed: int) -> dict[Key, Episode]:
        """The episodes of one round of ``iteration`` that ended before the kill."""
        lines = read_jsonl(self.path(iteration))
        return {
            (r["group_id"], r["member"]): Episode.from_dict(r["episode"])
            for r in lines
            if r["round_seed"] == round_seed
        }

    def drop(self, iteration: int) -> None:
        self.path(iteration).unlink(missing_ok=True)

    def keep_only(self, iteration: int | None) -> None:
        """Remove every file but ``iteration``'s (None: all of them): a fresh start or a resume. The kept file is
        rewritten without a torn last line, so the next episode appended is not glued onto it."""
        for path in self.folder.glob("iter_*.jsonl"):
            if iteration is None or path != self.path(iteration):
                path.unlink()
        kept = self.path(iteration) if iteration is not None else None
        if kept is not None and kept.exists():
            atomic_write_text(kept, "".join(json.dumps(line) + "\n" for line in read_jsonl(kept)))
