"""``ds.actstore``: selections of a run in the words of the store, registered as an xarray accessor.

Registered when ``actstore`` is imported (xarray's extension mechanism), so a
notebook writes ``ds.actstore.tokens(variant="zh")`` or
``ds.actstore.last_tokens()`` on any run opened with ``actstore.open_run``."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .selection import examples_of, last_tokens, mean_tokens, token_states, tokens_of


@xr.register_dataset_accessor("actstore")
class RunAccessor:
    """Selections of one extraction run: examples, their tokens, and pooled states."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def example_indices(self, variant: str | None = None, item: str | None = None) -> np.ndarray:
        return examples_of(self._ds, variant=variant, item=item)

    def examples(self, variant: str | None = None, item: str | None = None) -> xr.Dataset:
        """The run restricted to the matching examples and their tokens (lazy), itself a run: ``token_offset`` and
        ``token_example`` are renumbered within it, while ``example`` keeps the store's example ids."""
        chosen = self.example_indices(variant, item)
        subset = self._ds.isel(example=chosen, token=tokens_of(self._ds, chosen))
        counts = subset.token_count.values
        return subset.assign_coords(
            token_offset=("example", np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)),
            token_example=("token", np.repeat(np.arange(len(chosen), dtype=np.int32), counts)),
        )

    def tokens(self, variant: str | None = None, item: str | None = None) -> xr.DataArray:
        """``hidden`` of the matching examples' tokens: (layer, token, d_model), lazy."""
        return token_states(self.examples(variant, item), "token states")

    def last_tokens(self, variant: str | None = None, item: str | None = None) -> xr.DataArray:
        """Each matching example's last-token state: (layer, example, d_model)."""
        return last_tokens(self._ds, self.example_indices(variant, item))

    def mean_tokens(self, variant: str | None = None, item: str | None = None) -> xr.DataArray:
        """Each matching example's states averaged over its tokens (BOS excluded where the run has one)."""
        return mean_tokens(self._ds, self.example_indices(variant, item))
