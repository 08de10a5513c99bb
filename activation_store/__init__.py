"""actstore: run a model once, keep every layer's hidden states in Zarr, analyse them lazily.

``open(url)`` gives the store as an ``xarray.DataTree``; ``open_run`` and
``open_lens`` give one run or one model's lens head as ``xarray.Dataset``
(``ds.actstore`` selects examples, tokens and pooled states); ``analyze`` holds
the paper's analyses as functions on those objects; ``Store`` is the handle
they all accept in place of a URL.
``extract`` (imported on first use, since it needs torch) writes a run; ``torch.loader``
(likewise imported on first use) feeds a run's states to PyTorch training."""
from __future__ import annotations

from .version import __version__  # noqa: E402

from . import analyze  # noqa: E402  (registers the ``ds.actstore`` accessor)
from .analyze import accessor as _accessor  # noqa: E402,F401
from .errors import ActstoreError  # noqa: E402
from .extract import extract  # noqa: E402  (binds the function over the subpackage's name)
from .store import Store, open, open_lens, open_run  # noqa: E402,A004

__all__ = ["ActstoreError", "Store", "__version__", "analyze", "extract", "open", "open_lens", "open_run"]


def __getattr__(name: str):
    """``actstore.torch`` on first use only: importing actstore must not import torch."""
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
