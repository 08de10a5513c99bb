"""The one runner every analysis goes through: open the run (and the lens head), select layers, compute,
write the CSVs, draw the figures when asked, save the result under the store when asked.

The store is opened once, at the edge (``open_store``: the CLI, a script holding a URL), and the ``Store``
is handed down; nothing below reopens it."""
from __future__ import annotations

from typing import Any

from ..analyze.selection import select_layers
from ..store import Store, open_lens, open_run
from .analysis import Analysis, Inputs, RunOptions, Target
from .registry import get_analysis
from .results import Report, save_tables, save_to_store


def open_store(url: str | Store, storage_options: dict[str, Any] | None, options: RunOptions) -> Store:
    """The edge: ``url`` opened once, writable only when the result is to be saved."""
    if options.save and not isinstance(url, Store) and not Store.exists(str(url), storage_options):
        Store.open(url, storage_options)   # the usual 'no store' error; a writable open would create the directory
    return Store.open(url, storage_options, mode="r+" if options.save else "r")


def open_inputs(analysis: Analysis, store: Store, target: Target, layers: list[int] | None) -> Inputs:
    """The run with ``layers`` selected and the lens head, as far as ``analysis`` reads them."""
    run = select_layers(open_run(store, target.model, target.dataset), layers) if analysis.reads_run else None
    lens = open_lens(store, target.model) if analysis.needs_lens else None
    return Inputs(store, target, run, lens)


def run_analysis(analysis: Analysis | str, store: Store, target: Target, options: RunOptions, **params: Any) -> Report:
    """Run ``analysis`` (a record or a registered name) on ``target`` in the open ``store``; ``params`` are its
    compute keywords. Saving needs a writable store, checked before anything is computed."""
    analysis = get_analysis(analysis) if isinstance(analysis, str) else analysis
    if options.save:
        store.require_writable()
    computed = analysis.compute(open_inputs(analysis, store, target, options.layers), **params)
    files = save_tables(analysis.tables(computed), options.out)
    if options.plot and analysis.plot is not None:
        files += analysis.plot(computed, options.out)
    path = ""
    if options.save:
        stored = computed.result if computed.stored is None else computed.stored
        path = save_to_store(stored, store, target.model, target.dataset, computed.name)
    return Report(computed.result, files, path, computed.parts)


def run_at(analysis: Analysis | str, url: str | Store, target: Target, options: RunOptions,
           storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """``run_analysis`` for a caller holding a URL: opens it once here (see ``open_store``)."""
    return run_analysis(analysis, open_store(url, storage_options, options), target, options, **params)
