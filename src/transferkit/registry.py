"""One registry pattern for every method family (timm's ``register_model``/``create_model``, for methods).

A family (strategies, regularisers, adaptation methods, test-time adaptation methods, distillation
losses, self-supervised methods) is a :class:`Registry`; each method is one entry in one module of
the family's package, registered when the package is imported. An entry declares:

* ``name`` (the command-line value) and ``summary`` (one line: ``--help``, README tables, reports);
* ``defaults`` — its measured defaults (benchmarks/RESULTS.md says where each comes from);
* ``options`` — its own options, a small pydantic model; the commands get one ``--<name>-<option>``
  flag per field (``--surgical-block``) and the run's config keeps them under ``options: {name: {...}}``;
* ``check(ctx)`` — refuse, in one line, what cannot work, before any file is written;
* ``build(ctx)`` — the block (a loss term, an adapter, a method module); one signature per family,
  documented by the family's package.

``Registry.names()`` imports the family's package on first use (its modules register themselves),
then entries of third-party packages from the entry-point group ``transferkit.<family>`` (each entry
point names a module to import, or an entry object). An entry registered at run time from Python is
accepted by the configs and the commands alike: nothing is frozen at import.

This module imports neither torch nor the engine.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from transferkit.errors import ConfigError


class Options(BaseModel):
    """Base of an entry's own options: strict (an unknown option is an error), no inf/NaN."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Method:
    """A registered method. ``build``/``check`` take one context object (the family documents its fields)."""

    name: str
    summary: str
    build: Callable[[Any], Any] | None = None
    check: Callable[[Any], None] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: type[Options] | None = None
    #: part of the command's default line-up (``compare``, ``adapt --method all``, leaderboards)
    in_lineup: bool = True
    #: anything else the family reads (e.g. ``uses_target_labels`` for adaptation methods)
    traits: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, given: Mapping[str, Any] | None = None) -> Options | None:
        """This entry's options: ``given`` validated over the defaults (one ConfigError line if invalid)."""
        return resolve_options(self, given)


def resolve_options(entry: Any, given: Mapping[str, Any] | None) -> Options | None:
    """``entry.options`` validated from ``given`` (``None``: all defaults); one ConfigError line if invalid."""
    model = getattr(entry, "options", None)
    if model is None:
        if given:
            raise ConfigError(f"{entry.name} takes no options, got {', '.join(given)}")
        return None
    try:
        return model(**(given or {}))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        flag = f"--{entry.name}-{where}".replace("_", "-")
        raise ConfigError(f"invalid option {flag}: {err['msg']}") from None


def options_of(entry: Any, cfg: Any) -> Options | None:
    """``entry``'s options as a run's config gives them (``cfg.options[entry.name]``), validated over its defaults."""
    return resolve_options(entry, (getattr(cfg, "options", None) or {}).get(entry.name))


class Registry(Mapping):
    """The entries of one family: a read-only mapping name -> entry, in registration order (importing the
    family on first use). ``registry[name]`` of an unknown name is one ConfigError line naming the choices."""

    def __init__(self, family: str, package: str, flag: str, what: str):
        self.family, self.package, self.flag, self.what = family, package, flag, what
        self._entries: dict[str, Any] = {}
        self._loaded = False

    # registration ----------------------------------------------------------------------
    def register(self, entry: Any, *, replace: bool = False) -> Any:
        """Add ``entry`` (anything with ``name`` and ``summary``); a second entry of the same name is an
        error unless ``replace``. Returns ``entry`` (``METHOD = REGISTRY.register(Method(...))``)."""
        if not getattr(entry, "name", None) or not getattr(entry, "summary", None):
            raise ValueError(f"a {self.what} needs a name and a one-line summary")
        if entry.name in self._entries and not replace:
            raise ValueError(f"{self.what} '{entry.name}' registered twice")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the package's own imports may ask for names
        importlib.import_module(self.package)
        for point in importlib.metadata.entry_points(group=f"transferkit.{self.family}"):
            loaded = point.load()
            if hasattr(loaded, "name") and loaded.name not in self._entries:
                self.register(loaded)

    # lookup ----------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> Any:
        """The entry ``name``, or one ConfigError line naming the choices."""
        if name not in self.names():
            raise ConfigError(f"unknown {self.what} '{name}'; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._entries[name] if name in self.names() else default

    def validate(self, value: str) -> str:
        """``value`` if registered, else a ValueError naming the choices (for pydantic validators)."""
        if value not in self.names():
            raise ValueError(f"unknown {self.what} '{value}'; choose one of: {', '.join(self.names())}")
        return value

    def lineup(self) -> list[str]:
        """The entries in the command's default line-up."""
        return [e.name for e in self.values() if getattr(e, "in_lineup", getattr(e, "in_compare", True))]

    def with_options(self) -> list[Any]:
        """The entries that declare options (the commands generate a flag for each field)."""
        return [e for e in self.values() if getattr(e, "options", None) is not None]

    def help(self) -> str:
        """``name: summary; ...`` for ``--help``."""
        return "; ".join(f"{e.name}: {e.summary}" for e in self.values())

    def markdown_table(self, header: str | None = None) -> str:
        """A README table of the family: name, summary, its options and their defaults."""
        rows = [f"| {header or self.flag} | what it does | measured defaults | options (default) |", "|---|---|---|---|"]
        for e in self.values():
            defaults = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in getattr(e, "defaults", {}).items())
            rows.append(f"| `{e.name}` | {e.summary} | {defaults or '-'} | {options_text(e) or '-'} |")
        return "\n".join(rows)


