"""``--logger csv|tensorboard|mlflow``: the curves, options and final scores written offline (TensorBoard event
files in the run, a local MLflow SQLite store) and read back with each tool's own reader; the CSV logs stay."""

import csv
import json
import math

import pytest
import typer

from conftest import Interrupted, interrupt_at_epoch_1, write_digit_folder
from transferkit import FinetuneConfig, finetune
from transferkit.config import AdaptConfig, DistillConfig, PretrainConfig
from transferkit.engine import loggers
from transferkit.engine.compare import COMPARE_RUN, compare
from transferkit.engine.finetune import FINETUNE_RUN
from transferkit.errors import ConfigError
from transferkit.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCH = 8


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digit_folder(tmp_path_factory.mktemp("loggers") / "digits", per_class=8)


def _cfg(digits, out, **kw):
    values = dict(data=str(digits), model="test_efficientnet", weights="none", strategy="full", image_size=32,
                  batch_size=BATCH, bn="train", epochs=2, baseline=False, val_split=0.25, test_split=0.25,
                  out=str(out) if out else None)
    return FinetuneConfig(**{**values, **kw})


def _csv_rows(run) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _csv_curve(run, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in the run's merged CSV log, the file every run writes."""
    return [(int(r["step"]), float(r[key])) for r in _csv_rows(run) if r.get(key)]


def _epoch_end_steps(train_images: int, epochs: int) -> list[int]:
    """Epoch-level values are logged at each epoch's last optimizer step (0-based): ceil(n / batch) steps an epoch."""
    per_epoch = math.ceil(train_images / BATCH)
    return [per_epoch * (e + 1) - 1 for e in range(epochs)]


def _mlflow_runs(db, experiment: str) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")  # a local file: no server is ever asked
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def _history(db, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(f"sqlite:///{db}").get_metric_history(run_id, key))


# ----------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_tensorboard_event_files_read_back_the_curves_and_final_scores(digits, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run = tmp_path / "exp" / "run"
    metrics = finetune(_cfg(digits, run, logger="tensorboard"), progress=True)
    shown = capsys.readouterr().out
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = _epoch_end_steps(metrics["train_images"], 2)
    for key in ("train_loss", "val_acc"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == steps  # one value per epoch, at the epoch's last step
        assert got == [(s, pytest.approx(v, rel=1e-6)) for s, v in _csv_curve(run, key)]  # the CSV's numbers
    assert events.Scalars("test_accuracy")[0].value == pytest.approx(metrics["test_accuracy"], rel=1e-6)
    assert events.Scalars("val_accuracy")[0].value == pytest.approx(metrics["val_accuracy"], rel=1e-6)
    session = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["strategy"].string_value == "full"  # the HParams tab: options ...
    assert session.session_start_info.hparams["batch_size"].number_value == BATCH
    assert "test_accuracy" in events.PluginTagToContent("hparams")["_hparams_/experiment"].decode("utf-8", "replace")
    assert "strategy: full" in (run / "tensorboard" / "hparams.yaml").read_text()  # ... and the scores
    assert (run / "logs" / "attempt_0" / "metrics.csv").is_file() and not (run / "mlflow.db").exists()
    assert "Epoch 1/2" in shown and "Epoch 2/2" in shown and "Epoch 0/" not in shown and "v_num" not in shown


@pytest.mark.slow
def test_mlflow_store_holds_the_run_its_params_curves_and_scores(digits, tmp_path):
    run = tmp_path / "exp" / "run"
    metrics = finetune(_cfg(digits, run, logger="mlflow", lr=0.003), progress=False)
    (found,) = _mlflow_runs(run / "mlflow.db", "exp")  # default experiment: the run folder's parent's name
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    params = found.data.params
    assert (params["strategy"], params["epochs"], params["lr"], params["batch_size"]) == ("full", "2", "0.003", "8")
    assert params["logger"] == "mlflow" and params["out"] == str(run)
    val_acc = _history(run / "mlflow.db", found.info.run_id, "val_acc")
    assert [s for s, _ in val_acc] == _epoch_end_steps(metrics["train_images"], 2)
    assert val_acc == [(s, pytest.approx(v, rel=1e-6)) for s, v in _csv_curve(run, "val_acc")]
    assert found.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert found.data.metrics["val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert "seed" not in found.data.metrics and "resumed" not in found.data.metrics  # options and flags are not scores
    assert json.loads((run / "logs" / "mlflow.json").read_text())["run_id"] == found.info.run_id
    assert (run / "metrics.csv").is_file()


@pytest.mark.slow
def test_a_resumed_run_logs_on_into_the_same_mlflow_run(digits, tmp_path, monkeypatch):
    run, db = tmp_path / "exp" / "run", tmp_path / "store" / "tracking.db"
    cfg = _cfg(digits, run, logger="mlflow", mlflow_db=str(db), experiment="mine")
    restore = interrupt_at_epoch_1(monkeypatch)
    with pytest.raises(Interrupted):
        finetune(cfg, progress=False)
    (first,) = _mlflow_runs(db, "mine")
    assert len(_history(db, first.info.run_id, "val_acc")) == 1  # epoch 0 finished, then the interrupt
    restore()
    metrics = finetune(cfg, resume=True, progress=False)
    (again,) = _mlflow_runs(db, "mine")
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    val_acc = _history(db, again.info.run_id, "val_acc")
    assert [s for s, _ in val_acc] == _epoch_end_steps(metrics["train_images"], 2)  # epoch 1 from the resume
    assert not (run / "mlflow.db").exists()  # --mlflow-db elsewhere: nothing in the run


@pytest.mark.slow
def test_a_compare_logs_every_run_into_one_experiment(digits, tmp_path):
    out = tmp_path / "cmp"
    base = _cfg(digits, None, epochs=1, logger="mlflow")
    result = compare(base, ["linear-probe", "scratch"], [0], out, progress=False)
    runs = {r.info.run_name: r for r in _mlflow_runs(out / "mlflow.db", "cmp")}  # experiment: the --out folder's
    assert set(runs) == {"linear-probe-seed0", "scratch-seed0"}
    for record in result["records"]:
        logged = runs[f"{record['strategy']}-seed0"]
        assert logged.data.metrics["val_accuracy"] == pytest.approx(record["val_accuracy"])
        assert logged.data.params["strategy"] == ("full" if record["strategy"] == "scratch" else "linear-probe")
    assert "val_acc" in runs["scratch-seed0"].data.metrics  # trained with Lightning: the per-epoch curve too
    assert "val_acc" not in runs["linear-probe-seed0"].data.metrics  # cached features: final scores only
    assert not list((out / "runs").rglob("mlflow.db"))


# ----------------------------------------------------------------------------- what the runs own
def test_the_logs_belong_to_the_run_and_go_when_it_is_undone(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError), RunDir(out, kind=FINETUNE_RUN).open() as run:
        for name in ("tensorboard/events.out.tfevents.1.host.7.0", "tensorboard/hparams.yaml", "mlflow.db",
                     "mlflow.db-journal", "logs/mlflow.json", "notes.txt"):
            (run.path / name).parent.mkdir(parents=True, exist_ok=True)
            (run.path / name).write_text("x")
        raise ValueError("failed before any checkpoint")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["notes.txt"]  # the user's file stays
    assert COMPARE_RUN.owns("mlflow.db") and COMPARE_RUN.owns("mlflow.db-journal") and not COMPARE_RUN.owns("x.db")


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("cls", [FinetuneConfig, AdaptConfig, DistillConfig, PretrainConfig])
def test_every_training_command_takes_the_logger_in_its_output_panel(cls):
    assert cls.model_fields["logger"].default == "csv" and cls.panel_of("logger") == "Output"
    assert cls.panel_of("experiment") == cls.panel_of("mlflow_db") == "Output"


@pytest.mark.parametrize("name", ["finetune", "compare", "adapt", "distill", "pretrain"])
def test_every_training_command_line_has_the_logger_options(name):
    from transferkit import cli

    cli._complete([name])
    panels = {o: getattr(p, "rich_help_panel", None) for p in typer.main.get_command(cli.app).commands[name].params
              for o in p.opts}
    assert [panels.get(f) for f in ("--logger", "--experiment", "--mlflow-db")] == ["Output"] * 3


def test_an_unknown_logger_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="logger"):
        FinetuneConfig.build(data="builtin:digits", logger="wandb")


def test_a_missing_package_or_a_folder_as_the_store_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--logger mlflow needs mlflow: pip install 'transferkit\[tracking\]'"):
        loggers.check_logger(FinetuneConfig(data="x", logger="mlflow"))
    loggers.check_logger(FinetuneConfig(data="x", logger="tensorboard"))  # tensorboard is there
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="is a folder"):
        loggers.check_logger(FinetuneConfig(data="x", logger="mlflow", mlflow_db=str(tmp_path)))


def test_grid_runs_share_the_store_and_experiment_unless_given(tmp_path):
    cfg = FinetuneConfig(data="x", logger="mlflow", out=str(tmp_path / "runs" / "a"))
    shared = loggers.logging_into(cfg, tmp_path / "g.db", "grid")
    assert (shared.mlflow_db, shared.experiment) == (str(tmp_path / "g.db"), "grid")
    own = loggers.logging_into(cfg.model_copy(update={"mlflow_db": "m.db", "experiment": "e"}), tmp_path / "g.db", "grid")
    assert (own.mlflow_db, own.experiment) == ("m.db", "e")
    plain = cfg.model_copy(update={"logger": "tensorboard"})
    assert loggers.logging_into(plain, tmp_path / "g.db", "grid") is plain  # only MLflow has a store
    assert loggers.experiment_name(cfg) == "runs" and loggers.experiment_name(shared) == "grid"


def test_params_are_flat_text_and_scores_are_the_finite_numbers():
    cfg = FinetuneConfig(data="x", model_args="depth=2", reg="bss", options={"bss": {"k": 2}}, wise_curve=[0.5, 1.0])
    params = loggers.flat_params(cfg)
    assert params["model_args/depth"] == "2" and params["options/bss/k"] == "2" and params["wise_curve"] == "[0.5, 1.0]"
    assert params["lr"] == "None" and params["epochs"] == "None" and "options" not in params
    metrics = {"test_accuracy": 0.75, "trainable_params": 12, "resumed": True, "epochs": 3, "seed": 0,
               "strategy": "full", "source_kl": float("nan"), "wise_curve": [{"alpha": 0.5}]}
    assert loggers.final_scores(metrics, cfg) == {"test_accuracy": 0.75, "trainable_params": 12.0}
