"""Answers before work: a finished rerun, a run made with another configuration, runs another process writes.

Planning a campaign imports transformers, reads each tokenizer and tokenizes every run (seconds; a minute on
a busy machine), yet none of that is needed to see that every run is already complete in the store, that one
was made with another configuration, or that other writers hold them all. ``answer_early`` settles those from
the store and what costs no model, before the plan: each run's configuration is computed as the plan computes
it (``planning.run_config``), with the model's checksum read from its files (``model_names.model_checksum``:
the GGUF's or the weights' SHA-256, no conversion), its layer count from the store's model group when that
group holds the same checksum (the same weights have the same layers), and the chunk length and ``auto``
batch size the stored run recorded (what a resume reuses). What it cannot settle exactly (a run to write or
resume, ``--overwrite``, a cluster, image or audio variants, a model group of another checksum, an older run without a recorded chunk
length) it leaves to the plan, which answers as it always did; a conflict it finds is the same refusal, with
the same message, the plan would have given."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from ..errors import ActstoreError
from ..store import commits, layout
from ..store.handle import Store
from ..store.lock import RunLock
from ..store.views import finish_run
from ..store.write import PROGRESS_ATTR, consolidate_if_stale, run_attrs
from .datasets import Dataset
from .datasets.media import media_variants
from .model_names import model_checksum, store_name
from .planning import resumed_chunk, run_config
from .results import CampaignResult, ExtractResult
from .spec import RunSpec, stored_config_matches


class Lockable(Protocol):
    """A run to lock: its spec (where its store is) and its path there (a ``RunPlan``, or an ``_Early``)."""

    spec: RunSpec
    path: str


def lock_all(runs: Sequence[Lockable], stack: contextlib.ExitStack) -> tuple[list[Any], list[str]]:
    """Take every run's lock; a run another writer holds is skipped (all held: refused, naming the first)."""
    locked, skipped, errors = [], [], []
    for p in runs:
        try:
            lock = RunLock(p.spec.location.url, p.path, p.spec.location.storage_options).acquire()
        except ActstoreError as exc:
            if "is being written by" not in str(exc):
                raise
            errors.append(exc)
            skipped.append(str(exc).split(": ", 1)[-1].split(";")[0])
            continue
        stack.callback(lock.release)
        locked.append(p)
    if not locked and errors:
        raise errors[0]
    return locked, skipped


class _Unsure(Exception):
    """Only the plan can tell (a model's layer count the store does not hold)."""


@dataclass(frozen=True)
class _Known:
    """What a run's configuration needs of its model, known without loading it (``ModelPlan``'s names)."""

    name: str
    checksum: str
    layers: int | None

    @property
    def n_layers(self) -> int:
        if self.layers is None:
            raise _Unsure
        return self.layers


@dataclass
class _Early:
    spec: RunSpec
    data: Dataset
    path: str

    @property
    def name(self) -> str:
        return f"{store_name(self.spec.model)}/{self.data.name}"


def answer_early(specs: Sequence[RunSpec], data: Sequence[Dataset], clustered: bool,
                 started: float) -> CampaignResult | None:
    """The campaign's result when every run is already complete (their views repaired as the campaign's are);
    raises the lock or configuration refusal the campaign would; None when there is work, or only the plan can tell.

    ``data`` are the specs' loaded datasets; ``started`` is when the campaign began (its timings count from it)."""
    if clustered or any(s.overwrite for s in specs) or not specs[0].location.exists():
        return None
    if any(s.templates for s in specs) or any(media_variants(d) for d in data):
        return None  # media are laid out by the model's processor: the plan checks them against the model first
    if len({s.placement()[0].split(":")[0] for s in specs}) > 1:  # the plan refuses it
        return None
    runs = [_Early(s, d, layout.run_path(store_name(s.model), d.name)) for s, d in zip(specs, data)]
    if len({r.path for r in runs}) < len(runs) or any(store_name(s.model) in layout.RESERVED_ROOT_GROUPS for s in specs):
        return None  # the plan refuses these, naming them
    with contextlib.ExitStack() as held:
        locked, skipped = lock_all(runs, held)
        store = specs[0].location.open("r+")
        if not all([_complete(r, store) for r in locked]):  # every run checked: a conflict anywhere is refused
            return None
        result = CampaignResult([], skipped, 1)
        for r in locked:  # a kill after the last block may have missed the views and statistics, or the consolidation
            finish_run(store, r.path)
            consolidate_if_stale(store, r.path)
        result.runs = [_result(r, store, started) for r in locked]
    result.seconds = time.perf_counter() - started
    return result


def _complete(run: _Early, store: Store) -> bool:
    """Whether the stored run is complete in this configuration; raises when it was made in another one."""
    existing = run_attrs(store, run.path)
    if existing is None:
        return False
    config = _config(run, store, existing)
    if config is None:
        return False
    stored_config_matches(existing, config, run.name, run.spec.store)
    n_units = int(store.group(run.path)[layout.HIDDEN].shape[1])
    chunk = int(config["chunk_tokens"])
    done = commits.committed(existing.get(PROGRESS_ATTR), n_units, chunk)
    return commits.missing(done, commits.n_chunks(n_units, chunk)) == []


def _config(run: _Early, store: Store, existing: dict[str, Any]) -> dict[str, Any] | None:
    """The run's configuration as the plan would make it for resuming ``existing``, or None if only the plan can."""
    spec, stored = run.spec, existing.get("config", {})
    chunk = resumed_chunk(spec, existing)
    batch = stored.get("batch_size") if spec.batch_size == "auto" else spec.batch_size
    if chunk is None or batch is None:
        return None
    name, checksum = model_checksum(spec.model)
    model_group = store.group(run.path.rsplit("/", 1)[0])
    held = dict(model_group.attrs) if model_group is not None else {}
    layers = held.get("n_layers") if held.get("model_checksum") == checksum else None
    try:
        return run_config(spec, run.data, _Known(name, checksum, layers), batch, chunk)
    except _Unsure:
        return None


def _result(run: _Early, store: Store, started: float) -> ExtractResult:
    """The line a complete run gets, its counts read from the stored coordinates."""
    group = store.group(run.path)
    unit = dict(group.attrs).get(layout.CAPTURE_ATTR, {}).get("unit", "token")
    return ExtractResult(run.spec.store, store_name(run.spec.model), run.data.name, "already complete",
                         int(group["item"].shape[0]), int(group["token_id"].shape[0]), int(group["layer"].shape[0]),
                         0, time.perf_counter() - started, 0.0, unit=unit, finish_seconds=0.0)
