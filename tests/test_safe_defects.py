"""Defects a hostile probe found in the newer commands (issue "Nothing lost in the newer commands"),
one test each, named after the defect's number in the issue.

Every refusal is checked the way tests/test_hostile_cli.py checks them: exit code 2, one line on
stderr, no traceback, no stub folder, every file that existed before byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import write_digit_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--epochs", "1", "--image-size", "32", "--no-baseline", "--no-progress"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> content hash, and every folder -> 'dir'."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_dir() or p.is_file()}


def _refused(run_cli, world: Path, *args, words: str = "") -> str:
    """Run the CLI; assert exit 2, one line naming ``words``, no traceback, nothing changed on disk."""
    before = _snapshot(world)
    code, _, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert words.lower() in lines[0].lower(), lines[0]
    assert _snapshot(world) == before
    return lines[0]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A user's scratch folder (the working directory): ``imgs`` (2 classes of 8 digits)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / ".cache"))
    write_digit_folder(tmp_path / "imgs", per_class=8, classes=(0, 1))
    return tmp_path


# ----------------------------------------------------------------------------- 3, 4: a batch of one image
def test_defect_03_train_loader_drops_only_a_last_batch_of_one():
    """The loader every training command fits on: a last batch of exactly one image (per process under
    DDP) is dropped, any other last batch kept."""
    import torch

    from transferkit.config import FinetuneConfig
    from transferkit.engine.stages import train_loader

    def sizes(n, batch, devices="1", drop_last=False):
        cfg = FinetuneConfig.build(data="x", batch_size=batch, devices=devices)
        return [len(x) for (x,) in train_loader(torch.utils.data.TensorDataset(torch.zeros(n, 1)), cfg, drop_last)]

    assert sizes(81, 16) == [16] * 5                   # the probe's case: 5 x 16 + 1
    assert sizes(82, 16) == [16] * 5 + [2]
    assert sizes(17, 16, drop_last=True) == [16]
    assert sizes(10, 3) == [3, 3, 3]                   # 10 = 3 x 3 + 1
    cfg = FinetuneConfig.build(data="x", batch_size=4, devices="2")
    assert train_loader(torch.utils.data.TensorDataset(torch.zeros(9, 1)), cfg).drop_last  # 5 per process = 4 + 1
    assert not train_loader(torch.utils.data.TensorDataset(torch.zeros(8, 1)), cfg).drop_last


@pytest.mark.slow
def test_defect_03_last_batch_of_one_does_not_crash(world, run_cli):
    """``finetune --strategy full`` whose training split is one image more than a whole number of
    batches: BatchNorm would see a batch of one (ValueError, exit 1, a stub folder); now it trains."""
    from transferkit.config import FinetuneConfig
    from transferkit.engine.stages import load_data

    n = load_data(FinetuneConfig.build(data="imgs")).size("train")
    assert n > 3
    code, _, err = run_cli("finetune", "--data", "imgs", "--strategy", "full", "--batch-size", n - 1,
                           "--bn", "train", "--out", "bn3", *TINY)  # BatchNorm trains (auto: from batch 16)
    assert code == 0, err
    assert json.loads((world / "bn3" / "metrics.json").read_text())["train_images"] == n


@pytest.mark.slow
def test_defect_03_distill_last_batch_of_one_does_not_crash(world, tiny_run, run_cli):
    """``distill`` fitted on the plain loader too: a last batch of one image crashed its student's
    BatchNorm (adapt and pretrain dropped every partial last batch already; a one-image set: defect 4)."""
    from transferkit.config import FinetuneConfig
    from transferkit.engine.stages import load_data

    write_digit_folder(world / "pets", per_class=8, classes=(0, 1, 2))
    for digit, name in enumerate(["cat", "dog", "owl"]):  # the tiny teacher's classes
        (world / "pets" / str(digit)).rename(world / "pets" / name)
    n = load_data(FinetuneConfig.build(data="pets")).size("train")
    code, _, err = run_cli("distill", "--teacher", tiny_run, "--data", "pets", "--batch-size", n - 1, "--bn", "train",
                           "--out", "student", *TINY[:4], "--no-progress")
    assert code == 0, err
    assert json.loads((world / "student" / "metrics.json").read_text())["train_images"] == n


def test_defect_04_one_image_is_refused_before_any_folder(world, run_cli):
    """``pretrain`` on a folder of one image, and ``finetune`` whose training split leaves one image to a
    process: one line up front, no run folder."""
    (world / "one").mkdir()
    (world / "imgs" / "0" / "0.png").rename(world / "one" / "0.png")
    line = _refused(run_cli, world, "pretrain", "--data", "one", "--epochs", "1", "--image-size", "32",
                    "--batch-size", "8", "--out", "p1", "--no-progress", words="1 image")
    assert "at least 2" in line
    # finetune keeps an image per class (2 here); shared by 2 processes, each would get one
    _refused(run_cli, world, "finetune", "--data", "imgs", "--strategy", "full", "--per-class", "1",
             "--accelerator", "cpu", "--devices", "2", "--dist", "ddp", "--out", "f1", *TINY,
             words="the training split holds 2 image(s) (2 training processes")


# ----------------------------------------------------------------------------- 7: links back into the data
def test_defect_07_symlink_loop_is_not_a_class(tmp_path):
    """``ln -s . loop`` in a data folder made a class ``loop`` holding every image again; links back
    into the root (to it, into it, or to a folder above it) are skipped, a cycle of links too. A class
    folder linked from elsewhere is still followed (tests/test_hostile_data.py: symlinked-class)."""
    from transferkit.data import load_source

    root = write_digit_folder(tmp_path / "imgs", per_class=8, classes=(0, 1))
    (root / "loop").symlink_to(".", target_is_directory=True)
    (root / "up").symlink_to("..", target_is_directory=True)
    (root / "again").symlink_to(root / "1", target_is_directory=True)
    (root / "cycle").symlink_to("cycle")
    write_digit_folder(tmp_path / "elsewhere", per_class=3, classes=(2,))
    (root / "2").symlink_to(tmp_path / "elsewhere" / "2", target_is_directory=True)
    source = load_source(str(root))
    assert source.classes == ["0", "1", "2"] and len(source.train) == 19
    (root / "train").mkdir()  # the split layout: a class linked back to the root is skipped there too
    for name in ("0", "1"):
        (root / name).rename(root / "train" / name)
    (root / "2").unlink()
    for name in ("loop", "up", "again", "cycle"):
        (root / name).unlink()
    (root / "train" / "loop").symlink_to("..", target_is_directory=True)
    source = load_source(str(root))
    assert source.classes == ["0", "1"] and len(source.train) == 16


# ----------------------------------------------------------------------------- 16, 19: config files
@pytest.mark.parametrize("command", ["finetune", "compare"])
@pytest.mark.parametrize("text,words", [("- epochs: 1\n- lr: 0.1\n", "holds a YAML list"),
                                        ("3\n", "holds a YAML int"),
                                        ("data: imgs\n1: 2\n", "the key 1")])
def test_defect_16_config_that_is_not_a_mapping(world, run_cli, command, text, words):
    """``--config`` holding a YAML list (or a number, or a key that is not a name): a TypeError traceback;
    now one line naming the file."""
    (world / "list.yaml").write_text(text)
    line = _refused(run_cli, world, command, "--config", "list.yaml", "--out", "r", words=words)
    assert "list.yaml" in line


@pytest.mark.parametrize("text,words", [("data: imgs\nepochs: [\n", "line 3, column 1: expected the node content"),
                                        ("data: imgs\nepochs: 3\n  lr: 0.1\n", "line 3, column 5: mapping values"),
                                        ("data: \"imgs\n", "(while scanning a quoted scalar at line 1, column 7)")])
def test_defect_19_broken_yaml_is_one_line(world, run_cli, text, words):
    """Broken YAML printed PyYAML's five-line message ending in a caret; now one line: the file, line and
    column, the problem."""
    (world / "broken.yaml").write_text(text)
    line = _refused(run_cli, world, "finetune", "--config", "broken.yaml", "--out", "r", words=words)
    assert "config broken.yaml is not valid yaml" in line.lower() and "^" not in line


# ----------------------------------------------------------------------------- 20: config.yaml on resume
@pytest.mark.slow
def test_defect_20_resume_records_applied_changes_in_config_yaml(world, run_cli):
    """``--resume --epochs N`` recorded N in metrics.json but left the old epochs in config.yaml; now
    config.yaml says what the run went on with (and a later ``--resume`` continues from it)."""
    import yaml

    args = ["--data", "imgs", "--strategy", "freeze", "--per-class", "4", "--out", "run", *TINY]
    code, _, err = run_cli("finetune", *args)
    assert code == 0, err
    code, out, err = run_cli("finetune", "--out", "run", "--resume", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert "--epochs 2 applied on resume (was 1)" in out
    saved = yaml.safe_load((world / "run" / "config.yaml").read_text())
    assert saved["epochs"] == 2 == json.loads((world / "run" / "metrics.json").read_text())["epochs"]
    assert not list((world / "run").glob(".*tktmp"))  # written atomically: no temporary file left
    code, _, err = run_cli("finetune", "--out", "run", "--resume")
    assert code == 2 and "already complete" in err  # the recorded epochs are the run's: nothing left to do


# ----------------------------------------------------------------------------- 17: predict --skip-bad-images
def test_defect_17_predict_names_skipped_images(world, tiny_run, run_cli):
    """``predict --skip-bad-images`` printed ``[]`` and exit 0 when every image was unreadable, and never
    named the files it skipped; now the skipped files are named on stderr (one line; stdout keeps the
    results alone), and none readable is one error line, exit 2."""
    from transferkit.errors import DataError
    from transferkit.predict import predict

    folder = world / "mixed"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    _refused(run_cli, world, "predict", tiny_run, folder, "--skip-bad-images", "--format", "json",
             words="none of the 2 image(s) is readable (skipped: '")
    with pytest.raises(DataError, match="empty.png"):
        predict(tiny_run, [folder], skip_bad_images=True)
    (world / "imgs" / "0" / "0.png").rename(folder / "ok.png")
    code, out, err = run_cli("predict", tiny_run, folder, "--skip-bad-images", "--format", "json")
    assert code == 0, err
    assert [r["path"] for r in json.loads(out)] == [str(folder / "ok.png")]
    assert err.count("\n") == 1 and err.startswith("warning: skipped 2 unreadable image(s)")
    assert "empty.png" in err and "text.jpg" in err
    assert predict(tiny_run, [folder], skip_bad_images=True).skipped == [str(folder / "empty.png"),
                                                                          str(folder / "text.jpg")]


# ----------------------------------------------------------------------------- 18: adapt onto itself
@pytest.mark.parametrize("target", ["imgs", "./imgs/../imgs/", "link", "imgs/0", "builtin:digits"])
def test_defect_18_adapt_source_is_target_refused(world, run_cli, target):
    """``adapt --source X --target X`` trained silently; now refused in one line, before any folder:
    the same path (links resolved), one inside the other, the same builtin."""
    (world / "link").symlink_to(world / "imgs", target_is_directory=True)
    source = "builtin:digits" if target.startswith("builtin:") else "imgs"
    _refused(run_cli, world, "adapt", "--source", source, "--target", target, "--out", "a", *TINY[:4], "--no-progress",
             words="adaptation needs two domains")
    _refused(run_cli, world, "adapt", "--source", target, "--target", source, "--method", "dann,coral",
             "--out", "grid", *TINY[:4], "--no-progress", words="are the same images")


# ----------------------------------------------------------------------------- 9: a read-only run
@contextmanager
def unwritable(folder: Path):
    """``folder`` made really unwritable for this process: ``chattr +i`` as root (root ignores modes),
    else mode 0555; skips the test where neither takes (a file system without immutable flags)."""
    root = os.geteuid() == 0
    if root and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    elif not root:
        folder.chmod(0o555)
    try:
        try:
            (folder / ".probe").touch()
        except OSError:
            pass
        else:
            (folder / ".probe").unlink()
            pytest.skip(f"cannot make {folder} unwritable here")
        yield folder
    finally:
        if root and shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_defect_09_export_on_read_only_run_is_one_line(world, tiny_run, run_cli):
    """``export`` on a run folder it cannot write in: ``OSError: [Errno 30] Read-only file system:
    '.../.lock'`` traceback; now one line saying the run directory is not writable, exit 2, nothing
    written. (A read-only mount, EROFS, was checked by hand the same way: access(2) reports it too.)"""
    with unwritable(tiny_run):
        line = _refused(run_cli, tiny_run.parent, "export", tiny_run, words="is not writable")
    assert str(tiny_run) in line and not (tiny_run / ".lock").exists()


# ----------------------------------------------------------------------------- 10: disk full at a checkpoint
@contextmanager
def small_disk(folder: Path, size: str = "3m"):
    """A real file system of ``size`` mounted on ``folder`` (tmpfs: root with CAP_SYS_ADMIN), room for a
    run's config and logs but not for a checkpoint; skips the test where it cannot be mounted."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def _checkpoint_fault(code: int, err: str, run: Path, reason: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1, err  # IOFault: the machine failed, not the command line (errors.py)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot write {run / 'checkpoints' / 'last.ckpt'}: {reason}" in lines[0], lines[0]
    assert "epoch 0 not saved; no checkpoint was saved: continue with --resume" in lines[0]
    assert not run.exists()  # a start that saved no checkpoint is undone: no stub, no .last.ckpt.tmp


