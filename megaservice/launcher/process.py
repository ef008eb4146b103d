"""One service of `megaservice up` as a child process: started, its output prefixed with its name, stopped.

A child runs in its own process group (Ctrl-C in the terminal reaches `up`, which stops the
services in reverse order) and gets SIGTERM if `up` itself dies (Linux's parent-death signal), so
no service outlives the command that started it. A service on a request's path may also ask for a
short scheduler slice (scheduling.py).
"""

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from megaservice.launcher.scheduling import slice_request

__all__ = ["ServiceProcess"]

_PR_SET_PDEATHSIG = 1


def _in_child(prctl: Callable[..., int] | None, ask_slice: Callable[[], None] | None) -> None:  # pragma: no cover
    """Runs in the child between fork and exec: only calls prepared in the parent, every failure ignored."""
    with contextlib.suppress(Exception):
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    with contextlib.suppress(Exception):
        if ask_slice is not None:
            ask_slice()


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


class ServiceProcess:
    """A started (or not yet started) service process, and its log lines handed to `emit(name, line)`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        emit: Callable[[str, str], None],
        *,
        slice_us: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.slice_us = slice_us
        """The scheduler slice (µs) the child asks for before it starts (`None`: it keeps the one `up` has)."""
        self._emit = emit
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (negative: the signal that ended it)."""
        return self._process.returncode if self._process is not None else None

    async def start(self) -> None:
        """Start the child with its output piped to the log pump."""
        in_child = None
        if sys.platform == "linux":
            ask_slice = slice_request(self.slice_us) if self.slice_us is not None else None
            in_child = functools.partial(_in_child, _prctl(), ask_slice)
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=in_child,
        )
        self._pump = asyncio.get_running_loop().create_task(self._read_lines())

    async def _read_lines(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the reader's limit: pass on what there is
                line = await stream.read(65536)
            if not line:
                return
            self._emit(self.name, line.decode("utf-8", "replace").rstrip("\r\n"))

    async def wait(self) -> int:
        """Wait for the child to exit and its last lines to be printed; its exit code."""
        assert self._process is not None
        code = await self._process.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        return code

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds; its exit code."""
        self.stopping = True
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                self._emit(self.name, f"did not stop within {grace:g} s: killed")
                self._signal(signal.SIGKILL)
                await process.wait()
        # what the child left in its group (a worker it forked) goes with it
        self._signal(signal.SIGKILL)
        return await self.wait()

    def _signal(self, signum: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)
