"""logging.trackers: TensorBoard, W&B, MLflow and Trackio, each offline, read back from its own store."""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clew.store.run import read_jsonl
from clew.trainer import trackers as trackers_lib
from clew.trainer.loop import Trainer

Make = Callable[..., Any]
ALL = "logging.trackers=[tensorboard, wandb, mlflow, trackio]"


def _iterations(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "iteration"]


def _wandb_history(run: Path) -> list[dict[str, str]]:
    """The history records of every offline W&B run under ``run`` (its LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted((run / "wandb").glob("offline-run-*/run-*.wandb")):
        raw, pos, buf = path.read_bytes(), 7, b""  # 7 bytes: ":W&B", then the format's version
        while pos + 7 <= len(raw):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
            buf, pos = buf + raw[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a full record, or the last fragment of one
                record = pb.Record()
                record.ParseFromString(buf)
                if record.WhichOneof("record_type") == "history":
                    out.append({i.key or "/".join(i.nested_key): i.value_json for i in record.history.item})
                buf = b""
    return out


def test_every_tracker_gets_metrics_config_eval_table_and_curves_offline(
    tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = f"clew-test-{tmp_path.name}"
    run = tmp_path / "run"
    cfg = tiny_cfg(ALL, f"logging.project={project}", "eval.at_start=false")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no tracker may have failed
        Trainer(cfg, run).fit(stop_after=1)
        Trainer(cfg, run).fit(resume=True)  # the same W&B and MLflow runs continue
    success = [r["rollout/success_rate"] for r in _iterations(run)]
    assert len(success) == 2 and (run / "curves.png").exists()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [round(e.value, 6) for e in events.Scalars("rollout/success_rate")] == [round(s, 6) for s in success]
    assert "curves" in events.Tags()["images"] and "config/text_summary" in events.Tags()["tensors"]

    history = _wandb_history(run)
    assert [float(h["rollout/success_rate"]) for h in history if "rollout/success_rate" in h] == pytest.approx(success)
    assert any(h.get("eval/table/_type") == '"table-file"' for h in history)
    assert any(h.get("curves/_type") == '"image-file"' for h in history)
    ids = json.loads((run / "trackers.json").read_text())
    assert all(ids["wandb"] in p.name for p in (run / "wandb").glob("offline-run-*"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    mlflow_run = client.get_run(ids["mlflow"])
    assert mlflow_run.data.params["seed"] == "0" and mlflow_run.data.params["logging.project"] == project
    values = [m.value for m in client.get_metric_history(ids["mlflow"], "rollout/success_rate")]
    assert values == pytest.approx(success)
    artifacts = {a.path for a in client.list_artifacts(ids["mlflow"])} | {
        a.path for a in client.list_artifacts(ids["mlflow"], "tables/eval")
    }
    assert {"curves.png", "tables/eval/table.json"} <= artifacts

    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs(project, "run")
    assert [row["rollout/success_rate"] for row in logs if "rollout/success_rate" in row] == pytest.approx(success)
    tables = [row["eval/table"]["_value"] for row in logs if "eval/table" in row]
    assert tables and tables[-1][-1]["success_rate"] == _evals(run)[-1]["eval/success_rate"]
    assert any(row.get("curves", {}).get("_type") == "trackio.image" for row in logs)


def _evals(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "eval"]


class _Broken:
    def __init__(self, *args: Any) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise ConnectionError("the tracking server went away")

    table = image = log  # type: ignore[assignment]

    def close(self) -> None:
        pass


def _no_package(*args: Any) -> Any:
    raise ImportError("No module named 'wandb'")


def test_a_broken_tracker_warns_once_and_the_run_goes_on(
    tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(trackers_lib.OPENERS, "tensorboard", _Broken)
    monkeypatch.setitem(trackers_lib.OPENERS, "wandb", _no_package)
    cfg = tiny_cfg("logging.trackers=[tensorboard, wandb]")
    with pytest.warns(UserWarning) as caught:
        summary = Trainer(cfg, tmp_path / "run").fit()
    notes = [str(w.message) for w in caught if "tracker" in str(w.message)]
    assert len(notes) == 2
    assert "tracker wandb failed and is off for this run: ImportError" in notes[0]
    assert "tracker tensorboard failed and is off for this run: ConnectionError" in notes[1]
    assert summary["iterations"] == 2 and len(_iterations(tmp_path / "run")) == 2


@pytest.mark.parametrize(
    "value, message",
    [
        ("[tensorboard, nosuch]", "logging.trackers.1: Input should be 'tensorboard', 'wandb', 'mlflow' or 'trackio'"),
        ("[wandb, wandb]", "logging.trackers: Value error, logging.trackers names a tracker twice"),
    ],
)
def test_an_unknown_or_repeated_tracker_fails_at_construction(tiny_cfg: Make, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny_cfg(f"logging.trackers={value}")


def test_no_tracker_named_imports_none(tiny_cfg: Make, tmp_path: Path) -> None:
    Trainer(tiny_cfg("iterations=1", "eval.every=0", "eval.at_start=false"), tmp_path / "run").fit()
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "run" / "trackers.json").exists()
