"""The ``actstore`` command in fresh processes forked from one that has already imported the library.

A forkserver imports the CLI, torch and transformers once; every command then runs in its own child
of it — its own file descriptors 1 and 2, working directory, environment and exit code (a negative
signal number when it was killed), exactly the ``main()`` that ``python -m activation_store`` runs —
without paying those imports again (seconds per command on two cores)."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = ["activation_store.cli", "torch", "transformers"]


def _child(args: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """The forked command: stdout/stderr onto the parent's files; its exit status becomes the process's."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:  # torch read it when the server imported it
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = ["actstore", *args]
    from activation_store.cli import main

    try:
        main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class ForkedCli:
    """``cli(*args, timeout=, env=)`` → ``subprocess.CompletedProcess``, like ``conftest.run_cli``."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)

    def __call__(self, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        with tempfile.TemporaryDirectory(prefix="actstore-cli-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch()
            err.touch()
            child = self.context.Process(target=_child, args=(argv, {**os.environ, **(env or {})}, os.getcwd(),
                                                              str(out), str(err)))
            child.start()
            child.join(timeout)
            if child.is_alive():
                child.kill()
                child.join()
                raise subprocess.TimeoutExpired(["actstore", *argv], timeout)
            return subprocess.CompletedProcess(["actstore", *argv], child.exitcode,
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))
