"""Hostile input for every command, through the real CLI, one table.

Each case runs one command line in a user's folder (``world``: images, a folder with
other classes, an empty folder, a folder of text files, a folder that is not a run, a
plain file, broken config files and a finished run) and checks:

* the exit code (2 for bad input; 0 where the command should succeed);
* for an error, exactly one line on stderr, naming the problem;
* no ``Traceback`` in stdout or stderr;
* no stub: every path that appeared is one of the case's expected outputs (none for an error);
* every file that existed before is byte-identical, and no path vanished.

The finished run is a real ``finetune`` run (test_efficientnet, random init, 32 px, one
epoch), made once per module and copied into each case's folder. Cases are in-process
(``run_cli``); signals: tests/test_processes.py.
(finetune/compare/rank options: tests/test_hostile_cli.py; data sources and predict's
library call: tests/test_hostile_data.py.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import write_digit_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a tiny model everywhere a case could get as far as building one
TINY = ["--model", "test_efficientnet", "--weights", "none", "--image-size", "32", "--epochs", "1",
        "--no-progress"]


@dataclass
class Case:
    args: list[str]
    code: int = 2
    words: str = ""  # in the one error line (code != 0) or in stdout (code 0); case-insensitive
    outputs: tuple[str, ...] = ()  # paths (relative to the world) under which new paths may appear
    expect: tuple[str, ...] = ()  # files that must exist afterwards
    setup: Callable[[Path, Callable], None] | None = None  # runs before the snapshot
    kept: tuple[str, ...] = ()  # paths under ``outputs`` that must stay byte-identical all the same
    marks: tuple = ()


# ----------------------------------------------------------------------------- the user's folder
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished finetune run (real training, one epoch) on three digit classes."""
    from transferkit.config import FinetuneConfig
    from transferkit.engine.finetune import finetune

    root = tmp_path_factory.mktemp("hostile-run")
    write_digit_folder(root / "images", per_class=6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_CACHE", str(root / "cache"))
        cfg = FinetuneConfig.build(data=str(root / "images"), model="test_efficientnet", weights="none",
                                   strategy="full", epochs=1, image_size=32, baseline=False, out=str(root / "run"))
        finetune(cfg, progress=False)
    assert (root / "run" / "metrics.json").is_file()
    return root / "run"


@pytest.fixture(scope="module")
def world_template(tmp_path_factory, finished_run):
    """The user's folder, built once per module (each test gets its own copy: ``world``)."""
    root = tmp_path_factory.mktemp("world-template") / "world"
    root.mkdir()
    write_digit_folder(root / "images", per_class=6)
    write_digit_folder(root / "target", per_class=4)  # the same classes as images
    write_digit_folder(root / "other", per_class=6, classes=(3, 4, 5))  # other classes
    (root / "empty").mkdir()
    for c in ("a", "b"):
        (root / "textonly" / c).mkdir(parents=True)
        (root / "textonly" / c / "readme.txt").write_text("not an image\n")
        (root / "fakes" / c).mkdir(parents=True)
        (root / "fakes" / c / "photo.png").write_text("a text file named like an image\n")
    (root / "notes").mkdir()
    (root / "notes" / "notes.txt").write_text("my notes\n")
    (root / "afile").write_text("not a folder\n")
    (root / "list.yaml").write_text("- data: images\n- epochs: 1\n")
    (root / "broken.yaml").write_text("data: [images\nepochs: 1\n")
    shutil.copytree(finished_run, root / "run")
    return root


@pytest.fixture
def world(tmp_path, monkeypatch, world_template):
    root = tmp_path / "world"
    shutil.copytree(world_template, root, symlinks=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))  # outside the snapshot
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> 'dir', 'link:<target>' or its content's hash."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                seen[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[key] = "dir"
            else:
                seen[key] = hashlib.sha1(path.read_bytes()).hexdigest()
    return seen


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def check_case(case: Case, world: Path, run_cli) -> None:
    if case.setup:
        case.setup(world, run_cli)
    before = snapshot(world)
    code, out, err = run_cli(*case.args)
    assert "Traceback" not in out + err, err
    assert code == case.code, f"exit {code}: {err}{out}"
    if case.code:
        assert case.words, "an error case names the words its message must hold"
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: "), err
        assert case.words.lower() in lines[0].lower(), lines[0]
    else:
        assert case.words.lower() in out.lower(), out
    after = snapshot(world)
    assert [p for p in after if p not in before and not under(p, case.outputs)] == []  # no stub
    unchanged = {p: h for p, h in before.items() if not under(p, case.outputs) or under(p, case.kept)}
    assert {p: after.get(p) for p in unchanged} == unchanged  # byte-identical, none removed
    for p in case.expect:
        assert (world / p).is_file(), p


