"""Short scheduler slices for the services on a request's path, so their steps wait less behind the model.

On one machine the model server's threads keep every CPU busy while it generates. A request's other
steps (the gateway, each service reading its request and writing its answer, PostgreSQL) are short
and wake up in between; each waits for a CPU until the model's thread running there has used its
time slice (1.4 ms on a 2-CPU machine). Linux 6.12 and later let a task ask for a shorter slice
(`sched_setattr`, `sched_runtime` for SCHED_OTHER), and a waking SCHED_OTHER task with a shorter
slice than the running one's may take the CPU at once. A slice changes no share of CPU time, only
how finely it is cut, and needs no privilege. `up` asks for one (100 µs by default,
`MEGASERVICE_SCHED_SLICE_US`) in every service it starts, those running small models in process
(embedding, reranker, guardrails: milliseconds per call) included, except the model server, whose
generations take seconds: it keeps the slice it inherits from `up`, normally the kernel's default.
The trace receiver of `--observe` is not on a request's path and keeps it too. Older kernels ignore
the request; other systems and architectures are skipped.

Why not a nice value for the model server: `up` starts each service in its own session, and where the
kernel groups sessions ("autogroup": tasks in the root cpu cgroup, with autogroup on) a nice value
only ranks a process among its own session's processes, not against the other services.
docs/performance.md has the measurements.
"""

import ctypes
import os
import platform
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from megaservice.settings import EnvSettings, variable

__all__ = ["MODEL_SERVERS", "SchedulingSettings", "slice_of", "slice_request"]

MODEL_SERVERS = frozenset({"llm-server"})
"""Components whose work is long computations on every CPU: they keep the slice `up` has."""

_SYSCALLS: dict[tuple[str, int], tuple[int, int]] = {
    ("x86_64", 8): (314, 315),
    ("x86_64", 4): (351, 352),  # an i386 userland on a 64-bit kernel (x32 gets ENOSYS: skipped)
    ("i386", 4): (351, 352),
    ("i686", 4): (351, 352),
    ("aarch64", 8): (274, 275),  # the generic table
    ("riscv64", 8): (274, 275),
    ("loongarch64", 8): (274, 275),
    ("aarch64", 4): (380, 381),  # 32-bit ARM (EABI) userland
    ("armv7l", 4): (380, 381),
    ("armv8l", 4): (380, 381),
}
"""(`sched_setattr`, `sched_getattr`) by machine and the interpreter's pointer size."""

_ATTR = struct.Struct("=IIQiIQQQII")
"""`struct sched_attr` as of Linux 5.3 (56 bytes): size, policy, flags, nice, priority, runtime,
deadline, period, util_min, util_max."""
assert _ATTR.size == 56

MAX_SLICE_US = 100_000
"""The longest slice the kernel grants (it cuts a longer request to this)."""


def _slice_us(text: str) -> int | None:
    value = int(text)
    if value == 0:
        return None
    if not 100 <= value <= MAX_SLICE_US:
        raise ValueError
    return value


@dataclass(frozen=True, slots=True)
class SchedulingSettings(EnvSettings):
    """How `megaservice up` asks the kernel to schedule the services it starts."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    slice_us: int | None = variable(
        "SCHED_SLICE_US",
        100,
        parse=_slice_us,
        expected="0 (off) or a whole number of µs from 100 to 100000",
        help="The scheduler time slice, in µs, that `megaservice up` asks for in every service it starts but the "
        "model server and the trace receiver (Linux 6.12+; older kernels ignore it), so a request's short steps "
        "wait less behind the model's threads. 100 to 100 000 (the kernel's range); `0` leaves the kernel's default.",
    )
    """The slice `up` asks for, in µs; `None`: the kernel's default."""


def _syscall() -> tuple[Callable[..., int], int, int] | None:
    """The C library's `syscall`, and the numbers of `sched_setattr` and `sched_getattr` here; `None` if not here."""
    numbers = _SYSCALLS.get((platform.machine(), struct.calcsize("P"))) if sys.platform == "linux" else None
    if numbers is None:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syscall, numbers[0], numbers[1]
    except (OSError, AttributeError):
        return None


def slice_request(slice_us: int) -> Callable[[], None] | None:
    """What a child calls between `fork` and `exec` to ask for a `slice_us` time slice; `None` if not here.

    Prepared in the parent (the libc lookup, the packed request: the child inherits the parent's
    policy and nice value, which the request keeps), so the child only makes one system call, whose
    failure it ignores. The child's threads and processes inherit the slice. Only SCHED_OTHER is
    asked for: other policies (a `up` run under `chrt`) are left as they are.
    """
    found = _syscall()
    if found is None:
        return None
    syscall, setattr_number, _ = found
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return None
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        return None
    request = ctypes.create_string_buffer(
        _ATTR.pack(_ATTR.size, os.SCHED_OTHER, 0, nice, 0, slice_us * 1000, 0, 0, 0, 0), _ATTR.size
    )
    number = ctypes.c_long(setattr_number)
    zero = ctypes.c_long(0)

    def ask() -> None:  # pragma: no cover - runs in the child between fork and exec
        syscall(number, zero, request, zero)

    return ask


def slice_of(tid: int = 0) -> int | None:
    """The time slice of thread `tid` (0: the calling thread) in ns, as the kernel reports it.

    `None` where the kernel does not say (before Linux 6.12 it reports 0 for SCHED_OTHER), on other
    systems, and for a thread that is gone.
    """
    found = _syscall()
    if found is None:
        return None
    syscall, _, getattr_number = found
    buffer = ctypes.create_string_buffer(_ATTR.size)
    if syscall(ctypes.c_long(getattr_number), ctypes.c_long(tid), buffer, ctypes.c_long(_ATTR.size), ctypes.c_long(0)):
        return None
    return int(_ATTR.unpack(buffer.raw)[5]) or None
