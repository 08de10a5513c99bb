"""What a run prints while it works: its own progress bar, and transformers' bars kept quiet.

Bars go to stderr. On a terminal they redraw in place; into a log (stderr not a
terminal) they write a line at most every ``LOG_INTERVAL`` seconds, so a log reads as
a story rather than ten lines a second. Loading a model draws no bars with ``quiet`` or
into a log: transformers' "loading weights" and GGUF de-quantisation bars included."""
from __future__ import annotations

import io
import sys
from contextlib import contextmanager, redirect_stderr
from typing import Any, Iterator

LOG_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal


def progress_bar(total: int, *, desc: str, unit: str, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar for a run's main loop (a context manager; ``update(n)`` as work is done)."""
    from tqdm.auto import tqdm

    terminal = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit=unit, unit_scale=True, desc=desc, disable=not enabled,
                dynamic_ncols=terminal, mininterval=0.1 if terminal else LOG_INTERVAL, file=sys.stderr)


@contextmanager
def quiet_loading(quiet: bool) -> Iterator[None]:
    """Within the block, no loading bars when ``quiet`` or when stderr is not a terminal (a log).

    transformers' and huggingface_hub's bars have switches; the GGUF de-quantisation bar has
    none, so stderr is held in a buffer for the block and written out only if the block fails."""
    if not quiet and sys.stderr.isatty():
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    was_hf, was_hub = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        if was_hf:
            hf_logging.enable_progress_bar()
        if was_hub:
            enable_progress_bars()
