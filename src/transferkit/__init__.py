"""transferkit: transfer learning for computer vision.

The best model for the least data and compute, and why: freeze or fine-tune,
which backbone, which recipe. Every command is a function here, with its config::

    import transferkit as tk

    metrics = tk.finetune(tk.FinetuneConfig(data="builtin:digits", out="runs/digits"))
    model = tk.load("runs/digits")
    model.predict("digit.png")

Public names are imported on first use, so that ``import transferkit`` (and the
CLI's start) stays fast: nothing heavy (torch, timm, Lightning) is imported until
a name is used. ``dir(transferkit)`` lists them (``__all__``).
"""

import sys as _sys
from importlib import import_module as _import_module
from types import ModuleType as _ModuleType

__version__ = "0.1.0"

#: public name -> (module, its name there)
_EXPORTS = {
    # a finished run in Python
    "load": ("transferkit.api", "load"),
    "Model": ("transferkit.api", "Model"),
    # the commands, one function each
    "finetune": ("transferkit.engine.finetune", "finetune"),
    "compare": ("transferkit.engine.compare", "compare"),
    "adapt": ("transferkit.engine.adapt", "adapt"),
    "distill": ("transferkit.engine.distill", "distill"),
    "pretrain": ("transferkit.engine.pretrain", "pretrain"),
    "tta": ("transferkit.engine.tta", "tta"),
    "rank": ("transferkit.transferability.rank", "rank_candidates"),
    "export": ("transferkit.engine.export", "export_run"),
    "predict": ("transferkit.predict", "predict"),
    "corrupt": ("transferkit.engine.corrupt", "corrupt"),
    # their configs
    "FinetuneConfig": ("transferkit.config", "FinetuneConfig"),
    "AdaptConfig": ("transferkit.config", "AdaptConfig"),
    "DistillConfig": ("transferkit.config", "DistillConfig"),
    "PretrainConfig": ("transferkit.config", "PretrainConfig"),
    "TTAConfig": ("transferkit.config", "TTAConfig"),
    # building blocks
    "load_backbone": ("transferkit.backbones", "load_backbone"),
    "load_source": ("transferkit.data", "load_source"),
    "make_splits": ("transferkit.data", "make_splits"),
    "TransferkitError": ("transferkit.errors", "TransferkitError"),
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(_import_module(module), attr)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (what tab completion offers)."""
    return sorted(__all__)


class _Package(_ModuleType):
    """The package's module type. Importing a subpackage binds it as an attribute of its parent; four
    are named like functions of the API (``predict``, ``tta``, ``distill``, ``export``), and the function
    wins: ``transferkit.tta`` is always the ``tta`` command (the subpackage is ``sys.modules["transferkit.tta"]``,
    what ``from transferkit.tta import ...`` reads)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, _ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
