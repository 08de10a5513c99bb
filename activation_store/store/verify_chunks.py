"""Reading every chunk of one array back (``actstore verify``).

Every chunk carries a CRC32C checksum (store/arrays.py), and every chunk is written even when it equals the fill
value, so a flipped bit, a truncated file and a lost chunk are all found and named by their key. Chunks of a
run's states past its committed ``progress`` belong to a run that was killed or is still running: they are
"not yet written", not damage."""
from __future__ import annotations

import itertools

import zarr
from zarr.core.sync import sync

from . import layout
from .verify_report import Pending, VerifyReport, one_line


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def check_array(array: zarr.Array, report: VerifyReport, tokens_done: int | None) -> None:
    """Every chunk of ``array`` read back; ``tokens_done``: the committed tokens of the run it belongs to (None:
    not a run's array)."""
    report.arrays += 1
    pending = 0
    states = array.basename == layout.HIDDEN or "site" in array.attrs  # filled block by block, as committed
    chunk_tokens = array.chunks[1] if tokens_done is not None and states and array.ndim > 1 else None
    for coords in itertools.product(*(range(n) for n in array.cdata_shape)):
        if chunk_tokens is not None and min((coords[1] + 1) * chunk_tokens, array.shape[1]) > tokens_done:
            pending += 1
            continue
        key = _join(array.path, array.metadata.encode_chunk_key(coords))
        if not sync(array.store.exists(key)):
            report.add(key, "missing")
            continue
        try:
            array.get_block_selection(coords)
        except Exception as exc:  # noqa: BLE001 - a checksum mismatch, a truncated or undecodable chunk
            detail = "checksum mismatch" if "checksum" in str(exc).lower() else f"undecodable: {one_line(exc)}"
            report.add(key, "bad", detail)
            continue
        report.chunks_ok += 1
    if pending:
        report.pending.append(Pending(array.path, pending, tokens_done or 0, int(array.shape[1])))
