"""Layering, checked statically: every import of every module under ``src/transferkit``.

Pure ``ast``, no subprocess: module-level imports and those inside functions and methods alike
(``import x``, ``from x import y``, relative imports resolved). ``tests/test_layering.py`` checks
what is imported at import time; this one also sees the imports a function makes when called.

* blocks never import the engine, the CLI, the recipes or Lightning;
* recipes (``strategies/``) never import the engine or the CLI;
* no module uses another transferkit module's private name (``from m import _x``, or ``m._x``);
* no import cycle between top-level packages, nor between the engine's modules.

Every failure names ``file:line`` of the import that breaks the rule.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "transferkit"

BLOCKS = ("transferkit.backbones", "transferkit.data", "transferkit.surgery", "transferkit.optim",
          "transferkit.regularizers", "transferkit.evaluation", "transferkit.transferability.scores",
          "transferkit.rundir", "transferkit.report", "transferkit.adaptation", "transferkit.tta",
          "transferkit.distill", "transferkit.selfsup", "transferkit.export", "transferkit.terms",
          "transferkit.registry")
UPPER_LAYERS = ("transferkit.engine", "transferkit.cli", "transferkit.strategies", "lightning", "pytorch_lightning")
ENGINE_AND_CLI = ("transferkit.engine", "transferkit.cli")


@dataclass(frozen=True)
class Source:
    """One module's text: ``module`` (dotted; ``pkg/__init__.py`` is ``pkg``), ``file`` (as shown)."""

    module: str
    file: str
    text: str
    package: bool = False

    @cached_property
    def tree(self) -> ast.Module:
        return ast.parse(self.text, self.file)

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()


@dataclass(frozen=True)
class Import:
    """One imported module (``name``: a name taken from it by ``from``, ``None`` for ``import``)."""

    source: str  # the importing module
    where: str  # file:line
    text: str  # the import statement as written
    target: str  # the imported module, absolute
    name: str | None = None


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@cache
def sources() -> dict[str, Source]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if package else parts)
        found[module] = Source(module, str(path.relative_to(SRC.parent)), path.read_text(), package)
    return found


def imports_in(src: Source, node: ast.Import | ast.ImportFrom) -> list[Import]:
    """What one import statement imports, relative imports resolved against ``src``."""
    where = f"{src.file}:{node.lineno}"
    text = " ".join(" ".join(src.lines[node.lineno - 1:node.end_lineno]).split())
    if isinstance(node, ast.Import):
        return [Import(src.module, where, text, a.name) for a in node.names]
    base = src.module if src.package else src.module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    base = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    found = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        found.append(Import(src.module, where, text, sub) if sub in sources()
                     else Import(src.module, where, text, base, a.name))
    return found


def imports_of(src: Source) -> list[Import]:
    """Every import of one module, wherever it stands (module level, function, method, ``if``)."""
    return [i for node in ast.walk(src.tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for i in imports_in(src, node)]


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for src in sources().values() for i in imports_of(src))


def private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def unique(lines) -> list[str]:
    return list(dict.fromkeys(lines))


def listing(found: list[str]) -> str:
    return "\n  " + "\n  ".join(unique(found))


# a/b. upper layers ----------------------------------------------------------------------
def forbidden(importers: tuple[str, ...], banned: tuple[str, ...], imports=None) -> list[str]:
    """``file:line: statement`` of each import by a module under ``importers`` of one under ``banned``."""
    return [f"{i.where}: {i.text}" for i in (all_imports() if imports is None else imports)
            if within(i.source, importers) and within(i.target, banned)]


def test_blocks_never_import_upper_layers():
    if found := forbidden(BLOCKS, UPPER_LAYERS):
        pytest.fail("blocks import the engine, the CLI, the recipes or Lightning (a block is plain PyTorch, "
                    "usable in anyone's loop):" + listing(found), pytrace=False)


def test_strategies_never_import_engine_or_cli():
    if found := forbidden(("transferkit.strategies",), ENGINE_AND_CLI):
        pytest.fail("recipes import the engine or the CLI (the engine calls the recipes, not back):"
                    + listing(found), pytrace=False)


# c. private names ----------------------------------------------------------------------
def aliases_of(src: Source, scope: ast.AST) -> dict[str, str]:
    """Local names that the imports directly in ``scope`` bind to transferkit modules."""
    bound = {}
    for node in own_nodes(scope):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a, imp in zip(node.names, imports_in(src, node)):
                if isinstance(node, ast.Import) and a.asname is None:
                    top = a.name.partition(".")[0]
                    bound[top] = top  # `import a.b` binds `a`
                elif imp.name is None:
                    bound[a.asname or a.name.rpartition(".")[2]] = imp.target
    return {k: v for k, v in bound.items() if within(v, (PKG,))}


def own_nodes(scope: ast.AST):
    """The nodes of ``scope``, not descending into nested functions (their own scopes)."""
    for child in ast.iter_child_nodes(scope):
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from own_nodes(child)


def dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute) and (head := dotted(node.value, bound)):
        return f"{head}.{node.attr}"
    return None


def private_uses(src: Source, scope: ast.AST, outer: dict[str, str]) -> list[str]:
    """``m._x`` where ``m`` is a transferkit module bound by an import in this scope or an enclosing one."""
    bound = {**outer, **aliases_of(src, scope)}
    found = []
    for node in own_nodes(scope):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found += private_uses(src, node, bound)
        elif isinstance(node, ast.Attribute) and private(node.attr):
            owner = dotted(node.value, bound)
            if owner in sources() and owner != src.module:
                found.append(f"{src.file}:{node.lineno}: {ast.unparse(node)}")
    return found


