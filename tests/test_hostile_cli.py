"""Hostile input and faults for ``finetune``, ``compare`` and ``rank`` through the real CLI.

Each case: the command exits with the expected code and a single line on stderr naming
the problem, no run directory is left behind, and every file that existed before is
byte-identical afterwards (the user's data, a folder that is not a run, a finished run).
(``predict`` and the data sources: tests/test_hostile_data.py.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import write_digit_folder

TINY = ["--per-class", "4", "--epochs", "1", "--image-size", "32", "--no-baseline", "--no-progress"]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A user's folder: images, a notes folder that is not a run, a plain file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / ".cache"))
    write_digit_folder(tmp_path / "images", per_class=6)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("my notes\n")
    (tmp_path / "afile").write_text("not a folder\n")
    return tmp_path


CASES = {
    # finetune: the run directory
    "overwrite-refuses-folder-without-marker": (["finetune", "--data", "images", "--out", "notes", "--overwrite"],
                                                2, "not a transferkit run"),
    "out-is-the-data-folder": (["finetune", "--data", "images", "--out", "images", "--overwrite"], 2, "input"),
    "out-inside-the-data-folder": (["finetune", "--data", "images", "--out", "images/0/run"], 2, "input"),
    "out-is-a-file": (["finetune", "--data", "images", "--out", "afile"], 2, "afile"),
    "out-under-a-file": (["finetune", "--data", "images", "--out", "afile/run"], 2, "afile"),
    "existing-non-run-folder": (["finetune", "--data", "images", "--out", "notes"], 2, "notes"),
    "resume-without-run": (["finetune", "--out", "nothing-here", "--resume"], 2, "config.yaml"),
    "resume-without-out": (["finetune", "--resume"], 2, "--out"),
    # finetune: options refused before anything is written
    "lr-inf": (["finetune", "--data", "images", "--lr", "inf", "--out", "r"], 2, "lr"),
    "lr-nan": (["finetune", "--data", "images", "--lr", "nan", "--out", "r"], 2, "lr"),
    "lr-1e38": (["finetune", "--data", "images", "--lr", "1e38", "--out", "r"], 2, "lr"),
    "lr-negative": (["finetune", "--data", "images", "--lr", "-1", "--out", "r"], 2, "lr"),
    "seed-negative": (["finetune", "--data", "images", "--seed", "-1", "--out", "r"], 2, "seed"),
    "seed-too-large": (["finetune", "--data", "images", "--seed", str(2**32), "--out", "r"], 2, "seed"),
    "accelerator-bogus": (["finetune", "--data", "images", "--strategy", "full", "--accelerator", "bogus",
                           "--out", "r"], 2, "accelerator"),
    "precision-bogus": (["finetune", "--data", "images", "--strategy", "full", "--precision", "bogus",
                         "--out", "r"], 2, "precision"),
    "dist-bogus": (["finetune", "--data", "images", "--strategy", "full", "--dist", "bogus", "--out", "r"],
                   2, "dist"),
    "devices-zero": (["finetune", "--data", "images", "--strategy", "full", "--devices", "0", "--out", "r"],
                     2, "devices"),
    "lora-targets-bogus": (["finetune", "--data", "images", "--strategy", "lora", "--lora-targets", "bogus",
                            "--out", "r"], 2, "bogus"),
    "unknown-strategy": (["finetune", "--data", "images", "--strategy", "magic", "--out", "r"], 2, "magic"),
    "unknown-model": (["finetune", "--data", "images", "--model", "no_such_net", "--out", "r"], 2, "no_such_net"),
    "weights-file-missing": (["finetune", "--data", "images", "--weights", "nope.safetensors", "--out", "r"],
                             2, "nope"),
    "data-missing": (["finetune", "--data", "no/such/folder", "--out", "r"], 2, "no/such/folder"),
    "no-data": (["finetune", "--out", "r"], 2, "--data"),
    "lwf-with-freeze": (["finetune", "--data", "images", "--strategy", "freeze", "--reg", "lwf", "--out", "r"],
                        2, "lwf"),
    "wise-with-linear-probe": (["finetune", "--data", "images", "--strategy", "linear-probe", "--wise-alpha",
                                "0.5", "--out", "r"], 2, "wise"),
    "wise-curve-not-numbers": (["finetune", "--data", "images", "--wise-curve", "a,b", "--out", "r"], 2, "wise"),
    "source-labels-without-source-data": (["finetune", "--data", "images", "--source-labels", "--out", "r"],
                                          2, "source-data"),
    "lwf-with-random-weights": (["finetune", "--data", "images", "--strategy", "full", "--reg", "lwf",
                                 "--weights", "none", "--out", "r"], 2, "weights none"),
    "gradual-on-two-devices": (["finetune", "--data", "images", "--strategy", "gradual", "--accelerator", "cpu",
                                "--devices", "2", "--dist", "ddp", "--out", "r"], 2, "one device"),
    "per-class-zero": (["finetune", "--data", "images", "--per-class", "0", "--out", "r"], 2, "per_class"),
    "config-file-missing": (["finetune", "--config", "missing.yaml", "--out", "r"], 2, "missing.yaml"),
    "config-unknown-key": (["finetune", "--config", "bad.yaml", "--out", "r"], 2, "bogus_key"),
    # compare
    "compare-out-is-a-file": (["compare", "--data", "images", "--out", "afile", "--strategies", "linear-probe"],
                              2, "afile"),
    "compare-out-not-a-run": (["compare", "--data", "images", "--out", "notes", "--strategies", "linear-probe",
                               "--overwrite"], 2, "not a transferkit run"),
    "compare-unknown-strategy": (["compare", "--data", "images", "--out", "c", "--strategies", "magic"], 2, "magic"),
    "compare-strategy-twice": (["compare", "--data", "images", "--out", "c", "--strategies", "full,full"],
                               2, "twice"),
    "compare-zero-seeds": (["compare", "--data", "images", "--out", "c", "--seeds", "0"], 2, "seeds"),
    "compare-out-is-data": (["compare", "--data", "images", "--out", "images", "--strategies", "linear-probe"],
                            2, "input"),
    # rank
    "rank-out-is-a-file": (["rank", "--data", "images", "--out", "afile"], 2, "afile"),
    "rank-unknown-model": (["rank", "--data", "images", "--models", "no_such_net"], 2, "no_such_net"),
    "rank-no-data": (["rank"], 2, "--data"),
}


@pytest.mark.parametrize("args,code,words", list(CASES.values()), ids=list(CASES))
def test_hostile_cli(args, code, words, world, run_cli):
    (world / "bad.yaml").write_text("data: images\nbogus_key: 1\n")
    before = _snapshot(world)
    dirs_before = sorted(p for p in world.rglob("*") if p.is_dir())
    small = [] if args[0] != "finetune" or "--resume" in args else TINY[:2]  # given first: a case may override it
    rc, _, err = run_cli(args[0], *small, *args[1:])
    lines = err.strip().splitlines()
    assert rc == code, err
    assert len(lines) == 1, err
    assert words.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert _snapshot(world) == before  # nothing changed, nothing written
    assert sorted(p for p in world.rglob("*") if p.is_dir()) == dirs_before  # no stub folder


@pytest.mark.slow
def test_overwrite_of_a_run_keeps_the_users_files(world, run_cli):
    """--overwrite on a real run removes only what transferkit wrote there."""
    rc, _, err = run_cli("finetune", "--data", "images", "--strategy", "linear-probe", "--out", "run", *TINY)
    assert rc == 0, err
    (world / "run" / "my-notes.txt").write_text("keep me\n")
    rc, _, err = run_cli("finetune", "--data", "images", "--strategy", "linear-probe", "--out", "run",
                         "--overwrite", *TINY)
    assert rc == 0, err
    assert (world / "run" / "my-notes.txt").read_text() == "keep me\n"
    assert (world / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_resume_refuses_changed_flags_and_applies_safe_ones(world, run_cli):
    rc, _, err = run_cli("finetune", "--data", "images", "--strategy", "freeze", "--out", "run", *TINY)
    assert rc == 0, err
    before = _snapshot(world)
    rc, _, err = run_cli("finetune", "--out", "run", "--resume", "--lr", "0.5", "--seed", "3")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "--lr 0.5" in err and "--seed 3" in err
    assert _snapshot(world) == before
    rc, out, err = run_cli("finetune", "--out", "run", "--resume", "--epochs", "2", "--no-progress")
    assert rc == 0, err
    assert "--epochs 2 applied on resume (was 1)" in out


@pytest.mark.slow
def test_resume_refuses_changed_classes(world, run_cli):
    rc, _, err = run_cli("finetune", "--data", "images", "--strategy", "freeze", "--out", "run", *TINY)
    assert rc == 0, err
    (world / "run" / "metrics.json").unlink()  # as if stopped before the end: resumable
    os.rename(world / "images" / "2", world / "images" / "7")
    rc, _, err = run_cli("finetune", "--out", "run", "--resume")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "classes" in err and "added: ['7']" in err
