"""The trainer with each rollout engine: real sync + parity probe, rows equal to what the engine saw and
sampled, seeded repeats, engine failures retried once then stopped resumably, and config refusals."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from clew.cli import main
from clew.policy import Completion, Engine, EngineError, SamplingParams
from clew.policy.hf import HFEngine
from clew.tensors import TokenRow
from clew.trainer import sync as sync_lib
from clew.trainer.config import RunConfig
from clew.trainer.learner import Learner
from clew.trainer.loop import Trainer

Make = Callable[..., RunConfig]
VLLM = ("rollout.engine=vllm", "rollout.engine_params={kv_cache_gib: 0.25}")


def needs_vllm() -> None:
    pytest.importorskip("vllm", reason="the vllm extra is not installed")


def records(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


class Recording:
    """Wraps an engine; remembers every (prompt, sampled ids, log-probs) it served."""

    def __init__(self, inner: Engine) -> None:
        self.inner, self.seen = inner, []  # type: ignore[var-annotated]
        self.max_model_len, self.continuous_batching = inner.max_model_len, inner.continuous_batching

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]) -> Any:
        outs = self.inner.generate(prompts, params, seeds)
        self.seen += [(list(p), o) for p, o in zip(prompts, outs)]
        return outs

    def load_weights(self, named: Any) -> None:
        self.inner.load_weights(named)

    def close(self) -> None:
        self.inner.close()


def serve_recorded(monkeypatch: pytest.MonkeyPatch) -> list[Recording]:
    made: list[Recording] = []
    real = sync_lib.open_engine

    def open_recorded(*args: Any) -> Recording:
        made.append(Recording(real(*args)))
        return made[-1]

    monkeypatch.setattr("clew.trainer.session.open_engine", open_recorded)
    return made


def capture_rows(monkeypatch: pytest.MonkeyPatch) -> list[TokenRow]:
    rows: list[TokenRow] = []
    real = Learner.update

    def update(self: Learner, batch: list[TokenRow], seed: int) -> dict[str, float]:
        rows.extend(batch)
        return real(self, batch, seed)

    monkeypatch.setattr(Learner, "update", update)
    return rows


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_rows_are_exactly_what_the_engine_saw_and_sampled(
    engine: str, tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine == "vllm":
        needs_vllm()
    made, rows = serve_recorded(monkeypatch), capture_rows(monkeypatch)
    overrides = VLLM if engine == "vllm" else ("rollout.engine=hf",)
    Trainer(tiny_cfg(*overrides, "eval.at_start=false", "eval.every=0", "eval.at_end=false"), tmp_path / "r").fit()
    served: dict[tuple[int, ...], Completion] = {tuple(p + o.token_ids): o for p, o in made[0].seen}
    assert rows and all(len(r.spans) == 2 for r in rows)  # one row per turn (merge_prefix off)
    for row in rows:
        (prompt, _), (action, is_action) = row.spans
        out = served[tuple(prompt + action)]  # the very ids, byte for byte
        assert is_action and out.token_ids == action
        assert row.behavior_logprobs == out.logprobs and row.old_logprobs is None


def test_vllm_trains_with_a_checked_sync_every_iteration(tiny_cfg: Make, tmp_path: Path) -> None:
    """The parity probe runs at the first sync (then every 10th); every update checks the sync it trained on
    for free: the learner's log-probs of the sampled tokens against vLLM's."""
    needs_vllm()
    cfg = tiny_cfg(*VLLM)
    assert cfg.objective.tis_cap == 2.0  # TIS on by default: the engine is not the learner's own model
    summary = Trainer(cfg, tmp_path / "run").fit()
    assert summary["iterations"] == 2
    its = records(tmp_path / "run", "iteration")
    assert all(0 <= r["engine/train_logprob_max_abs_diff"] < 1e-3 and r["time/sync_s"] >= 0 for r in its)
    assert not any("engine/logprob_max_abs_diff" in r for r in its)  # syncs 2 and 3: not probed
    engine = records(tmp_path / "run", "engine")[0]
    assert engine["engine/name"] == "vllm" and engine["engine/logprob_max_abs_diff"] < 1e-3


def test_vllm_serves_a_lora_policy_through_merged_weights(tiny_cfg: Make, tmp_path: Path) -> None:
    """The adapters move every iteration; the engine gets base + delta and the parity probe holds."""
    needs_vllm()
    lora = "policy.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj]}"
    cfg = tiny_cfg(
        *VLLM, lora, "shaping.invalid_action_penalty=0.5", "eval.every=0", "eval.at_start=false",
        "rollout.parity_probe_every=1",
    )  # fmt: skip
    Trainer(cfg, tmp_path / "run").fit()
    its = records(tmp_path / "run", "iteration")
    assert all(r["train/grad_norm"] > 0 for r in its)  # the adapters did change
    assert all(0 <= r["engine/logprob_max_abs_diff"] < 1e-3 for r in its)
    for engine in ("hf", "vllm"):  # `clew eval` on the LoRA run: base + adapter, merged for vllm
        args = ["eval", "--env", "keydoor-v0", "--env-arg", "width=3", "--env-arg", "height=3", "--episodes", "2"]
        assert main([*args, "--policy", str(tmp_path / "run"), "--engine", engine]) == 0


def test_seeded_vllm_runs_repeat_exactly(tiny_cfg: Make, tmp_path: Path) -> None:
    needs_vllm()
    import pyarrow.parquet as pq

    for name in ("a", "b"):
        Trainer(tiny_cfg(*VLLM, "eval.at_start=false", "eval.every=0"), tmp_path / name).fit()
    for it in (1, 2):
        a, b = (pq.read_table(tmp_path / n / "trajectories" / f"iter_{it:06d}.parquet") for n in ("a", "b"))
        assert a.column("action_ids").to_pylist() == b.column("action_ids").to_pylist()
        assert a.column("behavior_logprobs").to_pylist() == b.column("behavior_logprobs").to_pylist()
    loss = [[r["train/loss"] for r in records(tmp_path / n, "iteration")] for n in ("a", "b")]
    assert loss[0] == loss[1]


@pytest.mark.parametrize("every, caught_at", [(None, 1), (1, 0)])
def test_a_skipped_sync_stops_the_run_loudly(
    tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: int | None, caught_at: int
) -> None:
    """Probed at every sync, the stale engine is caught at the sync of iteration 0. By default (every 10th sync)
    iteration 1's update sees its rows' engine log-probs disagree with the learner's, so that sync is probed."""
    needs_vllm()
    from clew.policy.vllm_engine import VLLMEngine

    monkeypatch.setattr(VLLMEngine, "load_weights", lambda self, named: None)  # the deliberate bug
    with pytest.raises(
        EngineError, match=rf"parity probe after the weight sync of iteration {caught_at}.*rollout.engine_tolerance"
    ):
        # penalised invalid actions give the untrained model a gradient, so the first update moves it
        cfg = tiny_cfg(
            *VLLM, "train.lr=3e-3", "shaping.invalid_action_penalty=0.5", "eval.at_start=false",
            f"rollout.parity_probe_every={every if every else 'null'}",
        )  # fmt: skip
        Trainer(cfg, tmp_path / "run").fit()
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_engine_crash_is_retried_once(tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = HFEngine.poll

    def flaky(self: HFEngine) -> list[tuple[int, Completion]]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("engine core died")
        return real(self)

    monkeypatch.setattr(HFEngine, "poll", flaky)
    Trainer(tiny_cfg("eval.at_start=false", "eval.every=0", "eval.at_end=false"), tmp_path / "run").fit()
    restarts = records(tmp_path / "run", "engine_restart")
    assert len(restarts) == 1 and "engine core died" in restarts[0]["error"]
    assert len(records(tmp_path / "run", "iteration")) == 2


def test_an_engine_that_keeps_failing_stops_resumably(
    tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dead(self: HFEngine) -> list[tuple[int, Completion]]:
        raise RuntimeError("engine core died")

    monkeypatch.setattr(HFEngine, "poll", dead)
    with pytest.raises(EngineError, match=r"failed twice during the rollout of iteration 0.*--resume"):
        Trainer(tiny_cfg("eval.at_start=false"), tmp_path / "run").fit()


def test_engine_config_refusals(tiny_cfg: Make) -> None:
    with pytest.raises(ValueError, match=r"rollout\.engine: .*unknown engine 'sglang'; available: hf, vllm"):
        tiny_cfg("rollout.engine=sglang")
    with pytest.raises(ValueError, match=r"rollout\.top_p=0\.9 with rollout\.engine=vllm"):
        tiny_cfg(*VLLM, "rollout.top_p=0.9")
    with pytest.raises(ValueError, match=r"credit\.name=empg needs per-token entropies"):
        tiny_cfg(*VLLM, "credit.name=empg")
    assert tiny_cfg().objective.tis_cap is None
    assert tiny_cfg(*VLLM, "objective.tis_cap=null").objective.tis_cap is None  # an explicit choice wins


def test_cli_names_a_model_that_fails_to_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()  # a folder that is no model (a path that does not exist is a usage error, exit 2)
    (tmp_path / "c.yaml").write_text(f"iterations: 1\npolicy: {{model: {tmp_path / 'empty'}}}\n")
    code = main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 3 and f"cannot load model {tmp_path / 'empty'}" in err and "Traceback" not in err
