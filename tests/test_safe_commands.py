"""``corrupt``, ``tta``, ``distill``, ``export`` and ``--overwrite`` through the shared run-directory
transaction (rundir.RunDir: check, create, own, lock, write atomically, undo, an honest interrupt).

One test per defect of the hostile probe, on real small data through the real CLI entry point:
exit code, one line on stderr without a traceback, no stub left, the user's files byte-identical.
Interrupts are real SIGTERMs, sent to the process when a file shows the command is mid-way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import transferkit
from conftest import write_digit_folder

SRC = str(Path(transferkit.__file__).parents[1])
TINY = ["--model", "test_efficientnet", "--weights", "none", "--image-size", "32", "--epochs", "1",
        "--strategy", "full", "--no-baseline", "--no-progress"]


# ----------------------------------------------------------------------------- helpers
def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` with its bytes (None for folders); the lock's holder note aside."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() and p.name != ".lock" else None
            for p in sorted(folder.rglob("*"))}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _temporary(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tktmp", ".partial", ".tmp"))]


@contextmanager
def _sigterm_when(condition, timeout: float = 300):
    """Send this process a real SIGTERM as soon as ``condition()`` holds (polled by a thread); yields
    an Event set once it was sent. The watch ends with the block."""
    sent, done = threading.Event(), threading.Event()

    def watch():
        end = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < end:
            if condition():
                sent.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        done.set()
        thread.join()


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "transferkit.cli", *map(str, args)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def imgs(tmp_path):
    """Two classes of 8 real digit images (32x32 PNGs), filed as cat and dog (classes of the tiny run)."""
    root = write_digit_folder(tmp_path / "imgs", per_class=8, classes=(0, 1))
    (root / "0").rename(root / "cat")
    (root / "1").rename(root / "dog")
    return root


@pytest.fixture
def small_fs(small_fs_of):
    """A 32 kB file system: a real ENOSPC from the kernel."""
    return small_fs_of("32k")


@pytest.fixture(scope="module")
def race2(tmp_path_factory):
    """A finished finetune run (test_efficientnet from random weights, 32 px, 1 epoch) on two classes
    of 12 digits: its data folder and run folder."""
    from transferkit.config import FinetuneConfig
    from transferkit.engine.finetune import finetune

    root = tmp_path_factory.mktemp("race")
    data = write_digit_folder(root / "data", per_class=12, classes=(0, 1))
    cfg = FinetuneConfig.build(data=str(data), model="test_efficientnet", weights="none", image_size=32, epochs=1,
                               strategy="full", baseline=False, out=str(root / "race2"))
    finetune(cfg, progress=False)
    return data, root / "race2"


# ----------------------------------------------------------------------------- corrupt
@pytest.mark.needs_opencv
def test_defect_01_corrupt_overwrite_keeps_foreign_folders(run_cli, imgs, tmp_path):
    user = tmp_path / "userdata" / "gaussian_noise-3"
    user.mkdir(parents=True)
    (user / "mywork.txt").write_text("x\n")
    data = shutil.copytree(imgs, tmp_path / "imgs_c2")
    shutil.copytree(imgs / "cat", data / "fog-3")  # the data's own folder of that name
    before = _snapshot(tmp_path)
    for args, words in (((imgs, "--corruption", "gaussian_noise", "--out", user.parent), "not a transferkit run"),
                        ((data, "--corruption", "fog", "--out", data), "lies inside it")):
        code, _, err = run_cli("corrupt", *args, "--overwrite")
        assert code == 2 and words in _one_line(err)
    assert _snapshot(tmp_path) == before

    out = tmp_path / "c"  # transferkit's own folder: --overwrite replaces its files, not the user's
    assert run_cli("corrupt", imgs, "--corruption", "fog", "--out", out)[0] == 0
    (out / "fog-3" / "mywork.txt").write_text("mine\n")
    first = (out / "fog-3" / "images" / "00000.png").read_bytes()
    code, _, err = run_cli("corrupt", imgs, "--corruption", "fog", "--seed", "1", "--out", out, "--overwrite")
    assert code == 0, err
    assert (out / "fog-3" / "mywork.txt").read_text() == "mine\n"
    assert (out / "fog-3" / "images" / "00000.png").read_bytes() != first
    assert len(list((out / "fog-3" / "images").iterdir())) == 16 and not _temporary(out)


@pytest.mark.needs_opencv
def test_defect_02_corrupt_refuses_out_inside_its_input(run_cli, imgs, tmp_path):
    before = _snapshot(imgs)
    code, _, err = run_cli("corrupt", imgs, "--corruption", "gaussian_noise", "--out", imgs / "cor")
    assert code == 2 and "lies inside it" in _one_line(err)
    link = tmp_path / "link"  # the same through a symlink
    link.symlink_to(imgs)
    code, _, err = run_cli("corrupt", link, "--corruption", "gaussian_noise", "--out", imgs / "cor")
    assert code == 2 and "lies inside it" in _one_line(err)
    assert _snapshot(imgs) == before


@pytest.mark.needs_opencv
@pytest.mark.slow
def test_defect_06_two_corrupt_on_one_out_one_is_refused(run_cli, tmp_path):
    import numpy as np
    from PIL import Image

    import imagecorruptions  # noqa: F401  (this process imports OpenCV & co now, not while the first one runs)

    from transferkit.data import load_source
    from transferkit.data.corruptions import corrupt_images

    data = write_digit_folder(tmp_path / "many", per_class=40, classes=(0, 1))
    out, args = tmp_path / "c", ("corrupt", data, "--corruption", "glass_blur", "--overwrite")
    first = subprocess.Popen(_cli(*args, "--seed", "1", "--out", out), env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 240
    while not (out.is_dir() and any(out.iterdir())):  # the first one has started writing
        assert first.poll() is None and time.monotonic() < end, first.communicate()
        time.sleep(0.01)
    code, _, err = run_cli(*args, "--seed", "2", "--out", out)
    overlapped = first.poll() is None
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert overlapped, "the first command ended before the second started: nothing was tested"
    assert code == 2 and f"in use by pid {first.pid}" in _one_line(err)
    images = load_source(str(data)).train
    expected = corrupt_images([np.asarray(images[i][0]) for i in range(3)], "glass_blur", 3, seed=1)
    for i, want in enumerate(expected):  # seed 1's images alone, not mixed with seed 2's
        assert (np.asarray(Image.open(out / "glass_blur-3" / "images" / f"{i:05d}.png")) == want).all()
    assert len(list((out / "glass_blur-3" / "images").iterdir())) == 80 and not _temporary(out)


@pytest.mark.needs_opencv
def test_defect_11_corrupt_on_a_full_disk_one_line_no_partial(run_cli, imgs, small_fs):
    code, _, err = run_cli("corrupt", imgs, "--corruption", "gaussian_noise", "--out", small_fs / "c")
    assert code == 1 and "No space left on device" in _one_line(err) and "--out" in err
    assert list(small_fs.iterdir()) == []  # neither a partial folder nor a stub


@pytest.mark.needs_opencv
def test_defect_12_corrupt_sigterm_says_what_was_finished(run_cli, imgs, tmp_path):
    out = tmp_path / "c"
    args = ("corrupt", imgs, "--corruption", "gaussian_noise,fog,glass_blur", "--out", out)
    with _sigterm_when(lambda: any(p.name.startswith(".glass_blur-3") for p in out.glob(".*"))) as sent:
        code, _, err = run_cli(*args)
    assert sent.is_set()
    line = _one_line(err)
    assert code == 143 and "SIGTERM" in line and "nothing was written" not in line
    assert "gaussian_noise-3, fog-3" in line and "not written: glass_blur-3" in line
    assert sorted(p.name for p in out.iterdir()) == [".lock", "fog-3", "gaussian_noise-3", "transferkit.json"]
    for part in ("fog-3", "gaussian_noise-3"):
        assert len(list((out / part / "images").iterdir())) == 16
        assert len((out / part / "labels.csv").read_text().splitlines()) == 17
    finished = _snapshot(out)
    code, _, err = run_cli("corrupt", imgs, "--corruption", "glass_blur", "--out", out)  # what the line says
    assert code == 0, err
    assert {k: v for k, v in _snapshot(out).items() if k in finished} == finished
    assert (out / "glass_blur-3" / "labels.csv").is_file()


def test_corrupt_kind_owns_the_folders_of_every_corruption():
    from transferkit.data.corruptions import BENCHMARK, EXTRA
    from transferkit.engine.corrupt import CORRUPT_RUN
    from transferkit.rundir import RunDir

    run = RunDir("c", kind=CORRUPT_RUN)
    assert all(run.owns(f"{name}-{s}") for name in BENCHMARK + EXTRA for s in range(1, 6))
    assert run.owns("fog-3/labels.csv") and run.owns("fog-3/images/00012.png")
    assert not run.owns("fog-3/images/mine.png") and not run.owns("fog-3/notes.txt")
    assert not run.owns("fog-6") and not run.owns("notes.txt")


# ----------------------------------------------------------------------------- tta
@pytest.mark.slow
def test_defect_13_tta_sigterm_undoes_and_the_rerun_works(run_cli, tiny_run, imgs, tmp_path):
    out = tmp_path / "t"
    args = ("tta", tiny_run, "--data", imgs, "--method", "tent", "--batch-size", "1", "--steps", "3",
            "--out", out, "--no-progress")
    before = _snapshot(tmp_path)
    with _sigterm_when(lambda: (out / "config.yaml").exists()) as sent:
        code, _, err = run_cli(*args)
    assert sent.is_set()
    line = _one_line(err)
    assert code == 143 and "undone" in line and "same command" in line
    assert _snapshot(tmp_path) == before  # no config.yaml, no marker, no folder
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["method"] == "tent"


# ----------------------------------------------------------------------------- distill
def _distill(run_cli, teacher: Path, out: Path, *extra):
    return run_cli("distill", "--teacher", teacher, "--student", "test_efficientnet", "--epochs", "1",
                   "--out", out, "--no-progress", *extra)


@pytest.mark.slow
def test_defect_14_distill_baseline_run_is_checked_before_disk(run_cli, race2, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("not a run\n")
    before = _snapshot(tmp_path)
    code, _, err = _distill(run_cli, race2[1], tmp_path / "d", "--baseline-run", notes)
    assert code == 2 and "--baseline-run" in _one_line(err) and "metrics.json" in err
    assert _snapshot(tmp_path) == before  # no checkpoint, no stub


@pytest.mark.slow
def test_defect_15_distill_unlabelled_is_checked_before_disk(run_cli, race2, tmp_path):
    out = tmp_path / "d"
    code, _, err = _distill(run_cli, race2[1], out, "--per-class", "4", "--unlabelled", "100000")
    assert code == 2 and "--unlabelled 100000" in _one_line(err)
    assert not out.exists()
    code, _, err = _distill(run_cli, race2[1], out, "--per-class", "4", "--unlabelled", "2")  # corrected
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["unlabelled_images"] == 2


# ----------------------------------------------------------------------------- --overwrite
@pytest.mark.slow
def test_defect_05_overwrite_keeps_users_files_in_run_subfolders(run_cli, race2, tmp_path):
    data, template = race2
    run = shutil.copytree(template, tmp_path / "race2")
    assert (run / "logs" / "attempt_0" / "metrics.csv").is_file()
    (run / "logs" / "mynotes.txt").write_text("my notes\n")
    (run / "checkpoints" / "best_backup.ckpt").write_bytes(b"my own checkpoint")
    (run / "logs" / "attempt_0" / "plot.png").write_bytes(b"\x89PNG mine")
    mine = {k: v for k, v in _snapshot(run).items() if "mynotes" in k or "best_backup" in k or "plot.png" in k}
    old_checkpoint = (run / "checkpoints" / "last.ckpt").stat().st_ino
    code, _, err = run_cli("finetune", "--data", data, *TINY, "--out", run, "--overwrite")
    assert code == 0, err
    assert {k: v for k, v in _snapshot(run).items() if k in mine} == mine
    assert (run / "checkpoints" / "last.ckpt").stat().st_ino != old_checkpoint  # transferkit's were replaced
    assert (run / "metrics.json").is_file() and not _temporary(run)


def test_defect_05_overwrite_of_a_grid_keeps_users_files_in_its_runs(tmp_path):
    """``compare``'s ``runs/<name>/`` are run directories of their own: each removes what its kind owns."""
    import transferkit.engine.compare  # noqa: F401 (declares the compare and finetune kinds)
    from transferkit.rundir import RunDir, write_json

    grid = tmp_path / "grid"
    with RunDir(grid, kind="compare").open(command=["transferkit", "compare"]) as run:
        with RunDir(run.path / "runs" / "full-seed0").open(command=["transferkit", "finetune"]) as sub:
            write_json(sub.metrics_json, {"test_accuracy": 0.5})
            sub.checkpoints.mkdir()
            sub.last_checkpoint.write_bytes(b"ckpt")
        write_json(run.path / "compare.json", {})
    (grid / "runs" / "full-seed0" / "checkpoints" / "mine.ckpt").write_bytes(b"mine")
    (grid / "runs" / "notes.txt").write_text("mine\n")
    with RunDir(grid, kind="compare").open(overwrite=True, command=["transferkit", "compare"]):
        pass
    left = sorted(str(p.relative_to(grid)) for p in grid.rglob("*"))
    assert left == [".lock", "runs", "runs/full-seed0", "runs/full-seed0/checkpoints",
                    "runs/full-seed0/checkpoints/mine.ckpt", "runs/notes.txt", "transferkit.json"]


# ----------------------------------------------------------------------------- export
@pytest.mark.slow
def test_export_latency_median_and_spread_on_the_same_threads(run_cli, tiny_run):
    code, stdout, err = run_cli("export", tiny_run)
    assert code == 0, err
    lat = json.loads((tiny_run / "export.json").read_text())["latency"]
    assert lat["threads"] == 1 and lat["load_average"] >= 0
    for backend in ("torch", "onnxruntime"):
        for b in (1, 8, 32):
            t = lat["spread"][f"{backend}_ms_batch{b}"]
            assert 0 < t["min"] <= t["p25"] <= t["median"] <= t["p75"] <= t["max"] and t["calls"] >= 5
            assert lat[f"{backend}_ms_batch{b}"] == t["median"]
    assert "| 8 |" in (tiny_run / "export.md").read_text() and "load average" in (tiny_run / "export.md").read_text()
    assert not _temporary(tiny_run)
