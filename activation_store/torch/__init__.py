"""The store as a PyTorch training source: ``actstore.torch.loader(url, model, dataset, layers=[12])``.

Imported on first use of ``actstore.torch`` only, so ``import actstore`` never pays for torch."""
from __future__ import annotations

from .loader import Batch, StoreDataset, StoreLoader, loader

__all__ = ["Batch", "StoreDataset", "StoreLoader", "loader"]
