"""What a store URL names: a local directory (a plain path or ``file://``) or a remote place (any other scheme)."""
from __future__ import annotations

import os
from urllib.parse import urlsplit


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def is_s3(url: str) -> bool:
    return str(url).startswith(("s3://", "s3a://"))


def local_path(url: str) -> str:
    """The absolute directory of a local store URL (plain path or ``file://``)."""
    url = str(url)
    return os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)


def bucket(url: str) -> str:
    return urlsplit(str(url)).netloc