@pytest.mark.slow
def test_defect_10_disk_full_while_saving_a_checkpoint(world, run_cli):
    """The probe's case: the run's disk fills while Lightning copies the checkpoint from its temporary
    file (on another file system) into ``checkpoints/.last.ckpt.tmp``: an ``OSError: [Errno 28]``
    traceback and the partial file left; now one line, the partial file removed."""
    with small_disk(world / "small"):
        before = _snapshot(world / "imgs")
        code, _, err = run_cli("finetune", "--data", "imgs", "--strategy", "full", "--out", "small/run", *TINY)
        _checkpoint_fault(code, err, Path("small/run"), "No space left on device (ENOSPC)")
        assert _snapshot(world / "imgs") == before


@pytest.mark.slow
def test_defect_10_file_too_large_while_saving_a_checkpoint(world):
    """The same fault without root: the real CLI in a process whose files may not exceed 1 MB
    (RLIMIT_FSIZE: the kernel refuses the checkpoint's writes with EFBIG). One line, exit 1, no
    temporary file left in the run nor in TMPDIR (where Lightning's fsspec stages the checkpoint)."""
    import resource
    import signal
    import sys

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    (world / "systmp").mkdir()
    done = subprocess.run([sys.executable, "-m", "transferkit.cli", "finetune", "--data", "imgs", "--strategy",
                           "full", "--out", "run", *TINY], capture_output=True, text=True, preexec_fn=limit_files,
                          env={**os.environ, "TMPDIR": str(world / "systmp")})
    _checkpoint_fault(done.returncode, done.stderr, Path("run"), "File too large (EFBIG)")
    assert list((world / "systmp").iterdir()) == []


