import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits


def _fashion_mnist_missing() -> str | None:
    from transferkit.data import sources

    folder = Path(os.environ.get("TRANSFERKIT_FASHION_MNIST_DIR") or sources.FASHION_MNIST_DIR)
    if not any(folder.glob("*-images-idx3-ubyte*")):
        return f"no Fashion-MNIST IDX files in {folder}: apt-get install dataset-fashion-mnist"
    return None


def _opencv_missing() -> str | None:
    try:
        import cv2  # noqa: F401  (imagecorruptions' dependency; loads libGL and libglib)
    except ImportError as e:
        return f"OpenCV cannot load ({e}): apt-get install libgl1 libglib2.0-0"
    return None


if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers share the machine's cores (pyproject's addopts: -n 2): one torch thread each, so the
    # workers do not wait on each other's thread pools
    import torch

    torch.set_num_threads(1)

NEEDS = {"needs_fashion_mnist": _fashion_mnist_missing, "needs_opencv": _opencv_missing}


def pytest_runtest_setup(item):
    """Tests marked ``needs_fashion_mnist`` / ``needs_opencv`` skip, naming the Debian package, on a machine
    without it (the README's test command on a bare machine; `.ci/run` installs both)."""
    for marker, missing in NEEDS.items():
        if item.get_closest_marker(marker) and (why := missing()):
            pytest.skip(why)


@pytest.fixture
def small_fs_of(tmp_path):
    """``small_fs_of("32k")``: a folder on a tmpfs of that size, for a real ENOSPC from the kernel
    (skips without the right to mount); unmounted after the test."""
    import subprocess

    mounted = []

    def make(size: str) -> Path:
        d = tmp_path / f"small-{size}"
        d.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                          capture_output=True).returncode:
            pytest.skip("no permission to mount a small tmpfs")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], check=True)


def write_digit_folder(root, per_class=6, classes=(0, 1, 2)):
    """An ImageFolder of real digits (8x8 upscaled to 32x32 PNGs)."""
    d = load_digits()
    for c in classes:
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(d.target == c)[:per_class]
        for i in idx:
            img = (d.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(img).resize((32, 32)).save(root / str(c) / f"{i}.png")
    return root


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the real CLI entry point in-process: returns (exit code, stdout, stderr)."""
    from transferkit.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["transferkit", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


TINY_RUN_CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory):
    """A finished run directory as finetune leaves it for predict (model.json + model.safetensors):
    an untrained efficientnet_lite0 (weights="none", seed 0) for 3 classes at 32x32 input."""
    import torch

    from transferkit.backbones import describe_model, load_backbone
    from transferkit.data import data_config_for
    from transferkit.rundir import RunDir, save_weights, write_json

    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", weights="none", num_classes=len(TINY_RUN_CLASSES))
    run = RunDir(tmp_path_factory.mktemp("tiny") / "run")
    run.path.mkdir()
    save_weights(run.weights, model)
    write_json(run.model_json, {**describe_model(model), "norm": "batchnorm", "classes": TINY_RUN_CLASSES,
                                "data_config": data_config_for(model, 32), "strategy": "full",
                                "transferkit_format": 1})
    return run.path


@pytest.fixture
def tiny_run(tiny_run_template, tmp_path):
    """A private copy of ``tiny_run_template`` (tests may damage it)."""
    import shutil

    return shutil.copytree(tiny_run_template, tmp_path / "run")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one CPU thread for the module: tiny inputs need no thread pool, and on a
    machine shared with other jobs two threads waiting on each other made a 32x32 forward
    pass take 2 s instead of 20 ms (measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Interrupted(Exception):
    """Stands in for a crash or kill (Lightning turns KeyboardInterrupt into a graceful exit)."""


def interrupt_at_epoch_1(monkeypatch, module_cls=None):
    """Make training of ``module_cls`` (default :class:`TransferModule`) raise :class:`Interrupted` when
    epoch 1 starts (after epoch 0's checkpoint); returns the function that puts training back as it was
    (call it before resuming)."""
    from transferkit.engine.callbacks import AtomicCheckpoint
    from transferkit.engine.module import TransferModule

    module_cls = module_cls or TransferModule
    original = module_cls.on_train_epoch_start

    def stop(self):
        main_run = any(isinstance(c, AtomicCheckpoint) for c in self.trainer.callbacks)  # not LP-FT's probe
        if main_run and self.current_epoch == 1:
            raise Interrupted("stopped at epoch 1")
        original(self)

    monkeypatch.setattr(module_cls, "on_train_epoch_start", stop)
    return lambda: monkeypatch.setattr(module_cls, "on_train_epoch_start", original)
