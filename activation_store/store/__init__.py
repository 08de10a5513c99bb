"""The Zarr store: its layout contract, where it lives, writing and opening."""
from .layout import FORMAT_VERSION, decode_name, encode_name, run_path
from .open import open, open_lens, open_run  # noqa: A004

__all__ = ["FORMAT_VERSION", "decode_name", "encode_name", "open", "open_lens", "open_run", "run_path"]
