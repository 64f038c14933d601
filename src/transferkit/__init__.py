"""transferkit: transfer learning for computer vision.

The best model for the least data and compute, and why: freeze or fine-tune,
which backbone, which recipe. Public names are imported on first use, so that
``import transferkit`` (and the CLI's start) stays fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "load_backbone": "transferkit.backbones",
    "FinetuneConfig": "transferkit.config",
    "AdaptConfig": "transferkit.config",
    "load_source": "transferkit.data",
    "make_splits": "transferkit.data",
    "finetune": "transferkit.engine.finetune",
    "adapt": "transferkit.engine.adapt",
    "TransferkitError": "transferkit.errors",
    "predict": "transferkit.predict",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
