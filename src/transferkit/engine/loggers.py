"""Where a training run logs (``--logger``): Lightning's CSV logger always, plus TensorBoard or MLflow.

    csv          logs/attempt_N/metrics.csv per attempt, merged into the run's metrics.csv (rundir.logs):
                 the reports, the learning curves and --resume read it, so it is always written
    tensorboard  <run>/tensorboard/: every attempt's event files in one folder (one curve per run); when
                 the run ends, its options and final scores (the HParams tab)
    mlflow       a local SQLite file, no server, no network: <run>/mlflow.db, or --mlflow-db (the runs of a
                 compare or leaderboard share <out>/mlflow.db and one experiment, named after <out>);
                 one MLflow run per run directory (logs/mlflow.json records it: a resume logs on into it),
                 the options as params, the per-epoch curves and the final scores as metrics

Only global rank zero logs: the other ranks get no logger (``train_lightning``) and never reach the end.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from transferkit.errors import ConfigError
from transferkit.rundir import MLFLOW_STORE, RunDir, write_json

#: the modules each extra logger needs (installed by ``pip install 'transferkit[tracking]'``)
NEEDS = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy", "alembic")}
#: MLflow refuses longer parameter values in some versions
PARAM_CHARS = 500


def check_logger(cfg) -> None:
    """Refuse, in one line and before the disk is touched, a ``--logger`` whose package is missing and an
    ``--mlflow-db`` that is a folder."""
    missing = [m for m in NEEDS.get(cfg.logger, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--logger {cfg.logger} needs {', '.join(missing)}: pip install 'transferkit[tracking]' "
                          "(or use --logger csv)")
    if cfg.logger == "mlflow" and cfg.mlflow_db and Path(cfg.mlflow_db).expanduser().is_dir():
        raise ConfigError(f"--mlflow-db {cfg.mlflow_db} is a folder; give the SQLite file to log into, e.g. "
                          f"{Path(cfg.mlflow_db) / MLFLOW_STORE[0]}")


def experiment_name(cfg) -> str:
    """``--experiment``, else the name of the folder the run directory lies in (``transferkit`` at a root)."""
    return cfg.experiment or Path(cfg.out).resolve().parent.name or "transferkit"


def mlflow_db(cfg, run: RunDir) -> Path:
    """The SQLite file the run logs into: ``--mlflow-db``, else the run's own ``mlflow.db``."""
    return Path(cfg.mlflow_db).expanduser() if cfg.mlflow_db else run.mlflow_db


def logging_into(cfg, db: Path, experiment: str):
    """``cfg`` logging into the MLflow store ``db`` under ``experiment``, unless it names its own: the runs of a
    grid (compare, adapt/distill leaderboards, distill's student alone) share one store and one experiment.
    Unchanged without ``--logger mlflow``."""
    if cfg.logger != "mlflow":
        return cfg
    return cfg.model_copy(update={"mlflow_db": cfg.mlflow_db or str(db), "experiment": cfg.experiment or experiment})


def training_loggers(cfg, run: RunDir) -> list:
    """Lightning's loggers of one attempt (global rank zero): the CSV logger first (``metrics.csv``, the
    progress bar's version), then TensorBoard's or MLflow's."""
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

    loggers = [CSVLogger(run.logs, name="", version=run.next_attempt())]
    if cfg.logger == "tensorboard":
        board = TensorBoardLogger(run.tensorboard, name="", version="", default_hp_metric=False)
        board.log_hyperparams(cfg.model_dump())  # kept for its hparams.yaml; the HParams entry waits for the scores
        loggers.append(board)
    elif cfg.logger == "mlflow":
        uri, run_id = mlflow_run(cfg, run)
        loggers.append(MLFlowLogger(tracking_uri=uri, run_id=run_id))
    return loggers


def log_results(cfg, run: RunDir, metrics: dict) -> None:
    """The run's final scores (the numbers of ``metrics.json`` that are not options) into its TensorBoard
    folder (with its options, the HParams tab) or its MLflow run (a run without Lightning, such as a
    cached-feature probe, gets its MLflow run here). Global rank zero, once the run is evaluated."""
    scores = final_scores(metrics, cfg)
    if cfg.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        board = TensorBoardLogger(run.tensorboard, name="", version="", default_hp_metric=False)
        board.log_hyperparams(cfg.model_dump(), metrics=scores)  # flattened by Lightning, numbers kept
        board.finalize("success")
    elif cfg.logger == "mlflow":
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        uri, run_id = mlflow_run(cfg, run)
        client, now = MlflowClient(uri), _milliseconds()
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in scores.items()])
        client.set_terminated(run_id, "FINISHED")


def final_scores(metrics: dict, cfg) -> dict[str, float]:
    """The finite numbers among ``metrics`` (booleans and the run's options left out)."""
    options = set(type(cfg).model_fields)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in options and math.isfinite(v)}


def flat_params(cfg) -> dict[str, str]:
    """The run's options as text, nested ones flattened with ``/`` (``options/lwf/weight``)."""
    def flat(prefix: str, value) -> dict[str, str]:
        if isinstance(value, dict) and value:
            return {k: v for key, sub in value.items() for k, v in flat(f"{prefix}/{key}", sub).items()}
        return {prefix: str(value)[:PARAM_CHARS]}

    return {k: v for name, value in cfg.model_dump().items() for k, v in flat(name, value).items()}


# ----------------------------------------------------------------------------- MLflow
def mlflow_run(cfg, run: RunDir) -> tuple[str, str]:
    """``(tracking URI, run id)`` of this run directory's MLflow run: the one ``logs/mlflow.json`` recorded in
    the same store, else a new run in the experiment (created if need be), with the options as params."""
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    db = mlflow_db(cfg, run).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    run_id = _recorded_run(client, run, db)
    if run_id is None:
        run_id = client.create_run(_experiment_id(client, experiment_name(cfg), db), run_name=run.path.name,
                                   tags={"transferkit.run_dir": str(run.path.resolve())}).info.run_id
        params = sorted(flat_params(cfg).items())
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(run_id, params=[_param(k, v) for k, v in params[i:i + 100]])
        run.mlflow_record.parent.mkdir(parents=True, exist_ok=True)
        write_json(run.mlflow_record, {"db": str(db), "experiment": experiment_name(cfg), "run_id": run_id})
    return uri, run_id


def _recorded_run(client, run: RunDir, db: Path) -> str | None:
    """The run id ``logs/mlflow.json`` recorded when it names this store and the run is still there."""
    from mlflow.exceptions import MlflowException

    try:
        record = json.loads(run.mlflow_record.read_text())
        if record.get("db") != str(db):
            return None
        found = client.get_run(record["run_id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, MlflowException):
        return None
    return None if found.info.lifecycle_stage == "deleted" else found.info.run_id


def _experiment_id(client, name: str, db: Path) -> str:
    """The id of experiment ``name`` (restored if deleted, created if absent; artifacts beside the store)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=(db.parent / "mlartifacts").as_uri())
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value)


def _milliseconds() -> int:
    import time

    return int(time.time() * 1000)


def _quiet_mlflow() -> None:
    """No MLflow or Alembic banners (creating the database tables) on the terminal."""
    import logging
    import warnings

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*noload.*")  # SQLAlchemy 2.1 on MLflow's store


__all__ = ["NEEDS", "check_logger", "experiment_name", "final_scores", "flat_params", "log_results", "logging_into",
           "mlflow_db", "mlflow_run", "training_loggers"]
