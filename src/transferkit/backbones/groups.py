"""Layer groups of any timm model, ordered stem -> blocks -> head (Q2, Q17).

fastai's splitter idea done generically: timm's ``model.group_matcher(coarse=True)``
maps every parameter name to an ordinal (stem 0, block *i* → *i*, final norm merged
into the last block), and timm's own ``group_parameters`` turns the ordinals into
consecutive groups. The classifier (``model.get_classifier()``) is then always taken
out into its own last group ``"head"``. Freezing, discriminative learning rates,
layer-wise LR decay and gradual unfreezing all speak in these groups.
"""

from __future__ import annotations

from collections import defaultdict

from timm.models._manipulate import group_parameters
from torch import nn

from transferkit.errors import ModelError
from transferkit.surgery.heads import head_parameters

NamedParams = list[tuple[str, nn.Parameter]]


def layer_groups(model: nn.Module) -> list[tuple[str, NamedParams]]:
    """``[(name, [(param_name, param), ...]), ...]`` from the stem to ``"head"``.

    Every parameter of ``model`` appears exactly once (shared tensors once, as in
    ``named_parameters()``); empty groups are dropped. A group is named after the
    largest sub-modules it holds entirely, e.g. ``conv_stem+bn1``, ``blocks.3``,
    ``blocks.6+conv_head+bn2``; the classifier group is always ``"head"``.
    """
    if not hasattr(model, "group_matcher") or not hasattr(model, "get_classifier"):
        raise ModelError(f"{type(model).__name__} has no group_matcher()/get_classifier(); use a timm model")
    named = dict(model.named_parameters())
    head_ids = {id(p) for p in head_parameters(model)}
    ordered = group_parameters(model, model.group_matcher(coarse=True))
    body = [[n for n in names if id(named[n]) not in head_ids] for _, names in sorted(ordered.items())]
    body = [names for names in body if names]
    head = [n for n in named if id(named[n]) in head_ids]
    names = _group_names(body, list(named))
    groups = [(name, [(n, named[n]) for n in members]) for name, members in zip(names, body)]
    return groups + ([("head", [(n, named[n]) for n in head])] if head else [])


def _group_names(groups: list[list[str]], all_names: list[str]) -> list[str]:
    """Name each group by the shortest module prefixes whose parameters all belong to it."""
    owner = {n: i for i, members in enumerate(groups) for n in members}
    prefix_groups: dict[str, set[int | None]] = defaultdict(set)
    for n in all_names:
        parts = n.split(".")
        for k in range(1, len(parts) + 1):
            prefix_groups[".".join(parts[:k])].add(owner.get(n))
    out = []
    for i, members in enumerate(groups):
        prefixes: list[str] = []
        for n in members:
            parts = n.split(".")
            p = next(".".join(parts[:k]) for k in range(1, len(parts) + 1)
                     if prefix_groups[".".join(parts[:k])] == {i})
            if p not in prefixes:
                prefixes.append(p)
        out.append("+".join(prefixes))
    return out


def describe_groups(model: str, lr_decay: float | None = None) -> list[dict]:
    """The layer groups of timm model ``model`` (random init, nothing downloaded), stem to head, one row each:
    ``{"group", "tensors", "params", "lr_scale"}`` — what ``transferkit groups`` shows.

    ``lr_scale`` is the group's learning-rate scale under layer-wise decay ``D = lr_decay``,
    ``D^(L-1-k)`` for the k-th of L groups (:func:`transferkit.optim.layer_lr_decay`: the head 1,
    the stem ``D^(L-1)``); None without ``lr_decay``."""
    from transferkit.backbones.load import load_backbone
    from transferkit.optim import layer_lr_decay

    groups = layer_groups(load_backbone(model, weights="none"))
    scales = [s for *_, s in layer_lr_decay(groups, lr_decay)] if lr_decay is not None else [None] * len(groups)
    return [{"group": name, "tensors": len(params), "params": sum(p.numel() for _, p in params), "lr_scale": scale}
            for (name, params), scale in zip(groups, scales)]
