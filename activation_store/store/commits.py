"""Which chunks of a run are committed: the block manifest in the run group's ``progress`` attribute.

Workers write disjoint chunk ranges of ``hidden`` in any order; a range counts
only once its writer has finished all its chunks and the campaign has recorded
it here. The record keeps the committed chunk ranges (half-open, merged) and,
for readers, ``tokens_done``: the longest committed prefix, in tokens — so a
reader of an unfinished run sees whole committed data only, whatever order the
blocks arrived in. A finished run's record is ``{"tokens_done": n, "complete":
true}``, the same as a run written in one process. A record without ranges
(written by a single in-order writer) means its prefix is committed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .handle import Store

Ranges = list[tuple[int, int]]


def n_chunks(n_tokens: int, chunk_tokens: int) -> int:
    return -(-n_tokens // chunk_tokens)


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, non-overlapping, non-adjacent half-open ranges covering the same chunks."""
    out: Ranges = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def committed(progress: dict[str, Any] | None, n_tokens: int, chunk_tokens: int) -> Ranges:
    """The committed chunk ranges a ``progress`` record describes."""
    progress = progress or {}
    total = n_chunks(n_tokens, chunk_tokens)
    if progress.get("complete"):
        return [(0, total)] if total else []
    if "chunks" in progress:
        return merge((a, b) for a, b in progress["chunks"])
    done = int(progress.get("tokens_done", 0))
    prefix = total if done >= n_tokens else done // chunk_tokens
    return [(0, prefix)] if prefix else []


def missing(ranges: Ranges, total: int) -> Ranges:
    """The chunk ranges of ``0…total`` not in ``ranges``."""
    out, at = [], 0
    for start, stop in merge(ranges):
        if start > at:
            out.append((at, start))
        at = max(at, stop)
    if at < total:
        out.append((at, total))
    return out


def record(ranges: Ranges, n_tokens: int, chunk_tokens: int) -> dict[str, Any]:
    """The ``progress`` attribute for these committed ranges: the prefix for readers, the ranges for resuming."""
    ranges = merge(ranges)
    total = n_chunks(n_tokens, chunk_tokens)
    prefix_chunks = ranges[0][1] if ranges and ranges[0][0] == 0 else 0
    if prefix_chunks >= total:
        return {"tokens_done": n_tokens, "complete": True}
    return {"tokens_done": prefix_chunks * chunk_tokens, "complete": False, "chunks": [list(r) for r in ranges]}


def tokens_in(ranges: Ranges, n_tokens: int, chunk_tokens: int) -> int:
    """How many tokens the chunk ranges hold (the last chunk may be short)."""
    return sum(min(stop * chunk_tokens, n_tokens) - start * chunk_tokens for start, stop in merge(ranges))


def live_attrs(store: "Store", attrs: dict, path: str) -> dict:
    """A run unfinished in the consolidated metadata (refreshed only at a run's start and end) gets its
    ``progress`` from its own zarr.json, which the writer commits after every block: one more read, unfinished runs only."""
    progress = attrs.get("progress")
    if not progress or progress.get("complete", True):
        return attrs
    live = dict(store.live_group(path).attrs)
    if live.get("config_hash") != attrs.get("config_hash"):  # replaced since: none of the new run is readable yet
        live = {"progress": {"tokens_done": 0, "complete": False}}
    return {**attrs, "progress": live.get("progress", progress)}
