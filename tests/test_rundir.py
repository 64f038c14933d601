import csv

import pytest

from transferkit.rundir import RunDir, atomic_write
from transferkit.errors import RunDirError


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "step", "train_loss", "val_acc"])
        w.writeheader()
        w.writerows(rows)


def test_merge_logs_drops_rows_replayed_by_a_resumed_attempt(tmp_path):
    run = RunDir(tmp_path)
    _write(run.logs / "attempt_0" / "metrics.csv", [
        {"epoch": 0, "step": 9, "train_loss": 2.0}, {"epoch": 0, "step": 9, "val_acc": 0.5},
        {"epoch": 1, "step": 19, "train_loss": 1.5},  # epoch 1 interrupted after its train row
    ])
    _write(run.logs / "attempt_1" / "metrics.csv", [
        {"epoch": 1, "step": 19, "train_loss": 1.4}, {"epoch": 1, "step": 19, "val_acc": 0.7},
        {"epoch": 2, "step": 29, "train_loss": 1.0}, {"epoch": 2, "step": 29, "val_acc": 0.8},
    ])
    rows = run.merge_logs()
    assert [(r["epoch"], r["train_loss"], r["val_acc"]) for r in rows] == [
        ("0", "2.0", "0.5"), ("1", "1.4", "0.7"), ("2", "1.0", "0.8")]
    with run.metrics_csv.open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_check_refuses_existing_run_and_resume_without_config(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep me")
    with pytest.raises(RunDirError, match="--overwrite"):
        RunDir.check(tmp_path / "run")
    with pytest.raises(RunDirError, match="config.yaml"):
        RunDir.check(tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "x").read_text() == "keep me"
    RunDir.check(tmp_path / "run", overwrite=True).create(overwrite=True)
    assert not (tmp_path / "run" / "x").exists()


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")

    def broken(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
