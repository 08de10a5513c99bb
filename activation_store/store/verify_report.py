"""What ``actstore verify`` found: problems (each one key and what is wrong with it), chunks not yet written,
and the counts."""
from __future__ import annotations

from dataclasses import dataclass, field

# Problem kinds:
#   bad          a chunk whose checksum fails or that cannot be decoded
#   missing      a chunk, or a node's zarr.json, that is not there
#   metadata     a zarr.json that cannot be parsed
#   mismatch     a node whose live zarr.json and the consolidated metadata readers open disagree, or that only
#                one of them has
#   interrupted  a result replacement that was killed part way (store/replace.py); the next save completes it
KINDS = ("bad", "missing", "metadata", "mismatch", "interrupted")


@dataclass
class Problem:
    key: str
    kind: str  # one of KINDS
    detail: str = ""


@dataclass
class Pending:
    array: str
    chunks: int
    tokens_done: int
    tokens: int


@dataclass
class VerifyReport:
    url: str
    arrays: int = 0
    chunks_ok: int = 0
    problems: list[Problem] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, key: str, kind: str, detail: str = "") -> None:
        self.problems.append(Problem(key, kind, detail))


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: first line``."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
