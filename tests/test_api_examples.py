"""The Python API's docstring examples run, as doctests, in the order a user would type them (issue 26):
``finetune``'s example writes ``runs/digits``; the examples of ``load``, ``Model``, ``predict``, ``export``,
``tta``, ``corrupt`` and ``distill`` use it; ``compare``, ``adapt``, ``pretrain`` and ``rank`` stand alone.
One working folder (a temporary one) holds what they write and the images they read: ``digit.png`` and
``more_digits/`` (four digit images in class folders), written here first.

Every command of ``transferkit.__all__`` and ``load``/``Model`` (with its methods) must have an example
that ran, and none may be skipped: an example cannot quietly disappear or stop running.
"""

import doctest
import shutil
from pathlib import Path

import pytest

import transferkit
from conftest import write_digit_folder

#: the examples, in dependency order (the public names of transferkit)
ORDER = ["finetune", "load", "Model", "predict", "export", "tta", "corrupt", "distill",
         "compare", "adapt", "pretrain", "rank"]
#: public names that are neither commands nor load/Model: the configs document themselves (their fields),
#: the building blocks are covered by their own tests
NOT_COMMANDS = {"load_backbone", "load_source", "make_splits", "__version__"}
#: the methods of Model whose examples must have run
MODEL_METHODS = ["Model.predict", "Model.logits", "Model.export"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def commands() -> list[str]:
    """The public names that need an example: every function of ``__all__`` but the building blocks, and
    ``Model`` (the other classes, CapWords, are configs and errors); read from the names, importing nothing."""
    return [name for name in transferkit.__all__ if name not in NOT_COMMANDS
            and (name == "Model" or not name[0].isupper())]


def examples_of(name: str) -> list[doctest.DocTest]:
    """The doctests of the public ``name`` (a class: its own and its methods'), named ``tk.<name>...``."""
    obj = getattr(transferkit, name)
    tests = doctest.DocTestFinder(recurse=True).find(obj, name)
    return [t for t in tests if t.examples]


def write_images(folder: Path) -> None:
    """``digit.png`` (a seven) and ``more_digits/`` (two threes and two sevens in class folders)."""
    write_digit_folder(folder / "more_digits", per_class=2, classes=(3, 7))
    shutil.copy(sorted((folder / "more_digits" / "7").glob("*.png"))[0], folder / "digit.png")


def test_order_names_every_command():
    """Cheap: a new command in ``__all__`` must be added to ORDER (with an example); ORDER names no stale one."""
    assert sorted(ORDER) == sorted(commands())


@pytest.mark.slow
@pytest.mark.needs_opencv  # the tta and corrupt examples corrupt images
def test_every_api_example_runs(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))  # features of finetune and rank
    write_images(tmp_path)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    globs: dict = {}  # one namespace, as in one notebook
    ran: dict[str, int] = {}
    for name in ORDER:
        for test in examples_of(name):
            skipped = [ex.source.strip() for ex in test.examples if ex.options.get(doctest.SKIP)]
            assert not skipped, f"{test.name}: an example is skipped: {skipped}"
            test.globs = globs
            result = runner.run(test, clear_globs=False)
            assert result.failed == 0, f"{test.name}'s example failed: its report is in the captured stdout"
            ran[test.name] = result.attempted
    missing = [name for name in [*commands(), *MODEL_METHODS] if not ran.get(name)]
    assert not missing, f"no example ran for {missing}"
    assert Path("runs/digits/model.onnx").is_file() and Path("corrupted/fog-3/labels.csv").is_file()
