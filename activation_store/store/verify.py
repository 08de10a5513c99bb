"""Reading every chunk of a store back, to find what went bad on disk or on the way.

Every chunk carries a CRC32C checksum (store/write.py), and every chunk is
written even when it equals the fill value, so a flipped bit, a truncated file
and a lost chunk are all found and named by their key. Chunks of ``hidden``
past a run's committed ``progress`` belong to a run that was killed or is still
running: they are "not yet written", not damage."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import zarr
from zarr.core.sync import sync

from ..errors import ActstoreError
from . import layout
from .handle import Store, quiet_zarr
from .write import PROGRESS_ATTR


@dataclass
class Problem:
    key: str
    kind: str  # "bad" (checksum mismatch, undecodable), "missing", or "metadata" (unreadable zarr.json)
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _children(group: zarr.Group, report: VerifyReport) -> Iterator[tuple[str, Any]]:
    """A group's members one by one, so one unreadable ``zarr.json`` is reported, not fatal."""
    names = sorted(sync(_list_dir(group)))
    for name in names:
        if name == "zarr.json" or name.startswith("."):  # metadata itself; lock files (store/lock.py)
            continue
        try:
            yield name, group[name]
        except KeyError:
            continue  # a directory that is no node (e.g. left empty)
        except Exception as exc:  # noqa: BLE001 - any decoding failure of the metadata is the finding
            report.problems.append(Problem(f"{_join(group.path, name)}/zarr.json", "metadata", _one_line(exc)))


async def _list_dir(group: zarr.Group) -> list[str]:
    prefix = f"{group.path}/" if group.path else ""
    return [name async for name in group.store.list_dir(prefix)]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _committed_tokens(group: zarr.Group) -> int | None:
    """Tokens committed in a run group; None when the group is not a run (a lens head)."""
    if layout.HIDDEN not in group:
        return None
    return int(group.attrs.get(PROGRESS_ATTR, {}).get("tokens_done", 0)) if "config_hash" in group.attrs else 0


def _check_array(array: zarr.Array, report: VerifyReport, tokens_done: int | None) -> None:
    report.arrays += 1
    pending = 0
    states = array.basename == layout.HIDDEN or "site" in array.attrs  # filled block by block, as committed
    chunk_tokens = array.chunks[1] if tokens_done is not None and states else None
    for coords in itertools.product(*(range(n) for n in array.cdata_shape)):
        if chunk_tokens is not None and min((coords[1] + 1) * chunk_tokens, array.shape[1]) > tokens_done:
            pending += 1
            continue
        key = _join(array.path, array.metadata.encode_chunk_key(coords))
        if not sync(array.store.exists(key)):
            report.problems.append(Problem(key, "missing"))
            continue
        try:
            array.get_block_selection(coords)
        except Exception as exc:  # noqa: BLE001 - a checksum mismatch, a truncated or undecodable chunk
            detail = "checksum mismatch" if "checksum" in str(exc).lower() else f"undecodable: {_one_line(exc)}"
            report.problems.append(Problem(key, "bad", detail))
            continue
        report.chunks_ok += 1
    if pending:
        report.pending.append(Pending(array.path, pending, tokens_done or 0, int(array.shape[1])))


def _check_run(group: zarr.Group, report: VerifyReport) -> None:
    """A run's arrays, and those of groups below it (analysis results written back)."""
    tokens_done = _committed_tokens(group)
    for _, node in _children(group, report):
        if isinstance(node, zarr.Array):
            _check_array(node, report, tokens_done)
        else:
            _check_run(node, report)


def verify(store: str | Store, model: str | None = None, dataset: str | None = None,
           storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Read back every chunk of every array (of one model's group, or one dataset's runs) and report problems."""
    store = Store.open(store, storage_options)
    url = store.url
    with quiet_zarr():
        return _verify(store.live_group(""), url, model, dataset)


def _verify(root: zarr.Group, url: str, model: str | None, dataset: str | None) -> VerifyReport:
    report = VerifyReport(url)
    models = [(name, node) for name, node in _children(root, report) if isinstance(node, zarr.Group)]
    if model is not None:
        models = [(name, node) for name, node in models if name == layout.encode_name(model)]
        if not models:
            raise ActstoreError(f"model {model!r} is not in {url}; `actstore ls {url}` lists what is")
    runs_seen = 0
    for _, group in models:
        for name, node in _children(group, report):
            if isinstance(node, zarr.Array):
                _check_array(node, report, None)  # the lens head, which every run of this model reads
            elif dataset is None or name == layout.encode_name(dataset):
                runs_seen += 1
                _check_run(node, report)
    if dataset is not None and not runs_seen:
        raise ActstoreError(f"dataset {dataset!r} is not in {url}; `actstore ls {url}` lists what is")
    return report
