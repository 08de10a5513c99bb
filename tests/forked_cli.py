"""The ``actstore`` command in fresh processes forked from one that has already imported the library.

A forkserver imports the CLI, torch and transformers once; every command then runs in its own child
of it — its own file descriptors 1 and 2, environment and exit code, exactly the ``main()`` that
``python -m activation_store`` runs — without paying those imports again (seconds per command on two
cores). For tables of many short commands, such as tests/test_bad_input.py."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

PRELOAD = ["activation_store.cli", "torch", "transformers"]


def _main(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """In the forked child: run the command with stdout/stderr on temporary files, return what it printed."""
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:  # torch read it when the server imported it
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        code = 0
        try:
            sys.argv = ["actstore", *args]
            from activation_store.cli import main

            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


class ForkedCli:
    """``cli(*args, timeout=, env=)`` like ``conftest.run_cli``, with up to ``workers`` commands at once."""

    def __init__(self, workers: int = 2):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1)

    def __call__(self, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        code, out, err = self.pool.submit(_main, argv, {**os.environ, **(env or {})}).result(timeout=timeout)
        return subprocess.CompletedProcess(["actstore", *argv], code, out, err)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