# ----------------------------------------------------------------------------- setups
def cli(*args):
    """A setup step: run a command that must succeed."""
    def setup(world, run_cli):
        code, _, err = run_cli(*args)
        assert code == 0, err
    return setup


def unfinished_run(world, run_cli):
    """The run as if killed before it saved its model."""
    for name in ("metrics.json", "model.json"):
        (world / "run" / name).unlink()


def corrupted_with_user_files(world, run_cli):
    """corrupt's output, then the user's own folder beside it."""
    cli("corrupt", "images", "--corruption", "gaussian_noise", "--out", "c")(world, run_cli)
    (world / "c" / "mine").mkdir()
    (world / "c" / "mine" / "keep.txt").write_text("mine\n")


def user_file_in_checkpoints(world, run_cli):
    (world / "run" / "checkpoints" / "mine.txt").write_text("mine\n")


def corrupted_with_a_user_file_inside(world, run_cli):
    """corrupt's output, then the user's own file inside one of its folders."""
    cli("corrupt", "images", "--corruption", "gaussian_noise", "--out", "c")(world, run_cli)
    (world / "c" / "gaussian_noise-3" / "mine.txt").write_text("mine\n")


opencv = pytest.mark.needs_opencv
#: the student of every distill case: the tiny model, one epoch
STUDENT = ["--student", "test_efficientnet", "--epochs", "1", "--no-progress"]


CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ finetune
    "finetune-empty-data-folder": Case(["finetune", "--data", "empty", *TINY, "--out", "r"],
                                       words="no class sub-folders"),
    "finetune-only-non-images": Case(["finetune", "--data", "textonly", *TINY, "--out", "r"],
                                     words="contains no images"),
    "finetune-text-files-named-png": Case(["finetune", "--data", "fakes", *TINY, "--out", "r"],
                                          words="--skip-bad-images"),
    "finetune-config-is-a-list": Case(["finetune", "--config", "list.yaml", "--out", "r"], words="list"),
    "finetune-config-broken-yaml": Case(["finetune", "--config", "broken.yaml", "--out", "r"], words="YAML"),
    "finetune-existing-run-without-overwrite": Case(["finetune", "--data", "images", *TINY, "--out", "run"],
                                                    words="already exists"),
    "finetune-resume-complete-run": Case(["finetune", "--out", "run", "--resume"], words="already complete"),
    "finetune-overwrite-and-resume": Case(["finetune", "--out", "run", "--resume", "--overwrite"],
                                          words="exclude", setup=unfinished_run),
    "finetune-out-inside-weights-run": Case(["finetune", "--data", "images", *TINY[:2], "--weights", "run",
                                             "--out", "run/again"], words="input"),
    "finetune-weights-run-of-another-model": Case(["finetune", "--data", "images", "--model", "resnet10t",
                                                   "--weights", "run", "--out", "r"], words="test_efficientnet"),
    "finetune-epochs-zero": Case(["finetune", "--data", "images", *TINY, "--epochs", "0", "--out", "r"],
                                 words="epochs"),
    "finetune-batch-size-negative": Case(["finetune", "--data", "images", *TINY, "--batch-size", "-4",
                                          "--out", "r"], words="batch_size"),
    "finetune-hflip-nan": Case(["finetune", "--data", "images", *TINY, "--hflip", "nan", "--out", "r"],
                               words="hflip"),
    "finetune-unknown-norm": Case(["finetune", "--data", "images", *TINY, "--norm", "magic", "--out", "r"],
                                  words="norm"),
    "finetune-val-split-one": Case(["finetune", "--data", "images", *TINY, "--val-split", "1", "--out", "r"],
                                   words="val_split"),
    "finetune-overwrite-keeps-a-user-file-in-checkpoints": Case(
        ["finetune", "--data", "images", *TINY, "--strategy", "full", "--no-baseline", "--out", "run", "--overwrite"],
        code=0, words="test accuracy", setup=user_file_in_checkpoints, outputs=("run",),
        kept=("run/checkpoints/mine.txt",), expect=("run/metrics.json",)),
    # ------------------------------------------------------------------ predict
    "predict-not-a-run": Case(["predict", "notes", "images/0"], words="model.json"),
    "predict-unfinished-run": Case(["predict", "run", "images/0"], words="--resume", setup=unfinished_run),
    "predict-unknown-format": Case(["predict", "run", "images/0", "--format", "xml"], words="xml"),
    "predict-unknown-backend": Case(["predict", "run", "images/0", "--backend", "tensorrt"], words="tensorrt"),
    "predict-onnx-without-export": Case(["predict", "run", "images/0", "--backend", "onnxruntime"],
                                        words="export"),
    "predict-empty-folder": Case(["predict", "run", "empty"], words="no images"),
    "predict-only-non-images": Case(["predict", "run", "textonly"], words="no images found"),
    "predict-text-file-named-png": Case(["predict", "run", "fakes/a/photo.png"], words="--skip-bad-images"),
    "predict-topk-negative": Case(["predict", "run", "images/0", "--topk", "-1"], words="--topk"),
    "predict-reads-and-writes-nothing": Case(["predict", "run", "images/0", "--format", "csv"], code=0,
                                             words="images/0/0.png"),
    # ------------------------------------------------------------------ rank
    "rank-out-over-a-foreign-folder": Case(["rank", "--data", "images", "--out", "notes"],
                                           words="not a transferkit run"),
    "rank-out-inside-data": Case(["rank", "--data", "images", "--out", "images/ranked"], words="input"),
    "rank-out-over-a-finetune-run": Case(["rank", "--data", "images", "--out", "run"], words="finetune"),
    "rank-image-size-too-small": Case(["rank", "--data", "images", "--image-size", "8"], words="image"),
    "rank-unknown-layer": Case(["rank", "--data", "images", "--layers", "bogus"], words="bogus"),
    "rank-unknown-weights": Case(["rank", "--data", "images", "--weights", "bogus"], words="bogus"),
    "rank-empty-data": Case(["rank", "--data", "empty"], words="no class sub-folders"),
    "rank-per-class-zero": Case(["rank", "--data", "images", "--per-class", "0"], words="per"),
    "rank-seed-negative": Case(["rank", "--data", "images", "--seed", "-1"], words="--seed"),
    "rank-seed-too-large": Case(["rank", "--data", "images", "--seed", str(2**32)], words="--seed"),
    "rank-out-under-a-file": Case(["rank", "--data", "images", "--out", "afile/r"], words="afile"),
    "rank-only-non-images": Case(["rank", "--data", "textonly", "--models", "test_efficientnet", "--weights",
                                  "none", "--no-progress"], words="contains no images"),
    # ------------------------------------------------------------------ compare
    "compare-config-is-a-list": Case(["compare", "--config", "list.yaml", "--out", "c", "--strategies",
                                      "linear-probe"], words="list"),
    "compare-config-broken-yaml": Case(["compare", "--config", "broken.yaml", "--out", "c", "--strategies",
                                        "linear-probe"], words="YAML"),
    "compare-out-over-a-foreign-folder": Case(["compare", "--data", "images", "--out", "notes", "--strategies",
                                               "linear-probe"], words="not a transferkit run"),
    "compare-out-over-a-finetune-run": Case(["compare", "--data", "images", "--out", "run", "--strategies",
                                             "linear-probe", "--overwrite"], words="finetune"),
    "compare-seeds-negative": Case(["compare", "--data", "images", "--out", "c", "--seeds", "-1"], words="seeds"),
    "compare-epochs-zero": Case(["compare", "--data", "images", "--out", "c", "--epochs", "0", "--strategies",
                                 "full"], words="epochs"),
    "compare-empty-data": Case(["compare", "--data", "empty", "--out", "c", "--strategies", "linear-probe"],
                               words="no class sub-folders"),
    # ------------------------------------------------------------------ adapt
    "adapt-source-missing": Case(["adapt", "--source", "nowhere", "--target", "target", *TINY, "--out", "a"],
                                 words="nowhere"),
    "adapt-target-missing": Case(["adapt", "--source", "images", "--target", "nowhere", *TINY, "--out", "a"],
                                 words="nowhere"),
    "adapt-target-is-the-source": Case(["adapt", "--source", "images", "--target", "images", *TINY,
                                        "--out", "a"], words="target"),
    "adapt-unknown-method": Case(["adapt", "--source", "images", "--target", "target", "--method", "magic",
                                  *TINY, "--out", "a"], words="magic"),
    "adapt-trade-off-negative": Case(["adapt", "--source", "images", "--target", "target", "--trade-off", "-1",
                                      *TINY, "--out", "a"], words="trade_off"),
    "adapt-trade-off-inf": Case(["adapt", "--source", "images", "--target", "target", "--trade-off", "inf",
                                 *TINY, "--out", "a"], words="trade_off"),
    "adapt-classes-differ": Case(["adapt", "--source", "images", "--target", "other", *TINY, "--out", "a"],
                                 words="must have the same classes"),
    "adapt-target-empty-folder": Case(["adapt", "--source", "images", "--target", "empty", *TINY, "--out", "a"],
                                      words="no readable images"),
    "adapt-target-only-non-images": Case(["adapt", "--source", "images", "--target", "textonly", *TINY,
                                          "--out", "a"], words="contains no images"),
    "adapt-out-inside-source": Case(["adapt", "--source", "images", "--target", "target", *TINY,
                                     "--out", "images/a"], words="input"),
    "adapt-out-under-a-file": Case(["adapt", "--source", "images", "--target", "target", *TINY,
                                    "--out", "afile/a"], words="afile"),
    "adapt-strategy-not-for-adapt": Case(["adapt", "--source", "images", "--target", "target", "--strategy",
                                          "lora", *TINY, "--out", "a"], words="lora"),
    "adapt-config-is-a-list": Case(["adapt", "--config", "list.yaml", "--out", "a"], words="list"),
    "adapt-resume-without-run": Case(["adapt", "--out", "nothing-here", "--resume"], words="config.yaml"),
    "adapt-out-over-a-finetune-run": Case(["adapt", "--source", "images", "--target", "target", *TINY,
                                           "--out", "run", "--overwrite"], words="finetune"),
    "adapt-out-over-a-foreign-folder-overwrite": Case(["adapt", "--source", "images", "--target", "target", *TINY,
                                                       "--out", "notes", "--overwrite"],
                                                      words="not a transferkit run"),
    "adapt-seeds-zero": Case(["adapt", "--source", "images", "--target", "target", "--method", "dann,coral",
                              "--seeds", "0", *TINY, "--out", "a"], words="seeds"),
    # ------------------------------------------------------------------ distill
    "distill-teacher-missing": Case(["distill", "--teacher", "nowhere", *STUDENT, "--out", "d"], words="nowhere"),
    "distill-teacher-not-a-run": Case(["distill", "--teacher", "notes", *STUDENT, "--out", "d"],
                                      words="model.json"),
    "distill-teacher-unfinished": Case(["distill", "--teacher", "run", *STUDENT, "--out", "d"],
                                       words="model.json", setup=unfinished_run),
    "distill-unknown-loss": Case(["distill", "--teacher", "run", "--loss", "magic", *STUDENT, "--out", "d"],
                                 words="magic"),
    "distill-unknown-student": Case(["distill", "--teacher", "run", "--student", "no_such_net", "--out", "d"],
                                    words="no_such_net"),
    "distill-alpha-above-one": Case(["distill", "--teacher", "run", "--alpha", "2", *STUDENT, "--out", "d"],
                                    words="alpha"),
    "distill-temperature-zero": Case(["distill", "--teacher", "run", "--temperature", "0", *STUDENT,
                                      "--out", "d"], words="temperature"),
    "distill-temperature-inf": Case(["distill", "--teacher", "run", "--temperature", "inf", *STUDENT,
                                     "--out", "d"], words="temperature"),
    "distill-classes-differ": Case(["distill", "--teacher", "run", "--data", "other", *STUDENT, "--out", "d"],
                                   words="distil on the data the teacher was trained for"),
    "distill-empty-data": Case(["distill", "--teacher", "run", "--data", "empty", *STUDENT, "--out", "d"],
                               words="no class sub-folders"),
    "distill-out-is-the-teacher": Case(["distill", "--teacher", "run", "--data", "images", *STUDENT,
                                        "--out", "run", "--overwrite"], words="input"),
    "distill-out-inside-the-teacher": Case(["distill", "--teacher", "run", "--data", "images", *STUDENT,
                                            "--out", "run/student"], words="input"),
    "distill-out-over-another-kind-of-run": Case(["distill", "--teacher", "teacher", "--data", "images", *STUDENT,
                                                  "--out", "run"], words="finetune",
                                                 setup=lambda w, _: shutil.copytree(w / "run", w / "teacher")),
    "distill-out-under-a-file": Case(["distill", "--teacher", "run", "--data", "images", *STUDENT,
                                      "--out", "afile/d"], words="afile"),
    "distill-baseline-and-baseline-run": Case(["distill", "--teacher", "run", "--baseline", "--baseline-run", "run",
                                               *STUDENT, "--out", "d"], words="not both"),
    "distill-baseline-run-missing": Case(["distill", "--teacher", "run", "--data", "images", *STUDENT,
                                          "--baseline-run", "nowhere", "--out", "d"], words="nowhere"),
    "distill-unlabelled-more-than-there-are": Case(["distill", "--teacher", "run", "--data", "images", *STUDENT,
                                                    "--unlabelled", "100000", "--out", "d"], words="unlabelled"),
    "distill-config-broken-yaml": Case(["distill", "--config", "broken.yaml", "--out", "d"], words="YAML"),
    # ------------------------------------------------------------------ pretrain
    "pretrain-unknown-method": Case(["pretrain", "--data", "images", "--method", "magic", *TINY, "--out", "p"],
                                    words="magic"),
    "pretrain-mae-on-a-cnn": Case(["pretrain", "--data", "images", "--method", "mae", *TINY, "--out", "p"],
                                  words="mae"),
    "pretrain-batch-size-one": Case(["pretrain", "--data", "images", "--batch-size", "1", *TINY, "--out", "p"],
                                    words="batch_size"),
    "pretrain-images-one": Case(["pretrain", "--data", "images", "--images", "1", *TINY, "--out", "p"],
                                words="images"),
    "pretrain-empty-data": Case(["pretrain", "--data", "empty", *TINY, "--out", "p"], words="no readable images"),
    "pretrain-only-non-images": Case(["pretrain", "--data", "textonly", *TINY, "--out", "p"],
                                     words="contains no images"),
    "pretrain-out-over-a-foreign-folder": Case(["pretrain", "--data", "images", *TINY, "--out", "notes"],
                                               words="not a transferkit run"),
    "pretrain-out-over-a-finetune-run": Case(["pretrain", "--data", "images", *TINY, "--out", "run",
                                              "--overwrite"], words="finetune"),
    "pretrain-resume-without-run": Case(["pretrain", "--out", "nothing-here", "--resume"], words="config.yaml"),
    "pretrain-config-is-a-list": Case(["pretrain", "--config", "list.yaml", "--out", "p"], words="list"),
    "pretrain-out-under-a-file": Case(["pretrain", "--data", "images", *TINY, "--out", "afile/p"], words="afile"),
    "pretrain-lr-nan": Case(["pretrain", "--data", "images", *TINY, "--lr", "nan", "--out", "p"], words="lr"),
    "pretrain-weights-run-of-another-model": Case(["pretrain", "--data", "images", "--model", "resnet10t",
                                                   "--weights", "run", "--out", "p"], words="test_efficientnet"),
    # ------------------------------------------------------------------ tta
    "tta-run-missing": Case(["tta", "nowhere", "--data", "images", "--out", "t"], words="nowhere"),
    "tta-run-not-a-run": Case(["tta", "notes", "--data", "images", "--out", "t"], words="model.json"),
    "tta-data-missing": Case(["tta", "run", "--data", "nowhere", "--method", "bn", "--out", "t"], words="nowhere"),
    "tta-unknown-method": Case(["tta", "run", "--data", "images", "--method", "magic", "--out", "t"],
                               words="magic"),
    "tta-unknown-corruption": Case(["tta", "run", "--data", "images", "--corruptions", "magic", "--out", "t"],
                                   words="magic"),
    "tta-severity-zero": Case(["tta", "run", "--data", "images", "--severity", "0", "--out", "t"],
                              words="severity"),
    "tta-batch-size-zero": Case(["tta", "run", "--data", "images", "--batch-size", "0", "--out", "t"],
                                words="batch_size"),
    "tta-lr-nan": Case(["tta", "run", "--data", "images", "--lr", "nan", "--out", "t"], words="lr"),
    "tta-lr-inf": Case(["tta", "run", "--data", "images", "--lr", "inf", "--out", "t"], words="lr"),
    "tta-bn-prior-inf": Case(["tta", "run", "--data", "images", "--bn-prior", "inf", "--out", "t"],
                             words="bn_prior"),
    "tta-seed-too-large": Case(["tta", "run", "--data", "images", "--seed", str(2**32), "--out", "t"],
                               words="seed"),
    "tta-only-non-images": Case(["tta", "run", "--data", "textonly", "--method", "bn", "--out", "t"],
                                words="contains no images"),
    "tta-bn-prior-negative": Case(["tta", "run", "--data", "images", "--bn-prior", "-1", "--out", "t"],
                                  words="bn_prior"),
    "tta-no-out": Case(["tta", "run", "--data", "images"], words="--out"),
    "tta-out-inside-the-run": Case(["tta", "run", "--data", "images", "--method", "bn", "--out", "run/tta"],
                                   words="input"),
    "tta-out-inside-the-data": Case(["tta", "run", "--data", "images", "--method", "bn", "--out", "images/tta"],
                                    words="input"),
    "tta-out-over-a-foreign-folder": Case(["tta", "run", "--data", "images", "--method", "bn", "--out", "notes"],
                                          words="not a transferkit run"),
    "tta-out-over-a-foreign-folder-overwrite": Case(["tta", "run", "--data", "images", "--method", "bn",
                                                     "--out", "notes", "--overwrite"], words="not a transferkit run"),
    "tta-out-under-a-file": Case(["tta", "run", "--data", "images", "--method", "bn", "--out", "afile/t"],
                                 words="afile"),
    "tta-classes-the-model-does-not-know": Case(["tta", "run", "--data", "other", "--method", "bn", "--out", "t"],
                                                words="classes the model does not know"),
    "tta-empty-data": Case(["tta", "run", "--data", "empty", "--method", "bn", "--out", "t"],
                           words="no readable images"),
    "tta-save-two-methods": Case(["tta", "run", "--data", "images", "--method", "bn,tent", "--save", "--out", "t"],
                                 words="one"),
    "tta-existing-results-without-overwrite": Case(
        ["tta", "run", "--data", "images", "--method", "bn", "--batch-size", "6", "--no-progress", "--out", "t"],
        words="already exists",
        setup=cli("tta", "run", "--data", "images", "--method", "bn", "--batch-size", "6", "--no-progress",
                  "--out", "t")),
    "tta-writes-only-its-folder": Case(["tta", "run", "--data", "images", "--method", "bn", "--batch-size", "6",
                                        "--no-progress", "--out", "t"], code=0, words="bn",
                                       outputs=("t",), expect=("t/metrics.json", "t/report.md")),
    # ------------------------------------------------------------------ export
    "export-run-missing": Case(["export", "nowhere"], words="nowhere"),
    "export-run-is-a-file": Case(["export", "afile"], words="afile"),
    "export-not-a-run": Case(["export", "notes"], words="model.json"),
    "export-unfinished-run": Case(["export", "run"], words="model.json", setup=unfinished_run),
    "export-unknown-format": Case(["export", "run", "--format", "tflite"], words="tflite"),
    "export-opset-zero": Case(["export", "run", "--opset", "0"], words="opset"),
    "export-writes-only-its-files": Case(["export", "run"], code=0, words="model.onnx",
                                         outputs=("run/model.onnx", "run/export.json", "run/export.md"),
                                         expect=("run/model.onnx", "run/export.json", "run/export.md"),
                                         marks=(pytest.mark.slow,)),  # exports, verifies and times a model: 4 s
    # ------------------------------------------------------------------ corrupt
    "corrupt-data-missing": Case(["corrupt", "nowhere", "--corruption", "fog", "--out", "c"], words="nowhere"),
    "corrupt-unknown-corruption": Case(["corrupt", "images", "--corruption", "magic", "--out", "c"],
                                       words="magic"),
    "corrupt-severity-zero": Case(["corrupt", "images", "--corruption", "fog", "--severity", "0", "--out", "c"],
                                  words="severity", marks=(opencv,)),
    "corrupt-severity-six": Case(["corrupt", "images", "--corruption", "fog", "--severity", "6", "--out", "c"],
                                 words="severity", marks=(opencv,)),
    "corrupt-out-is-a-file": Case(["corrupt", "images", "--corruption", "fog", "--out", "afile"], words="afile",
                                  marks=(opencv,)),
    "corrupt-out-under-a-file": Case(["corrupt", "images", "--corruption", "fog", "--out", "afile/c"],
                                     words="afile", marks=(opencv,)),
    "corrupt-out-inside-the-data": Case(["corrupt", "images", "--corruption", "fog", "--out", "images/c"],
                                        words="input", marks=(opencv,)),
    "corrupt-out-over-a-foreign-folder-overwrite": Case(["corrupt", "images", "--corruption", "fog",
                                                         "--out", "notes", "--overwrite"],
                                                        words="not a transferkit run",
                                                        marks=(opencv,)),
    "corrupt-existing-output-without-overwrite": Case(["corrupt", "images", "--corruption", "gaussian_noise",
                                                       "--out", "c"], words="--overwrite",
                                                      setup=cli("corrupt", "images", "--corruption",
                                                                "gaussian_noise", "--out", "c"), marks=(opencv,)),
    "corrupt-empty-data": Case(["corrupt", "empty", "--corruption", "fog", "--out", "c"], words="no class sub-folders",
                               marks=(opencv,)),
    "corrupt-only-non-images": Case(["corrupt", "textonly", "--corruption", "fog", "--out", "c"],
                                    words="contains no images", marks=(opencv,)),
    "corrupt-overwrite-keeps-the-users-files": Case(["corrupt", "images", "--corruption", "gaussian_noise",
                                                     "--out", "c", "--overwrite"], code=0, words="gaussian_noise-3",
                                                    setup=corrupted_with_user_files, outputs=("c",),
                                                    kept=("c/mine",),
                                                    expect=("c/gaussian_noise-3/labels.csv",), marks=(opencv,)),
    "corrupt-overwrite-keeps-a-user-file-inside-its-folder": Case(
        ["corrupt", "images", "--corruption", "gaussian_noise", "--out", "c", "--overwrite"], code=0,
        words="gaussian_noise-3", setup=corrupted_with_a_user_file_inside, outputs=("c",),
        kept=("c/gaussian_noise-3/mine.txt",), expect=("c/gaussian_noise-3/labels.csv",),
        marks=(opencv,)),
    "corrupt-adds-beside-earlier-corruptions": Case(["corrupt", "images", "--corruption", "fog", "--out", "c"],
                                                    code=0, words="fog-3", outputs=("c",),
                                                    kept=("c/gaussian_noise-3",), expect=("c/fog-3/labels.csv",),
                                                    setup=cli("corrupt", "images", "--corruption",
                                                              "gaussian_noise", "--out", "c"), marks=(opencv,)),
    "corrupt-writes-only-its-folder": Case(["corrupt", "images", "--corruption", "gaussian_noise", "--out", "c"],
                                           code=0, words="gaussian_noise-3", outputs=("c",),
                                           expect=("c/gaussian_noise-3/labels.csv",), marks=(opencv,)),
    # ------------------------------------------------------------------ groups, models
    "groups-unknown-model": Case(["groups", "no_such_net"], words="no_such_net"),
    "groups-lr-decay-zero": Case(["groups", "test_efficientnet", "--lr-decay", "0"], words="decay"),
    "groups-lr-decay-nan": Case(["groups", "test_efficientnet", "--lr-decay", "nan"], words="decay"),
    "groups-lr-decay-above-one": Case(["groups", "test_efficientnet", "--lr-decay", "2"], words="decay"),
    "groups-shows-the-groups": Case(["groups", "test_efficientnet", "--lr-decay", "0.5"], code=0, words="head"),
    "models-no-match": Case(["models", "no_such_net*"], words="no timm model matches"),
    "models-lists-a-pattern": Case(["models", "test_eff*"], code=0, words="test_efficientnet"),
    # ------------------------------------------------------------------ any command: what typer parses
    "usage-error-value-not-a-number": Case(["finetune", "--data", "images", "--epochs", "abc", "--out", "r"],
                                           words="--epochs"),
    "usage-error-unknown-option": Case(["finetune", "--data", "images", "--epochs-typo", "3", "--out", "r"],
                                       words="--epochs-typo"),
}


@pytest.mark.parametrize("case", [pytest.param(c, id=name, marks=c.marks) for name, c in CASES.items()])
def test_hostile_command(case, world, run_cli):
    check_case(case, world, run_cli)