# ----------------------------------------------------------------------------- 8: resume on changed images
@pytest.mark.slow
def test_defect_08_resume_refuses_images_added_or_removed(world, run_cli):
    """``--resume`` after images were added or removed (same classes) re-split the data silently; the
    run now records the data's content in data.json and ``--resume`` refuses a change in one line."""
    code, _, err = run_cli("finetune", "--data", "imgs", "--strategy", "freeze", "--out", "run", *TINY)
    assert code == 0, err
    assert json.loads((world / "run" / "data.json").read_text())["fingerprint"]["images"] == 16
    (world / "run" / "metrics.json").unlink()  # as if stopped before the end: resumable
    (world / "imgs" / "0" / "0.png").rename(world / "away.png")
    _refused(run_cli, world, "finetune", "--out", "run", "--resume", words="16 -> 15 images")
    (world / "away.png").rename(world / "imgs" / "0" / "new.png")  # as many images, not the same files
    _refused(run_cli, world, "finetune", "--out", "run", "--resume", words="still 16 images, but not the same")
    (world / "imgs" / "0" / "new.png").rename(world / "imgs" / "0" / "0.png")
    code, _, err = run_cli("finetune", "--out", "run", "--resume", "--no-progress")
    assert code == 0, err


def test_defect_08_fingerprint_is_the_content_not_the_place(world):
    """The recorded content survives a copy of the data elsewhere (names, sizes, classes), not an
    added image."""
    from transferkit.data import content_fingerprint, load_source

    shutil.copytree(world / "imgs", world / "copy")
    first = load_source("imgs").content()
    assert load_source(str(world / "copy")).content() == first == content_fingerprint(load_source("imgs").train)
    shutil.copy(world / "imgs" / "0" / "0.png", world / "copy" / "0" / "extra.png")
    assert load_source(str(world / "copy")).content()["images"] == 17
