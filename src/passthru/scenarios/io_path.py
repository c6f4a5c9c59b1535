"""The seam between a block I/O path and the workloads that drive it.

Every path (bare metal, passthrough, emulated NVMe, virtio-blk) is built on the same host
model and exposes this small interface; the fio-like workload only ever talks to it, so one
workload measures all paths the same way. A path's guest driver is the real one for its
device class (NVMe or virtio-blk); the path decides where accesses trap and what they cost.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from passthru.sim import Environment, Event

PathName = Literal["bare-metal", "passthrough", "emulated", "virtio-blk"]
Op = Literal["read", "write", "flush"]


# Immutable records made once per I/O: a NamedTuple builds in about a third of the time of a
# frozen dataclass (which pays an object.__setattr__ per field).
class IoRequest(NamedTuple):
    op: Op
    lba: int  # in logical blocks of the path's `block_size`
    nblocks: int
    data: bytes | None = None  # for writes: exactly nblocks * block_size bytes


class IoCompletion(NamedTuple):
    status: int  # 0 = success (NVMe SC / virtio-blk VIRTIO_BLK_S_OK)
    submit_ns: int
    complete_ns: int
    data: bytes | None = None  # for reads: what the guest found in its buffer

    @property
    def latency_ns(self) -> int:
        return self.complete_ns - self.submit_ns


@dataclass(slots=True)
class PathCounters:
    """Monotonic counters a path keeps; the workload differences them over a run."""

    ios: int = 0
    vm_exits: int = 0
    interrupts: int = 0
    host_cpu_ns: int = 0  # CPU time the host spends on the guest's behalf (exits, emulation,
    # backend syscalls, iothread polling) plus guest driver time on its vCPU
    iotlb_hits: int = 0
    iotlb_misses: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    cpu_busy_ns: dict[str, int] = field(default_factory=dict)  # work booked per CPU (name ->
    # ns) on every CPU the path runs on (vCPUs, host cores, device model threads)


class IoPath(Protocol):
    name: PathName
    env: Environment
    block_size: int  # bytes per logical block
    max_queue_depth: int  # the deepest queue the device/driver pair accepts

    def start(self) -> Generator[Any, Any, None]:
        """A sim process body: bring the device up through the guest driver."""
        ...

    def submit(self, req: IoRequest) -> Event:
        """Issue one I/O; the event succeeds with an IoCompletion. Up to `max_queue_depth`
        may be outstanding at once."""
        ...

    def counters(self) -> PathCounters: ...
