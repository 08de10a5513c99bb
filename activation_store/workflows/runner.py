"""The one runner every analysis goes through: open the run (and the lens head), select layers, compute,
write the CSVs, draw the figures when asked, save the result under the store when asked.

In that order, and each step only after the one before it has finished: a store the result cannot be saved into
is refused first; the result is computed in full, from inputs whose missing or damaged chunks stop it with the
chunk named, before the first file is written; the store is written last (``results.save_to_store``).

The store is opened once, at the edge (``open_store``: the CLI, a script holding a URL), and the ``Store``
is handed down; nothing below reopens it."""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from ..analyze.selection import select_layers
from ..analyze.sites import at_site
from ..errors import ActstoreError
from ..store import Store, open_lens, open_run
from ..store.strict import DamagedChunk, is_damage, strict, verify_hint
from ..store.writable import ReadOnlyStore, check_writable
from .analysis import Analysis, Computed, Inputs, RunOptions, Target
from .registry import get_analysis
from .results import Report, file_name, save_tables, save_to_store


def open_store(url: str | Store, storage_options: dict[str, Any] | None, options: RunOptions) -> Store:
    """The edge: ``url`` opened once, writable only when the result is to be saved."""
    if options.save and not isinstance(url, Store) and not Store.exists(str(url), storage_options):
        Store.open(url, storage_options)   # the usual 'no store' error; a writable open would create the directory
    return Store.open(url, storage_options, mode="r+" if options.save else "r")


def open_inputs(analysis: Analysis, store: Store, target: Target, layers: list[int] | None,
                site: str | None = None) -> Inputs:
    """The run (read at ``site``) with ``layers`` selected and the lens head, as far as ``analysis`` reads them."""
    run = None
    if analysis.reads_run:
        run = select_layers(at_site(open_run(store, target.model, target.dataset), site), layers)
    lens = open_lens(store, target.model) if analysis.needs_lens else None
    return Inputs(store, target, run, lens)


def check_can_save(store: Store) -> None:
    """A store the result cannot be saved into is refused before anything is computed or written."""
    try:
        check_writable(store)
    except ReadOnlyStore as exc:
        raise ActstoreError(f"{exc}; nothing was written: add --no-save to write only the tables and figures "
                            f"(to --out)") from None


@contextmanager
def damage_named(store: Store) -> Iterator[None]:
    """A missing or damaged input chunk as one line that names it (where zarr leaves it unnamed, points to
    ``actstore verify``) and says that nothing was written."""
    try:
        yield
    except DamagedChunk as exc:
        raise ActstoreError(f"{exc.url}: {exc.what} is {exc.detail}; the analysis stopped before writing "
                            f"anything; {verify_hint(exc.url)}") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            what = "a zarr.json the analysis read cannot be parsed"
        elif is_damage(exc):
            what = "a chunk the analysis read failed its checksum"
        else:
            raise
        raise ActstoreError(f"{store.url}: {what}; the analysis stopped before writing anything; "
                            f"{verify_hint(store.url)}") from None


def compute_in_full(analysis: Analysis, store: Store, target: Target, options: RunOptions,
                    params: dict[str, Any]) -> tuple[Computed, dict[str, Any]]:
    """The result (and what is stored, and the tables) computed to the last number from inputs read strictly
    (``store/strict.py``), before any file is written: a damaged input never reaches a file or the store."""
    with damage_named(store):
        computed = analysis.compute(open_inputs(analysis, strict(store), target, options.layers, options.site),
                                    **params)
        computed.result = computed.result.load()
        if computed.stored is not None:
            computed.stored = computed.stored.load()
        tables = dict(analysis.tables(computed))
    return computed, tables


def run_analysis(analysis: Analysis | str, store: Store, target: Target, options: RunOptions, **params: Any) -> Report:
    """Run ``analysis`` (a record or a registered name) on ``target`` in the open ``store``; ``params`` are its
    compute keywords. Saving needs a store that can be written, found out (by writing one probe) before anything
    is computed; everything is computed before the first file is written."""
    analysis = get_analysis(analysis) if isinstance(analysis, str) else analysis
    if options.save:
        check_can_save(store)
    computed, tables = compute_in_full(analysis, store, target, options, params)
    out = options.out / f"site-{file_name(options.site)}" if options.at_site else options.out
    files = save_tables(tables, out)
    if options.plot and analysis.plot is not None:
        files += analysis.plot(computed, out)
    path = ""
    if options.save:
        stored = computed.result if computed.stored is None else computed.stored
        name = f"{computed.name}-{options.site}" if options.at_site else computed.name
        path = save_to_store(stored, store, target.model, target.dataset, name)
    return Report(computed.result, files, path, computed.parts)


def run_at(analysis: Analysis | str, url: str | Store, target: Target, options: RunOptions,
           storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """``run_analysis`` for a caller holding a URL: opens it once here (see ``open_store``)."""
    return run_analysis(analysis, open_store(url, storage_options, options), target, options, **params)
