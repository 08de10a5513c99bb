"""Storage dtypes for hidden states.

Real hidden states overflow float16 (Gemma 3 270M reaches |h| ≈ 1e5), and
zarr-python has no bfloat16 dtype, so bfloat16 is stored as its exact bit
pattern in uint16 and decoded lazily on open: shift into the high half of a
uint32 and view it as float32. Encoding rounds to nearest even, like torch."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ActstoreError

if TYPE_CHECKING:  # torch is imported only by the writer: readers and dask workers never pay for it
    import torch

DTYPES = ("bfloat16", "float32")


def storage_dtype(dtype: str) -> np.dtype:
    if dtype == "bfloat16":
        return np.dtype("uint16")
    if dtype == "float32":
        return np.dtype("float32")
    raise ActstoreError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def encode(hidden: "torch.Tensor", dtype: str) -> np.ndarray:
    """A float tensor as the array written to the store."""
    import torch

    if not torch.isfinite(hidden).all():
        raise ActstoreError("the model produced non-finite hidden states (inf/nan); refusing to store them")
    if dtype == "bfloat16":
        return hidden.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return hidden.to(torch.float32).numpy()


def decode_bfloat16(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint16 bfloat16 bit patterns to float32, exactly; into ``out`` (float32, same shape) when given."""
    if out is not None:
        np.left_shift(bits, 16, out=out.view(np.uint32), dtype=np.uint32)
        return out
    return np.left_shift(bits, 16, dtype=np.uint32).view(np.float32)  # one pass, no uint32 temporary
