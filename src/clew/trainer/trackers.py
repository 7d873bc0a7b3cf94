"""Experiment trackers: a run's metrics, config, evaluation tables and curves mirrored to the tools teams use.

``logging.trackers`` names any of ``tensorboard``, ``wandb``, ``mlflow``, ``trackio``; each is optional (its
package is imported only when named) and works offline by default, writing under the run directory:

- ``tensorboard``: ``RUN/tensorboard`` (torch's ``SummaryWriter``);
- ``wandb``: an offline run under ``RUN/wandb`` unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads it);
- ``mlflow``: the local file store ``RUN/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set (MLflow 3 keeps that
  store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which clew sets for its own default only);
- ``trackio``: its local SQLite store, ``RUN/trackio`` unless ``TRACKIO_DIR`` is set (trackio reads it once,
  when first imported).

``metrics.jsonl`` stays the record of truth: a tracker that fails to start or to log is dropped with one
warning and the run goes on (``Trackers``). A resumed run continues the same W&B and MLflow runs (their ids are
kept in ``RUN/trackers.json``). Iterations a killed run logged after its last checkpoint are logged again on
resume: TensorBoard purges them (``purge_step``); MLflow and Trackio keep both values of those steps; W&B, whose
step only grows, keeps the killed run's values.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from clew.store.run import atomic_write_text

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")


class Tracker(Protocol):
    """One experiment tracker: numbers by step, the config once, tables and images, then close."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None: ...

    def image(self, name: str, path: Path, step: int) -> None: ...

    def close(self) -> None: ...


class Trackers:
    """The configured trackers behind one call each; a tracker that raises is warned about once and dropped."""

    def __init__(
        self, names: Sequence[str], run_dir: Path, config: dict[str, Any], project: str, name: str, start: int = 0
    ) -> None:
        """``start``: the iteration of the checkpoint a run resumes from (steps after it that a tracker holds are
        from the killed run)."""
        self.run_dir, self.step = Path(run_dir), start
        ids = self._ids()
        self.active: dict[str, Tracker] = {}
        for tracker in names:
            self._guard(tracker, lambda t=tracker: self._open(t, config, project, name, ids))  # type: ignore[misc]
        atomic_write_text(self.run_dir / "trackers.json", json.dumps(ids))

    def _ids(self) -> dict[str, str]:
        """The W&B and MLflow run ids of this run (empty when unreadable: the trackers then start new runs)."""
        try:
            return dict(json.loads((self.run_dir / "trackers.json").read_text()))
        except (OSError, ValueError):
            return {}

    def _open(self, tracker: str, config: dict[str, Any], project: str, name: str, ids: dict[str, str]) -> None:
        self.active[tracker] = OPENERS[tracker](self.run_dir, config, project, name, ids, self.step)

    def _guard(self, tracker: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # a tracker must never stop a run: metrics.jsonl has everything
            self.active.pop(tracker, None)
            warnings.warn(
                f"tracker {tracker} failed and is off for this run: {type(exc).__name__}: {exc}", stacklevel=2
            )

    def log(self, metrics: dict[str, Any], step: int | None) -> None:
        """Numbers only; a record without an iteration (SFT, the engine) goes at the last step seen."""
        self.step = max(self.step, step if step is not None else self.step)
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker, impl in list(self.active.items()):
            self._guard(tracker, lambda impl=impl: impl.log(numbers, self.step))  # type: ignore[misc]

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        for tracker, impl in list(self.active.items()):
            self._guard(tracker, lambda impl=impl: impl.table(name, rows, self.step))  # type: ignore[misc]

    def image(self, name: str, path: Path) -> None:
        for tracker, impl in list(self.active.items()):
            self._guard(tracker, lambda impl=impl: impl.image(name, path, self.step))  # type: ignore[misc]

    def close(self) -> None:
        for tracker, impl in list(self.active.items()):
            self._guard(tracker, impl.close)
        self.active.clear()


# --- the four trackers ---------------------------------------------------------------------------------------


class TensorBoard:
    def __init__(
        self, run_dir: Path, config: dict[str, Any], project: str, name: str, ids: dict[str, str], start: int
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        self.writer.add_text(name, markdown_table(rows), step)

    def image(self, name: str, path: Path, step: int) -> None:
        import matplotlib.image

        pixels = matplotlib.image.imread(path)[..., :3]  # (H, W, 3) floats in [0, 1]
        self.writer.add_image(name, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """Logs at ``step`` = the iteration. W&B's step only grows: after a resume past the last checkpoint it drops
    the re-run iterations (with a warning of its own) and keeps the killed run's values for them."""

    def __init__(
        self, run_dir: Path, config: dict[str, Any], project: str, name: str, ids: dict[str, str], start: int
    ) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE", "offline")
        self.wandb: Any = wandb  # typed loosely: its stubs narrow mode and columns more than it checks
        self.run = self.wandb.init(
            project=project, name=name, dir=str(run_dir), config=config, mode=mode, id=ids.get("wandb"),
            resume="allow", reinit="create_new",
        )  # fmt: skip
        ids["wandb"] = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        columns = list(rows[0]) if rows else []
        self.run.log(
            {name: self.wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])}, step=step
        )

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(
        self, run_dir: Path, config: dict[str, Any], project: str, name: str, ids: dict[str, str], start: int
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # clew's default: MLflow's local file store inside the run
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            uri = (run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        if ids.get("mlflow"):
            self.run_id = ids["mlflow"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        ids["mlflow"] = self.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key.replace("@", "_at_"), value, now, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        self.client.log_dict(self.run_id, {"rows": rows}, f"tables/{name}.json")

    def image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackio:
    def __init__(
        self, run_dir: Path, config: dict[str, Any], project: str, name: str, ids: dict[str, str], start: int
    ) -> None:
        os.environ.setdefault("TRACKIO_DIR", str(run_dir / "trackio"))  # read by trackio when first imported
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=project, name=name, config=config, resume="allow", embed=False, auto_log_cpu=False,
            auto_log_gpu=False,
        )  # fmt: skip

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        columns = list(rows[0]) if rows else []
        table = self.trackio.Table(data=[[r.get(c) for c in columns] for r in rows], columns=columns)
        self.run.log({name: table}, step=step)

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.trackio.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


OPENERS: dict[str, Callable[..., Tracker]] = {
    "tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow, "trackio": Trackio,
}  # fmt: skip


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
