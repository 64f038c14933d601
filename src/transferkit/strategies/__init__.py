"""Training recipes, one module each, registered on import (the contract: :mod:`.base`).

``REGISTRY`` (:data:`transferkit.registry.STRATEGIES`) maps each ``--strategy`` name to its
:class:`~.base.Recipe`; it drives the
CLI's choices, ``compare``'s line-up, the option checks and the README table.
"""

from __future__ import annotations

import importlib
import pkgutil

from transferkit.strategies.base import REGISTRY, Defaults, Plan, Recipe, get_recipe, register

#: modules of the package that are not recipes (``callbacks`` imports Lightning: only the hooks import it)
NOT_RECIPES = ("base", "callbacks")

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in NOT_RECIPES:
        importlib.import_module(f"{__name__}.{_info.name}")


def strategy_names() -> list[str]:
    """Every registered strategy name, ``auto`` first (run-time registrations included)."""
    return sorted(REGISTRY, key=lambda n: (n != "auto", n))


def markdown_table() -> str:
    """The README's strategy table, generated from the registry (a test keeps the README in sync)."""
    rows = ["| strategy | what it does | trains | defaults |", "|---|---|---|---|"]
    for name in strategy_names():
        r = REGISTRY[name]
        d = r.defaults
        defaults = ("from the data" if name == "auto" else
                    f"{d.image_size} px, " + ("fitted to convergence" if r.cached_features else
                                              f"{d.epochs} epochs, LR {d.lr:g}"
                                              + (f", bottom {d.freeze_groups} groups frozen" if d.freeze_groups else "")))
        rows.append(f"| `{name}` | {r.summary} | {r.trains} | {defaults} |")
    return "\n".join(rows)


def make_plan(name: str, model, freeze_bn: bool = False, **options) -> Plan:
    """Set trainability on ``model`` for recipe ``name`` and return its :class:`Plan`, for use in
    your own loop. ``options``: ``backbone_lr_mult`` (0.1), ``lr_decay`` (None), as in ``finetune``."""
    from types import SimpleNamespace

    settings = SimpleNamespace(**{"backbone_lr_mult": 0.1, "lr_decay": None, **options})
    return get_recipe(name).plan(model, settings, freeze_bn)

__all__ = ["REGISTRY", "strategy_names", "Defaults", "Plan", "Recipe", "get_recipe", "make_plan", "markdown_table", "register"]