def private_names(srcs) -> list[str]:
    """Every use of another transferkit module's private name in ``srcs``: file:line and what."""
    found = [f"{i.where}: {i.text}" for src in srcs for i in imports_of(src)
             if within(i.target, (PKG,)) and private(i.name) and i.target != i.source]
    return found + [u for src in srcs for u in private_uses(src, src.tree, {})]


def test_no_private_names_across_modules():
    if found := private_names(sources().values()):
        pytest.fail("a private name (_x) is used outside its module: make it public (and move it where "
                    "it belongs if it is shared):" + listing(found), pytrace=False)


# d. cycles ------------------------------------------------------------------------------
def unit(module: str) -> str:
    """The node of the import graph: the module inside the engine, else the top-level package."""
    if within(module, ("transferkit.engine",)):
        return module
    return ".".join(module.split(".")[:2])


def import_graph(imports) -> dict[tuple[str, str], list[Import]]:
    """(importer, imported) unit -> the imports that make the edge."""
    edges = defaultdict(list)
    for i in imports:
        if within(i.target, (PKG,)) and unit(i.source) != unit(i.target):
            edges[unit(i.source), unit(i.target)].append(i)
    return edges


def strongly_connected(edges) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node."""
    succ = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(succ) | {b for bs in succ.values() for b in bs}):
        if v not in index:
            visit(v)
    return found


def cycles(imports) -> list[str]:
    """Each cycle of the import graph, with the edges inside it and the ``file:line`` imports making them."""
    edges = import_graph(imports)
    report = []
    for component in strongly_connected(edges):
        report.append("cycle among " + ", ".join(component) + ":")
        for (a, b), made_by in sorted(edges.items()):
            if a in component and b in component:
                report += [f"  {a} -> {b}", *(f"    {i.where}: {i.text}" for i in made_by)]
    return report


def test_no_import_cycles():
    if report := cycles(all_imports()):
        pytest.fail("import cycles (move the shared piece to the lower module):" + listing(report), pytrace=False)


# the checker itself, on a known case ------------------------------------------------------
def test_the_checker_sees_function_level_and_relative_imports():
    text = ("def f():\n    from ..engine import stages\n    from .dann import DANN\n"
            "class A:\n    def g(self):\n        import lightning\n")
    imports = imports_of(Source("transferkit.adaptation.cdan", "cdan.py", text))
    assert {(i.where, i.target, i.name) for i in imports} == {
        ("cdan.py:2", "transferkit.engine.stages", None), ("cdan.py:3", "transferkit.adaptation.dann", "DANN"),
        ("cdan.py:6", "lightning", None)}
    assert forbidden(BLOCKS, UPPER_LAYERS, imports) == ["cdan.py:2: from ..engine import stages",
                                                        "cdan.py:6: import lightning"]
    package = Source("transferkit.adaptation", "__init__.py", "from . import dann\nfrom .grl import GRL\n",
                     package=True)
    assert {(i.target, i.name) for i in imports_of(package)} == {("transferkit.adaptation.dann", None),
                                                                  ("transferkit.adaptation.grl", "GRL")}
    # the real tree: an import inside a function body of strategies/base.py
    assert any(i.source == "transferkit.strategies.base" and i.target == "transferkit.backbones.groups"
               for i in all_imports())


def test_the_checker_finds_cycles():
    finetune = Source("transferkit.engine.finetune", "finetune.py", "from transferkit.engine.forgetting import Drift\n")
    forgetting = Source("transferkit.engine.forgetting", "forgetting.py",
                        "import torch\ndef f():\n    from .finetune import source_model\n")
    stages = Source("transferkit.engine.stages", "stages.py", "from transferkit.engine import forgetting\n")
    assert cycles([*imports_of(finetune), *imports_of(forgetting), *imports_of(stages)]) == [
        "cycle among transferkit.engine.finetune, transferkit.engine.forgetting:",
        "  transferkit.engine.finetune -> transferkit.engine.forgetting",
        "    finetune.py:1: from transferkit.engine.forgetting import Drift",
        "  transferkit.engine.forgetting -> transferkit.engine.finetune",
        "    forgetting.py:3: from .finetune import source_model"]
    assert strongly_connected({("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): []}) == [["a", "b", "c"]]
    assert strongly_connected({("a", "b"): [], ("b", "c"): []}) == []
    assert unit("transferkit.engine.stages") == "transferkit.engine.stages"
    assert unit("transferkit.transferability.scores") == "transferkit.transferability"
    assert unit("transferkit.cli") == "transferkit.cli"


@pytest.mark.parametrize("text", [
    "from .dann import _check_rows\n",
    "from . import dann\ndef f():\n    return dann._check_rows(1)\n",
    "import transferkit.adaptation.dann as d\nclass A:\n    def f(self):\n        return d._check_rows\n",
    "def f():\n    import transferkit.adaptation.dann\n    return transferkit.adaptation.dann._check_rows\n",
])
def test_the_checker_sees_private_names(text):
    src = Source("transferkit.adaptation.cdan", "cdan.py", text)
    assert len(private_names([src])) == 1


@pytest.mark.parametrize("text", [
    "from .dann import check_rows, __doc__\n",
    "def _own():\n    pass\n_own()\n",
    "def f():\n    from . import dann\ndann = object()\ndann._x\n",  # dann bound in f only
])
def test_the_checker_allows_public_and_own_names(text):
    assert private_names([Source("transferkit.adaptation.cdan", "cdan.py", text)]) == []
