"""The Zarr store: its layout contract, the store handle, writing, opening, checking and copying."""
from .handle import Store
from .layout import FORMAT_VERSION, decode_name, encode_name, run_path
from .open import open, open_lens, open_run  # noqa: A004

__all__ = ["FORMAT_VERSION", "Store", "decode_name", "encode_name", "open", "open_lens", "open_run", "run_path"]
