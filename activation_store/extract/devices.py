"""Where the model runs and in which dtype: device names, compute dtypes, free memory.

Everything here is decided before a store is touched, so ``--device cuda`` on a
machine without CUDA (or an unknown name) is one line and nothing is written.
``auto`` means CUDA, then MPS, then the CPU; the default compute dtype is
float32 on the CPU and bfloat16 on accelerators that support it."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ActstoreError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NO_MPS = "--device mps: this machine has no usable Apple MPS device; try --device auto or cpu"


def resolve_device(device: str = "auto") -> str:
    """A concrete torch device string (``cpu``, ``cuda:0``, ``mps``) for a user's ``--device``.

    torch is imported only when the answer needs it: ``cpu``, an unknown name and, with a torch built for the CPU
    alone, every name are answered from torch's ``version.py`` (a refusal or "already complete" in a second)."""
    name = (device or "auto").strip().lower()
    if name == "cpu":
        return "cpu"
    if name not in ("auto", "mps") and re.fullmatch(r"cuda(?::(\d+))?", name) is None:
        raise ActstoreError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    cpu_only = cpu_only_torch()
    if cpu_only is not None:
        if name == "auto":
            return "cpu"
        if name == "mps":
            raise ActstoreError(NO_MPS)
        raise ActstoreError(f"--device {device}: CUDA is not available here (torch {cpu_only}); "
                            "try --device auto or cpu")
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        if _mps_available():
            return "mps"
        return "cpu"
    if name == "mps":
        if not _mps_available():
            raise ActstoreError(NO_MPS)
        return "mps"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not torch.cuda.is_available():
        raise ActstoreError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); "
                            "try --device auto or cpu")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ActstoreError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0…)")
    return f"cuda:{index}"


def worker_device(device: str) -> str:
    """The concrete device a campaign worker runs ``device`` on: ``cuda`` is this worker's own GPU.

    A campaign's GPU workers each declare one ``GPU`` resource, so one model sits on one GPU. Workers of a
    local cluster are named 0, 1, …, and worker ``i`` takes GPU ``i``; a worker with another name (Slurm,
    Kubernetes: one GPU made visible to it) takes its current device. Anything else (``cpu``, ``cuda:N``
    in-process) is resolved as ``--device`` is."""
    if device != "cuda":
        return resolve_device(device)
    import torch

    if not torch.cuda.is_available():
        raise ActstoreError(f"--device cuda: this worker ({os.uname().nodename}, pid {os.getpid()}) has no CUDA "
                            f"(torch {torch.__version__})")
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not on a dask worker
        name = None
    index = name % torch.cuda.device_count() if isinstance(name, int) else torch.cuda.current_device()
    return f"cuda:{index}"


def cpu_only_torch() -> str | None:
    """The installed torch's version when it is built for the CPU alone (no CUDA, no ROCm, not on macOS, where MPS
    may be), read from its ``version.py`` without importing torch; None when only torch itself can tell (or it is
    imported already: its answer, which tests may patch, is then the one to use)."""
    if "torch" in sys.modules or sys.platform == "darwin":
        return None
    return _cpu_build_version()


@lru_cache(maxsize=1)
def _cpu_build_version() -> str | None:
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        tree = ast.parse((Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8"))
    except (ImportError, ValueError, OSError, SyntaxError):
        return None
    values = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
            values[target.id] = node.value.value
    if values.get("cuda") is not None or values.get("hip") is not None or not isinstance(values.get("__version__"), str):
        return None
    return values["__version__"]


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def default_compute_dtype(device: str) -> str:
    """float32 on the CPU; bfloat16 on CUDA/MPS where the device supports it, else float32."""
    if device == "cpu":  # no torch needed: a config is checked before torch is imported
        return "float32"
    import torch

    if device.startswith("cuda"):
        with torch.cuda.device(device):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device == "mps":
        try:
            torch.ones(1, dtype=torch.bfloat16, device="mps").sum().item()
            return "bfloat16"
        except (RuntimeError, TypeError):
            return "float32"
    return "float32"


def check_compute_dtype(compute_dtype: str | None) -> None:
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise ActstoreError(f"unknown compute dtype {compute_dtype!r}; choose one of {', '.join(COMPUTE_DTYPES)}")


def torch_dtype(compute_dtype: str) -> "torch.dtype":
    import torch

    check_compute_dtype(compute_dtype)
    return getattr(torch, compute_dtype)


def device_kind(device: str) -> str:
    """What provenance records: ``cpu``, ``mps`` or the CUDA device's name (``cuda: NVIDIA H100 80GB HBM3``)."""
    import torch

    if device.startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device


def free_memory(device: str) -> int:
    """Bytes a model and its activations may still take on ``device`` (for the CPU: available RAM)."""
    import torch

    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return _available_ram()


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
