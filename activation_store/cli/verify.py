"""``actstore verify``: read every chunk and metadata document back as readers read them, and name each problem."""
from __future__ import annotations

import click

from ..errors import ActstoreError
from ..store.verify import verify as verify_store
from .options import storage, store_options

EXIT_CODES = """\b
Each problem is one line: its kind, its key, and what is wrong:
  bad          a chunk whose checksum fails, or that cannot be decoded
  missing      a chunk or a node's zarr.json that is not there
  metadata     a zarr.json that cannot be parsed
  mismatch     a node whose zarr.json and the consolidated metadata readers open disagree (shape, chunks,
               codecs, attributes), or that only one of them has
  interrupted  a result replacement killed part way; the next save into the store completes it
Chunks past an unfinished run's committed progress are "not yet written", not problems.

\b
Exit status:
  0  every chunk and metadata document readers read is good (some may be not yet written)
  2  problems were found (one line each, then a summary), or the store could not be read at all
  1  an internal error (a bug: ACTSTORE_DEBUG=1 shows the traceback)"""


@click.command(epilog=EXIT_CODES)
@click.argument("store")
@click.option("--model", default=None, help="Only this model's group (its lens head and runs) and its results.")
@click.option("--dataset", default=None, help="Only the runs of this dataset (and their models' lens heads) and their results.")
@store_options
def verify(store, model, dataset, endpoint_url, anon):
    """Check STORE as readers read it: every chunk's checksum, every zarr.json, and each node's metadata against
    the consolidated metadata readers open; exit 2 if anything is bad, missing or inconsistent."""
    report = verify_store(store, model, dataset, storage(store, endpoint_url, anon))
    for problem in report.problems:
        click.echo(f"{problem.kind:<8} {problem.key}" + (f"  ({problem.detail})" if problem.detail else ""))
    for pending in report.pending:
        click.echo(f"not yet written  {pending.array}: {pending.chunks} chunks past committed progress "
                   f"({pending.tokens_done:,} of {pending.tokens:,} tokens)")
    summary = f"{report.arrays} arrays, {report.chunks_ok:,} chunks good, {len(report.problems)} bad or missing"
    if not report.ok:
        raise ActstoreError(f"{store}: {summary}")
    click.echo(f"ok: {summary}" + (f"; {sum(p.chunks for p in report.pending):,} not yet written" if report.pending else ""))
