"""Experiment trackers: the run's scalars and pictures sent to TensorBoard, MLflow and W&B alike.

logging.trackers names them; the loop calls one ``Trackers`` object (on the primary process only):
``scalars`` (the training scalars every training.log_every iterations, the evaluation's metrics and
per-class IU), ``image`` (the fixed-batch grid, the confusion matrix and the per-class IU chart at
each evaluation), ``ids`` (what last.pt keeps so that a resumed run continues the same tracker run)
and ``close``. Every backend gets the same names (``train/loss``, ``val/mean_iou``,
``val_iou/<class>``, ...) with the iteration as step, and the resolved config as flattened
parameters (``optimizer.lr``), as Hugging Face's MLflowCallback and WandbCallback and Lightning's
loggers do.

Resume: the tracker run's id is read back from last.pt and the run reopened (MLflow: the same run
id, set RUNNING again; W&B: ``wandb.init(id=..., resume='allow')``). The steps a killed run logged
after its last checkpoint are logged again by the exact replay, so a backend skips the steps it
already holds (MLflow: the highest step of the run's metrics; W&B: its own step counter), and no
step appears twice.

Failures: a tracker that is named but not installed stops the run before any work (check_installed,
one line with the pip command); a tracker that fails during the run (a server gone, a full disk) is
one warning line and is dropped, and training and checkpoints go on. A dead MLflow server would
make MLflow's HTTP client retry for minutes (7 retries, backoff factor 2, a 120 s timeout per
request); unless MLFLOW_HTTP_REQUEST_MAX_RETRIES or MLFLOW_HTTP_REQUEST_TIMEOUT are set, a run
uses 2 retries and a 30 s timeout, so the run waits seconds, not minutes, before dropping it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig

from fcn import config as fcn_config
from fcn.config.schema import TRACKERS

MAX_PARAM_LENGTH = 500  # MLflow keeps 6000 characters of a value; a long label_map is no hyper-parameter


def check_installed(cfg: DictConfig) -> None:
    """Raise ValueError (exit 2, before any work) naming the first tracker of logging.trackers whose
    package is not installed, with the pip command that installs it."""
    for name in cfg.logging.trackers:
        package = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            raise ValueError(
                f"logging.trackers: '{name}' is not installed; pip install {package} "
                f"(or pip install -r requirements.track.txt), or remove it from logging.trackers"
            )


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """Return the resolved config as {dotted key: value as text}, lists and mappings as one value."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        free_form = prefix.endswith(("label_map.", "args."))  # a mapping of values, not of keys
        if isinstance(node, dict) and node and not free_form:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            text = str(node)
            out[prefix[:-1]] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."

    walk(fcn_config.to_dict(cfg), "")
    return out


def run_name(cfg: DictConfig) -> str:
    """Return logging.run_name, else the last part of training.run_dir."""
    return cfg.logging.run_name or Path(cfg.training.run_dir).resolve().name


class Trackers:
    """The run's trackers on the primary process; each call goes to every backend, and a backend
    that raises is dropped with one warning line (the run goes on)."""

    def __init__(self, backends: list, log: Callable[[str], None]) -> None:
        self.backends = backends
        self.log = log
        self.run_ids: dict[str, str] = {}  # kept when a tracker is dropped: a resume may reach it again

    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, resumed: dict, log: Callable[[str], None]) -> Trackers:
        """Return the trackers logging.trackers names, started (or, with ids from last.pt in
        `resumed`, reopened) and given the config's parameters."""
        trackers = cls([], log)
        makers = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}
        for name in cfg.logging.trackers:
            try:
                backend = makers[name](cfg, run_dir, resumed.get(name))
                trackers.backends.append(backend)
                if backend.run_id:
                    trackers.run_ids[name] = backend.run_id
            except Exception as exc:  # noqa: BLE001 - any failure of a tracker leaves training alone
                trackers._warn(name, exc, "could not start")
        return trackers

    def _warn(self, name: str, exc: BaseException, what: str = "failed") -> None:
        reason = fcn_config.redact(" ".join(str(exc).split()))[:300] or type(exc).__name__
        self.log(f"warning: logging.trackers: {name} {what} ({reason}); training goes on without it")

    def _each(self, call: Callable[[Any], None]) -> None:
        for backend in list(self.backends):
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001
                self.backends.remove(backend)
                self._warn(backend.name, exc)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log scalars at a step (the iteration)."""
        self._each(lambda b: b.scalars(values, step))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an H x W x 3 uint8 picture at a step."""
        self._each(lambda b: b.image(tag, image, step))

    def ids(self) -> dict[str, str]:
        """Return {tracker: its run id} for last.pt, a dropped tracker's too (TensorBoard has none: its
        files are run_dir's)."""
        return dict(self.run_ids)

    def close(self, status: str, best: Path | None = None) -> None:
        """End every tracker run: status 'FINISHED', 'KILLED' (stopped by a signal, to be resumed) or
        'FAILED'; best: the checkpoint to upload (logging.log_checkpoints), if any."""
        if best is not None and best.is_file():
            self._each(lambda b: b.checkpoint(best))
        self._each(lambda b: b.close(status))
        self.backends = []


