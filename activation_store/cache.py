"""Where actstore keeps what it can rebuild: converted models, language tables."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$ACTSTORE_CACHE`` or ``~/.cache/actstore``."""
    return Path(os.environ.get("ACTSTORE_CACHE") or Path.home() / ".cache" / "actstore")
