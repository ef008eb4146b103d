"""Short scheduler slices for the services on a request's path, so their steps do not queue behind the model.

On one machine the model server's threads keep every CPU busy while it generates. A request's other
steps (the gateway, each service reading its request and writing its answer, PostgreSQL) are short
and wake up in between; each waits for a CPU until the model's thread running there has used its
time slice (about 1.4 ms on a 2-CPU machine). Linux 6.12 and later let a task ask for a shorter
slice (`sched_setattr`, `sched_runtime` for SCHED_OTHER/SCHED_BATCH), and a waking task with a
shorter slice than the running one may take the CPU at once. A slice changes no share of CPU time,
only how finely it is cut, and needs no privilege. `up` asks for one (100 µs by default,
`MEGASERVICE_SCHED_SLICE_US`) in every service it starts except the model server, whose long
computations keep the kernel's default. Older kernels ignore the request; other systems are skipped.

Each service runs in its own session, hence in its own scheduling group where the kernel groups
sessions ("autogroup"): `nice` on the model server then changes nothing against the other services
(it only ranks a process among its own session's), which is why a slice, not a nice value, is the
means here. docs/performance.md has the measurements.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import struct
import sys
from dataclasses import dataclass
from typing import ClassVar

from megaservice.settings import EnvSettings, variable

__all__ = ["MODEL_SERVERS", "SchedulingSettings", "request_slice"]

MODEL_SERVERS = frozenset({"llm-server"})
"""Components whose work is long computations on every CPU: they keep the kernel's slice."""

_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "arm64": 274, "i686": 351, "i386": 351}
"""`sched_setattr`'s system call number by machine (aarch64 uses the generic table)."""

_ATTR = struct.Struct("IIQiIQQQII")
"""`struct sched_attr` as of Linux 4.13 (56 bytes): size, policy, flags, nice, priority, runtime,
deadline, period, util_min, util_max."""


@dataclass(frozen=True, slots=True)
class SchedulingSettings(EnvSettings):
    """How `megaservice up` asks the kernel to schedule the services it starts."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    slice_us: int | None = variable(
        "SCHED_SLICE_US",
        100,
        zero_off=True,
        minimum=100,
        help="The scheduler time slice, in µs, that `megaservice up` asks for in every service it starts but the "
        "model server (Linux 6.12+; older kernels ignore it), so a request's short steps are not kept waiting "
        "behind the model's threads. The kernel accepts 100 to 100 000. `0` leaves the kernel's default.",
    )
    """The slice `up` asks for, in µs; `None`: the kernel's default."""


def request_slice(slice_us: int) -> bool:
    """Ask the kernel for a `slice_us` time slice for the calling thread; whether it was asked and accepted.

    The threads and processes the thread starts afterwards inherit the slice. Keeps the thread's policy
    (SCHED_OTHER or SCHED_BATCH; any other policy is left alone) and its nice value. Safe
    between `fork` and `exec` (a `preexec_fn`): no allocation beyond a small buffer, no lock.
    """
    number = _SCHED_SETATTR.get(platform.machine()) if sys.platform == "linux" else None
    if number is None:
        return False
    with contextlib.suppress(OSError):
        policy = os.sched_getscheduler(0)
        if policy not in (os.SCHED_OTHER, os.SCHED_BATCH):
            return False
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, policy, 0, nice, 0, slice_us * 1000, 0, 0, 0, 0))
        return int(ctypes.CDLL(None, use_errno=True).syscall(number, 0, attr, 0)) == 0
    return False
