"""The package's shape, read from its source (AST only: nothing is imported, no model is loaded).

* No module over ``MAX_MODULE_LINES`` lines.
* No function over ``MAX_FUNCTION_LINES`` lines (its ``def`` to its last line, docstring and nested functions
  included) or with more than ``MAX_PARAMETERS`` named parameters (``self``/``cls`` not counted; ``*args`` and
  ``**kwargs`` not counted). Long lists of settings travel as option records (a dataclass handed in as one
  parameter); a click command takes its options as ``OptionGroup``s (``cli/options.py``) and pops each group's
  record from ``**values``, as ``cli/analyze.py`` does, rather than one parameter per option. A public function
  that took the settings one by one takes the record and, so old calls keep working, its fields as
  ``**keywords`` (``copy_store(..., jobs=4)``, ``logit_lens(ds, lens, example=0)``).
* Imports run down the layers, never up or sideways (see ``BELOW``): store, extract, analyze and torch never
  import plot, workflows or the CLI, and extract, analyze and torch do not import each other;
  the readers (store, analyze, plot) never import torch or transformers when imported.

Every import counts, at module level or inside a function, ``TYPE_CHECKING`` or not."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "activation_store"
ALIAS = PACKAGE.parent / "actstore"

MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8

# What each part of the package may import beside itself, lowest first: the layers, as a graph. "helpers"
# are the root-level modules (errors, pooling, kernels, positions, version, checksums, ...). extract (runs
# models and writes runs), analyze (reads runs, never a model) and torch (the training loader) sit on the
# store and never import each other; plot draws xarray objects and needs nothing of ours but helpers, and only
# workflows and the CLI draw; workflows compose analyses, extraction and plots; cli is the shell's face.
BELOW: dict[str, set[str]] = {
    "helpers": set(),
    "store": {"helpers"},
    "plot": {"helpers"},
    "extract": {"helpers", "store"},
    "analyze": {"helpers", "store"},
    "torch": {"helpers", "store"},
    "workflows": {"helpers", "store", "plot", "extract", "analyze", "torch"},
    "cli": {"helpers", "store", "plot", "extract", "analyze", "torch", "workflows"},
}
# The public face may import anything: the package root (its re-exports) and ``python -m activation_store``.
PUBLIC = {"activation_store", "activation_store.__main__"}
# Packages that only read a store: importing them never pulls in torch or transformers.
READERS = {"helpers", "store", "analyze", "plot"}
HEAVY = ("torch", "transformers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted(ALIAS.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def part(module: str) -> str:
    """The tier name of one of our modules: its top-level subpackage, or "helpers" for a root-level module."""
    if module in PUBLIC:
        return "public"
    top = module.split(".")[1]
    return top if (PACKAGE / top / "__init__.py").exists() else "helpers"


def imported(module: str, path: Path) -> set[str]:
    """Our modules that ``module`` imports (``from . import x`` names the submodule ``x``, not the package)."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "activation_store"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "activation_store":
                continue
            subs = {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
            if len(subs) < len(node.names):      # some names are attributes of ``source`` itself
                subs.add(source)
            found |= subs
    return found


def _import_problems(module: str, path: Path) -> list[str]:
    mine = part(module)
    if mine == "public":
        return []
    problems = []
    for target in sorted(imported(module, path)):
        theirs = part(target)
        if theirs == "public":
            problems.append(f"imports {target} (the public face) from below it")
        elif theirs != mine and theirs not in BELOW[mine]:
            how = "sits below" if mine in BELOW[theirs] else "is no layer above"
            problems.append(f"imports {target}: {mine} {how} {theirs}")
    return problems


def _top_level_imports(tree: ast.Module) -> set[str]:
    """Module names imported when the module is (outside functions and ``if TYPE_CHECKING:``)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.ClassDef, ast.With)):
                visit(node.body)

    visit(tree.body)
    return names


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    if named and named[0] in ("self", "cls"):
        named = named[1:]
    return len(named)


def _function_problems(path: Path) -> list[str]:
    problems = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                problems.append(f"{node.name} (line {node.lineno}) is {lines} lines long")
            count = parameter_count(node)
            if count > MAX_PARAMETERS:
                problems.append(f"{node.name} (line {node.lineno}) takes {count} parameters")
    return problems


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_module_is_short(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_rel(path)} is {lines} lines: split it by job"


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_functions_are_short_with_few_parameters(path: Path) -> None:
    problems = _function_problems(path)
    assert not problems, f"{_rel(path)}: " + "; ".join(problems)


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_imports_run_down_the_layers(module: str) -> None:
    problems = _import_problems(module, MODULES[module])
    assert not problems, f"{module}: " + "; ".join(problems)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part(m) in READERS), ids=str)
def test_readers_never_import_torch(module: str) -> None:
    heavy = {n for n in _top_level_imports(_tree(MODULES[module])) if n.split(".")[0] in HEAVY}
    assert not heavy, f"{module} imports {sorted(heavy)} when imported: readers never pay for torch"


def test_every_part_has_a_layer() -> None:
    parts = {part(m) for m in MODULES} - {"public"}
    assert parts <= set(BELOW), f"new parts with no layer: {sorted(parts - set(BELOW))}"


def test_the_checks_see_what_they_should(tmp_path: Path) -> None:
    """The checks themselves: relative imports resolve, and the known arrows are seen."""
    assert "activation_store.pooling" in imported("activation_store.store.views", MODULES["activation_store.store.views"])
    assert "activation_store" not in imported("activation_store.store.views", MODULES["activation_store.store.views"])
    assert any(part(t) == "store" for m in MODULES if part(m) == "analyze" for t in imported(m, MODULES[m]))
    upward = tmp_path / "fake.py"
    upward.write_text("def f():\n    from ..workflows import runner\n")
    assert _import_problems("activation_store.store.fake", upward)   # a lazy import from store up to workflows
    assert _import_problems("activation_store.analyze.fake", upward)
    sideways = tmp_path / "sideways.py"
    sideways.write_text("from ..extract import models\nfrom ..plot import figure\n")
    assert len(_import_problems("activation_store.analyze.fake", sideways)) == 2
    assert _import_problems("activation_store.workflows.fake", sideways) == []
    assert _import_problems("activation_store.store.fake", PACKAGE / "store" / "__init__.py") == []
    tree = ast.parse("def f(self, a, b, *args, c, **kw): pass")
    assert parameter_count(tree.body[0]) == 3
