"""``actstore verify``: read every chunk back and name each bad or missing one."""
from __future__ import annotations

import click

from ..errors import ActstoreError
from ..store.verify import verify as verify_store
from .options import storage, store_options


@click.command()
@click.argument("store")
@click.option("--model", default=None, help="Only this model's group (its lens head and runs).")
@click.option("--dataset", default=None, help="Only the runs of this dataset (and their models' lens heads).")
@store_options
def verify(store, model, dataset, endpoint_url, anon):
    """Check every chunk's checksum in STORE; exit non-zero if any chunk is bad or missing."""
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