class TensorBoardTracker:
    """TensorBoard's event files in run_dir (what a run wrote before logging.trackers)."""

    name = "tensorboard"
    run_id = ""

    def __init__(self, cfg: DictConfig, run_dir: Path, resumed_id: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def checkpoint(self, path: Path) -> None:
        pass  # the checkpoints are in run_dir already

    def close(self, status: str) -> None:
        self.writer.close()


class MLflowTracker:
    """An MLflow run through MlflowClient (no global active run): params, metrics, images by step."""

    name = "mlflow"

    def __init__(self, cfg: DictConfig, run_dir: Path, resumed_id: str | None) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow import MlflowClient

        uri, artifacts = cfg.logging.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", ""), None
        if not uri:  # a local store shared by the runs beside this one
            store = run_dir.resolve().parent
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
        if uri.startswith("sqlite:///"):  # a new experiment's pictures beside the database, not in ./mlruns
            artifacts = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
        self.client = MlflowClient(uri)
        params = flat_params(cfg)
        self.after = 0  # the highest step the run already holds: a resumed run skips up to it
        if resumed_id:
            self.run_id = resumed_id
            run = self.client.get_run(resumed_id)
            self.client.update_run(resumed_id, status="RUNNING")
            params = {k: v for k, v in params.items() if k not in run.data.params}
            for key in run.data.metrics:
                history = self.client.get_metric_history(resumed_id, key)
                self.after = max([self.after, *(m.step for m in history)])
        else:
            name = cfg.logging.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "pytorch-fcn"
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
            tags = {"run_dir": str(run_dir.resolve())}
            self.run_id = self.client.create_run(experiment_id, run_name=run_name(cfg), tags=tags).info.run_id
        self._params(params)

    def _params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if step <= self.after:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if step > self.after:
            self.client.log_image(self.run_id, image, key=tag, step=step)

    def checkpoint(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), "checkpoints")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


class WandbTracker:
    """A W&B run (its files under run_dir/wandb/; WANDB_MODE=offline keeps them there for `wandb sync`)."""

    name = "wandb"

    def __init__(self, cfg: DictConfig, run_dir: Path, resumed_id: str | None) -> None:
        import wandb

        self.wandb = wandb
        lg = cfg.logging
        self.run = wandb.init(
            project=lg.wandb_project or None,
            entity=lg.wandb_entity or None,
            name=run_name(cfg),
            dir=str(run_dir),
            config=flat_params(cfg),
            id=resumed_id or None,
            resume="allow" if resumed_id else None,
            reinit="create_new",  # tune.py runs trials one after another in one process
        )
        self.run_id = self.run.id

    def scalars(self, values: dict[str, float], step: int) -> None:
        if step >= self.run.step:  # W&B's steps only go forward: a resumed run's replay is skipped
            self.run.log(dict(values), step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if step >= self.run.step:
            self.run.log({tag: self.wandb.Image(image)}, step=step)

    def checkpoint(self, path: Path) -> None:
        artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["best", "latest"])

    def close(self, status: str) -> None:
        if status == "KILLED":
            self.run.mark_preempting()
        self.run.finish(exit_code=1 if status == "FAILED" else 0)