def options_text(entry: Any) -> str:
    """``--name-option (default)`` for each of ``entry``'s options."""
    model = getattr(entry, "options", None)
    if model is None:
        return ""
    return ", ".join(f"`--{entry.name}-{k}`".replace("_", "-") + f" ({f.default})"
                     for k, f in model.model_fields.items())


def check_options(values: Mapping[str, Any], registries: list[Registry], chosen: list[str]) -> dict:
    """A config's ``options`` mapping ``{entry name: {option: value}}`` checked: every key a registered
    entry of ``registries`` that the run uses (``chosen``), every value valid for it. Returns the
    validated mapping (defaults filled in)."""
    out = {}
    for name, given in (values or {}).items():
        entry = next((r[name] for r in registries if name in r), None)
        if entry is None:
            raise ConfigError(f"options for '{name}', which is not a method of this command")
        if name not in chosen:
            flags = ", ".join(f"--{name}-{k}".replace("_", "-") for k in (given or {}))
            raise ConfigError(f"{flags} configure(s) {name}, which this run does not use")
        out[name] = resolve_options(entry, given).model_dump()
    return out


__all__ = ["ADAPTATION", "DISTILL", "FAMILIES", "Method", "Options", "REGULARIZERS", "Registry", "SELFSUP", "STRATEGIES",
           "TTA", "check_options", "import_submodules", "options_of", "options_text", "resolve_options"]


def import_submodules(package: str, path) -> None:
    """Import every module of ``package`` (its ``__path__``): each registers its entries, so a new
    method is one new module."""
    import pkgutil

    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


# the families ------------------------------------------------------------------------------
STRATEGIES = Registry("strategies", "transferkit.strategies", "--strategy", "strategy")
REGULARIZERS = Registry("regularizers", "transferkit.regularizers", "--reg", "regulariser")
ADAPTATION = Registry("adaptation", "transferkit.adaptation", "--method", "method")
TTA = Registry("tta", "transferkit.tta", "--method", "method")
DISTILL = Registry("distill", "transferkit.distill", "--loss", "loss")
SELFSUP = Registry("selfsup", "transferkit.selfsup", "--method", "method")
FAMILIES = {r.family: r for r in (STRATEGIES, REGULARIZERS, ADAPTATION, TTA, DISTILL, SELFSUP)}


def families_markdown() -> str:
    """The README's tables of every family but the strategies (which have their own,
    :func:`transferkit.strategies.markdown_table`), generated from the registries (a test keeps them in sync)."""
    titles = ((REGULARIZERS, "Regularisers (`finetune --reg NAME`, `compare --strategies X+NAME`)", "--reg"),
              (ADAPTATION, "Domain adaptation (`adapt --method NAME`)", "--method"),
              (TTA, "Test-time adaptation (`tta RUN --method NAME,...`)", "--method"),
              (DISTILL, "Distillation losses (`distill --loss NAME`)", "--loss"),
              (SELFSUP, "Self-supervised pretraining (`pretrain --method NAME`)", "--method"))
    return "\n\n".join(f"**{title}**\n\n{registry.markdown_table(flag)}" for registry, title, flag in titles)
