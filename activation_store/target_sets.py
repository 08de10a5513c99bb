"""Target token sets from a file: which vocabulary strings an intervention's outputs are read at.

Two forms, so a plain list stays plain and sets stay possible:
- ``.json``: an object of named sets, ``{"yes": [" Yes", "Yes"], "no": [" No"]}``
  (a bare string is a set of one);
- any other file: one vocabulary string per line, each its own set named by it; a
  line may be a JSON string (``" Yes"``) to make leading or trailing spaces explicit.
Strings are exact vocabulary entries (as the store's ``vocab_token`` spells them).
Shared by extraction (which records every named token) and analysis (which sums sets)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ActstoreError


def read_target_sets(path: str | Path) -> dict[str, list[str]]:
    """``{set name: [vocabulary strings]}`` from a targets file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise ActstoreError(f"targets file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ActstoreError(f"{path}: not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict) or not raw:
            raise ActstoreError(f"{path}: expected an object of named sets, e.g. {{\"yes\": [\" Yes\"], \"no\": [\" No\"]}}")
        sets = {}
        for name, members in raw.items():
            members = [members] if isinstance(members, str) else members
            if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
                raise ActstoreError(f"{path}: set {name!r} must be a non-empty list of vocabulary strings")
            sets[str(name)] = list(members)
        return sets
    sets = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith('"'):
            try:
                line = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ActstoreError(f"{path}:{number}: not a valid JSON string ({exc.msg})") from None
        sets[line] = [line]
    if not sets:
        raise ActstoreError(f"{path}: no target strings")
    return sets


def all_strings(sets: dict[str, list[str]]) -> list[str]:
    """Every string named by the sets, once, in order."""
    return list(dict.fromkeys(s for members in sets.values() for s in members))
