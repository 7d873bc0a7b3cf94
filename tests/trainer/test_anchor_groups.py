"""GiGPO anchor groups beyond exact state keys in the loop: an env without ``state_key()``, hidden-state features."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clew.policy import HFPolicy
from clew.store.run import read_jsonl
from clew.tensors import left_pad
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.states import prompt_states
from clew.viz.data import RunData

Make = Callable[..., RunConfig]
NO_STATE_KEY = ["env.id=tests.test_table:ReportsOutcome", "eval.every=0", "eval.at_start=false", "eval.at_end=false"]


def test_gigpo_groups_by_normalized_text_on_an_env_without_state_keys(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("credit.name=gigpo", "credit.params.state_grouping=normalized", *NO_STATE_KEY)
    assert Trainer(cfg, tmp_path / "run").fit()["iterations"] == 2
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    # ReportsOutcome answers "go" then "ok": every turn of a group shares its anchor with the group's other episodes
    assert [r["credit/anchor_rows_grouped"] for r in rows] == [1.0, 1.0]
    assert [r["credit/anchor_group_size"] for r in rows] == [4.0, 4.0]  # group_size 4
    stored = pq.read_table(tmp_path / "run" / "trajectories" / "iter_000001.parquet").to_pylist()
    assert all(r["state_key"] is None and r["anchor_group"] is not None for r in stored)
    first = RunData("run", tmp_path / "run").episode(1, 0).turns[0]
    assert first.state_key is None and first.anchor_group is not None and len(first.anchor) == 3


def test_gigpo_similarity_on_hidden_states_trains(tiny_cfg: Make, tmp_path: Path) -> None:
    params = ["credit.params.state_grouping=similarity", "credit.params.state_features=hidden"]
    cfg = tiny_cfg("credit.name=gigpo", *params, "credit.params.state_similarity=0.999", "iterations=1", *NO_STATE_KEY)
    Trainer(cfg, tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert row["credit/anchor_group_size"] >= 1.0 and 0.0 <= row["credit/anchor_rows_grouped"] <= 1.0
    stored = pq.read_table(tmp_path / "run" / "trajectories" / "iter_000001.parquet").to_pylist()
    assert all(r["anchor_group"] is not None for r in stored)


def test_prompt_states_are_the_last_prompt_tokens_hidden_state(tiny_policy: HFPolicy) -> None:
    """Batched and left-padded == one prompt at a time through the full forward's last hidden state."""
    import torch

    prompts = [[5, 6, 7, 8, 9], [5, 6], [11, 12, 13]]
    batched = prompt_states(tiny_policy.model, prompts, tiny_policy.pad_id, rows_per_pass=2)
    with torch.no_grad():
        alone = [
            tiny_policy.model(*left_pad([p], tiny_policy.pad_id), output_hidden_states=True).hidden_states[-1][0, -1]
            for p in prompts
        ]
    assert batched.shape == (3, tiny_policy.model.config.hidden_size)
    np.testing.assert_allclose(batched, torch.stack(alone).numpy(), atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


@pytest.mark.parametrize("grouping", ["exact", "normalized"])
def test_exact_grouping_keeps_the_state_key_refusal(grouping: str, tiny_cfg: Make) -> None:
    from clew.trainer.session import check_env_serves

    cfg = tiny_cfg("credit.name=gigpo", f"credit.params.state_grouping={grouping}", *NO_STATE_KEY)
    if grouping == "exact":
        with pytest.raises(ValueError, match=r"has no state_key.*state_grouping=normalized"):
            check_env_serves(cfg)
    else:
        check_env_serves(cfg)
