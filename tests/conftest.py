import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits


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
