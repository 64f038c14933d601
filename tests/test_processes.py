"""Real processes: signals, two writers on one run directory, CPU DDP with two processes
(beside a bf16-mixed run on CPU). Each runs the installed ``transferkit`` entry point as a user or a scheduler would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = ["--per-class", "20", "--epochs", "1", "--image-size", "32", "--no-baseline", "--no-progress",
        "--batch-size", "32"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "transferkit.cli", *args]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("sig,code,resume", [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)],
                         ids=["sigterm", "sigint"])
def test_signal_stops_with_its_exit_code_and_the_run_resumes(sig, code, resume, tmp_path):
    """Both signals stop with their exit code and the resume command; SIGTERM's run is then resumed
    (resuming does not depend on which signal stopped the run)."""
    out = tmp_path / "run"
    args = ["finetune", "--data", "builtin:digits", "--strategy", "full", "--out", str(out),
            *TINY[:2], "--epochs", "3", *TINY[4:]]
    proc = subprocess.Popen(_cli(*args), env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(out / "checkpoints" / "last.ckpt", proc)  # epoch 0 finished
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == code, err
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0]
    assert f"transferkit finetune --out {out} --resume" in lines[0] and "last.ckpt" in lines[0]
    assert not (out / "metrics.json").exists()
    if not resume:
        return
    done = subprocess.run(_cli("finetune", "--out", str(out), "--resume", "--no-progress"), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed"] is True


def test_two_processes_on_one_run_directory(tmp_path):
    """Two finetune commands started together on one --out: exactly one runs, the other is
    refused at once with a line naming the holder."""
    out = tmp_path / "run"
    args = _cli("finetune", "--data", "builtin:digits", "--strategy", "freeze", "--out", str(out), *TINY)
    first = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / ".lock", first)
    second = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and (f"pid {first.pid}" in lines[0] or "already exists" in lines[0]), lines
    assert json.loads((out / "metrics.json").read_text())["strategy"] == "freeze"


def _shape(metrics: dict) -> dict:
    return {k: type(v).__name__ for k, v in metrics.items()}


def test_cpu_ddp_two_processes_one_run_directory(tmp_path):
    """--devices 2 --dist ddp on CPU: Lightning re-runs the command in a second process; only
    global rank zero writes, and the run directory matches a single-process run's, which trains in
    bf16-mixed on the CPU. (A cached-feature recipe under DDP: test_cpu_ddp_compare's linear-probe run.)"""
    common = ["finetune", "--data", "builtin:digits", "--strategy", "full", *TINY]
    single = subprocess.run(_cli(*common, "--out", str(tmp_path / "one"), "--precision", "bf16-mixed",
                                 "--accelerator", "cpu"), env=_env(tmp_path), capture_output=True, text=True,
                            timeout=900)
    assert single.returncode == 0, single.stderr
    bf16 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert bf16["test_accuracy"] is not None and bf16["train_seconds"] > 0
    assert "bf16-mixed" in (tmp_path / "one" / "config.yaml").read_text()
    ddp = subprocess.run([str(Path(sys.executable).parent / "transferkit"), *common, "--out", str(tmp_path / "ddp"),
                          "--accelerator", "cpu", "--devices", "2", "--dist", "ddp"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert ddp.returncode == 0, ddp.stderr
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "ddp"))
    assert _shape(one) == _shape(two)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert {p.name for p in tmp_path.iterdir()} <= {"cache", "one", "ddp"}  # no stray folders


def test_cpu_ddp_compare(tmp_path):
    out = tmp_path / "cmp"
    (tmp_path / "ddp.yaml").write_text("accelerator: cpu\ndevices: '2'\ndist: ddp\nbaseline: false\n"
                                       "batch_size: 32\n")
    run = subprocess.run([str(Path(sys.executable).parent / "transferkit"), "compare", "--data", "builtin:digits",
                          "--per-class", "20", "--epochs", "1", "--image-size", "32", "--seeds", "1",
                          "--strategies", "linear-probe,freeze", "--config", str(tmp_path / "ddp.yaml"),
                          "--out", str(out), "--no-progress"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "compare.json").read_text())
    assert [r["strategy"] for r in result["records"]] == ["linear-probe", "freeze"]
    assert all((out / "runs" / f"{s}-seed0" / "metrics.json").is_file() for s in ("linear-probe", "freeze"))
