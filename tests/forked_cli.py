"""The ``actstore`` command in fresh processes forked from one that has already imported the library.

A forkserver imports the CLI, torch and transformers' model code once; every command then runs in its own
child of it — its own file descriptors 1 and 2, working directory, environment and exit code (a negative
signal number when it was killed), exactly the ``main()`` that ``python -m activation_store`` runs —
without paying those imports again (seconds per command on two cores; transformers' lazy top-level module
alone defers most of them to the first model a command plans)."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# what commands import: the CLI, and the heavy modules its commands import on first use (extraction and the
# model code transformers loads lazily: torch.distributed, torch._dynamo... through modeling_utils)
PRELOAD = ["activation_store.cli", "torch", "transformers", "transformers.modeling_utils",
           "transformers.models.auto.processing_auto", "activation_store.extract.run",
           "activation_store.extract.campaign"]


def _child(args: list[str], env: dict[str, str], cwd: str, out: str, err: str, new_session: bool) -> None:
    """The forked command: stdout/stderr onto the parent's files; its exit status becomes the process's."""
    if new_session:  # a process group of its own: the command and whatever it starts can be killed together
        os.setsid()
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


class Running:
    """A started command, used like ``subprocess.Popen``: ``pid``, ``poll()``, ``send_signal()``, ``wait()``,
    ``communicate()`` and ``returncode`` (negative: the signal that killed it)."""

    def __init__(self, process: multiprocessing.Process, argv: list[str], tmp: str) -> None:
        self.process, self.args, self._tmp = process, ["actstore", *argv], tmp

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Waits for the end (killing it after ``timeout`` seconds) → its stdout and stderr."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.join()
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        try:
            return (Path(self._tmp, "stdout").read_text(errors="replace"),
                    Path(self._tmp, "stderr").read_text(errors="replace"))
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


class ForkedCli:
    """``cli(*args, timeout=, env=)`` → ``subprocess.CompletedProcess``, like ``conftest.run_cli``;
    ``cli.start(*args, env=)`` → a ``Running`` command to poll, signal and wait for."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)

    def start(self, *args: str, env: dict | None = None, new_session: bool = False) -> Running:
        argv = [str(a) for a in args]
        tmp = tempfile.mkdtemp(prefix="actstore-cli-")
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        child = self.context.Process(target=_child, args=(argv, {**os.environ, **(env or {})}, os.getcwd(),
                                                          str(out), str(err), new_session))
        child.start()
        return Running(child, argv, tmp)

    def __call__(self, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        running = self.start(*args, env=env)
        out, err = running.communicate(timeout)
        return subprocess.CompletedProcess(running.args, running.returncode, out, err)
