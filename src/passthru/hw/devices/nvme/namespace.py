"""An NVMe namespace: a sparse block store and a latency/bandwidth/parallelism media model.

What is modelled
    - Storage of any size: only written logical blocks take memory (a dict of LBA ->
      ``lba_size`` bytes); unwritten blocks read as zeros (deallocated blocks, NVM CS 3.2.3.2.1
      with DLFEAT reporting zeroes).
    - Service time of a command: a fixed controller overhead, a media access time (read,
      program or flush) on one of ``parallelism`` independent units (dies/channels), then the
      data transfer on a shared link of ``bandwidth`` bytes/s. A command waits for the
      earliest free unit, so IOPS grow with queue depth until the units (or the link) are
      saturated: the device's limit is about ``min(parallelism / access time, bandwidth /
      size)``. Access and transfer are pipelined: a command's data takes the first free
      link interval once its access is done (the link carries other commands' data during
      the access), so the limit does not depend on how bursty the arrivals are.
    - Jitter: each access time is scaled by a factor drawn from a named seeded stream, with a
      rare slow tail (``tail_prob``, ``tail_factor``) standing in for NAND read retries or
      garbage collection.

Presets (``PRESETS``)
    ``nand``: a TLC datacenter SSD, about 80 us 4 KiB random read at QD1 and ~16 us program
    into its SLC/DRAM write cache; 64 parallel units, 3.2 GB/s. Samsung PM9A3 / Intel P5510
    class data sheets quote 70-90 us 4 KiB QD1 read latency and ~0.8-1 M 4 KiB read IOPS.
    ``optane``: a 3D XPoint SSD (Intel Optane DC P4800X): about 10 us read and write with
    7-8 units (data sheet: 10 us typical latency, 550 K 4 KiB random read IOPS, 2.4 GB/s).

Left out
    FTL mapping and write amplification, garbage collection as a process, read disturb,
    power states, multiple namespaces per controller and namespace management.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_right
from dataclasses import dataclass, fields, replace
from itertools import islice
from operator import itemgetter
from typing import Any, Final

from passthru.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MediaProfile:
    """A device's timing and limits (integer ns, bytes, counts)."""

    name: str
    read_ns: int  # media access for one read (any size up to a page group)
    write_ns: int  # program into the write cache
    flush_ns: int  # a Flush with nothing dirty outside power-loss protected cache
    overhead_ns: int  # controller: SQE fetch, PRP walk, CQE post (PCIe round trips)
    parallelism: int  # independent units
    bandwidth: int  # bytes per second on the link
    lba_size: int = 512
    max_queue_entries: int = 1024  # CAP.MQES + 1
    max_io_queues: int = 64
    mdts: int = 5  # max data transfer = 2^MDTS pages (128 KiB)
    tail_prob: float = 0.01
    tail_factor: int = 4
    jitter: float = 0.1  # +- fraction of the access time, uniform
    enable_ns: int = 20_000  # CC.EN -> CSTS.RDY

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name":
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"device {self.name}.{f.name} = {v!r} must be a "
                                  "non-negative number")
        if self.lba_size not in (512, 1024, 2048, 4096):
            raise ConfigError(f"device {self.name}.lba_size = {self.lba_size} must be 512, "
                              "1024, 2048 or 4096")
        if self.parallelism < 1 or self.bandwidth < 1:
            raise ConfigError(f"device {self.name}: parallelism and bandwidth must be >= 1")
        if not 2 <= self.max_queue_entries <= 65536:
            raise ConfigError(f"device {self.name}.max_queue_entries = "
                              f"{self.max_queue_entries} must be in 2..65536")

    @property
    def max_queue_depth(self) -> int:
        """Commands one queue can hold (a full ring keeps one slot empty, 4.1.2)."""
        return self.max_queue_entries - 1

    def with_(self, **changes: Any) -> MediaProfile:
        names = {f.name for f in fields(self)}
        for k in changes:
            if k not in names:
                raise ConfigError(f"device {self.name}.{k} is not a device parameter")
        return replace(self, **changes)


PRESETS: dict[str, MediaProfile] = {
    "nand": MediaProfile("nand", read_ns=76_000, write_ns=16_000, flush_ns=2_000,
                         overhead_ns=2_000, parallelism=64, bandwidth=3_200_000_000),
    "optane": MediaProfile("optane", read_ns=8_000, write_ns=8_500, flush_ns=500,
                           overhead_ns=1_500, parallelism=8, bandwidth=2_400_000_000,
                           tail_prob=0.001, tail_factor=2, jitter=0.05),
}


def media_profile(name: str) -> MediaProfile:
    """A preset by name; ``ConfigError`` lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"device {name!r} does not exist (have: {', '.join(PRESETS)})"
                          ) from None


_end: Final = itemgetter(1)  # the end of a link reservation (start, end)


class Namespace:
    """Namespace 1 of a controller: sparse data and the timing model (see the module doc)."""

    def __init__(self, profile: MediaProfile, size_bytes: int, rng: random.Random) -> None:
        if size_bytes <= 0 or size_bytes % profile.lba_size:
            raise ConfigError(f"namespace size {size_bytes:#x} must be a positive multiple "
                              f"of the LBA size {profile.lba_size}")
        self.profile = profile
        self.lba_size = profile.lba_size
        self.lba_shift = profile.lba_size.bit_length() - 1
        self.nsze = size_bytes // profile.lba_size
        self.blocks: dict[int, bytes] = {}
        self.rng = rng
        self._units = [0] * profile.parallelism  # heap of the times each unit frees up
        self._link: list[tuple[int, int]] = []  # reserved link transfers [start, end), in order
        self._zero = bytes(self.lba_size)
        self.reads = self.writes = self.flushes = 0

    def __repr__(self) -> str:
        return (f"<Namespace {self.profile.name} {self.nsze} x {self.lba_size}B, "
                f"{len(self.blocks)} blocks written>")

    # ------------------------------------------------------------------ data
    def read(self, slba: int, nlb: int) -> bytes:
        if not self.blocks:
            return bytes(nlb * self.lba_size)  # nothing written yet: every block reads as zeros
        get, zero = self.blocks.get, self._zero
        if nlb == 1:
            return get(slba, zero)
        return b"".join([get(lba, zero) for lba in range(slba, slba + nlb)])

    def write(self, slba: int, data: bytes) -> None:
        n = self.lba_size
        blocks = self.blocks
        for i in range(len(data) // n):
            chunk = data[i * n:(i + 1) * n]
            lba = slba + i
            if chunk == self._zero:
                blocks.pop(lba, None)  # keep the store sparse
            else:
                blocks[lba] = chunk

    def in_range(self, slba: int, nlb: int) -> bool:
        return 0 <= slba and nlb >= 1 and slba + nlb <= self.nsze

    # ------------------------------------------------------------------ timing
    def service(self, now: int, op: int, nbytes: int) -> int:
        """The delay from ``now`` until a command (0 flush, 1 write, 2 read) completes."""
        p = self.profile
        access = p.read_ns if op == 2 else p.write_ns if op == 1 else p.flush_ns
        r = self.rng.random()
        if r < p.tail_prob:
            access *= p.tail_factor
        else:
            access = int(access * (1.0 + p.jitter * (2.0 * r - 1.0)))
        units = self._units
        start = units[0]
        if start < now:
            start = now
        done = start + access
        heapq.heapreplace(units, done)
        if nbytes:
            done = self._transfer(now, done, nbytes * 1_000_000_000 // p.bandwidth)
        if op == 2:
            self.reads += 1
        elif op == 1:
            self.writes += 1
        else:
            self.flushes += 1
        return done - now + p.overhead_ns

    def _transfer(self, now: int, ready: int, xfer: int) -> int:
        """Reserve ``xfer`` ns of link in the first free interval from ``ready`` (the end of
        the access); returns the end. Transfers never overlap, which caps throughput at
        ``bandwidth``, and a later command whose data is ready earlier goes first, so a slow
        (tail) access does not hold up the ones behind it."""
        link = self._link
        # Reservations never overlap and are kept in order, so their ends ascend as well:
        # the finished ones, and those ending by `ready`, are prefixes found by bisection.
        finished = bisect_right(link, now, key=_end)
        if finished:
            del link[:finished]
        t = ready
        i = bisect_right(link, ready, key=_end)
        for start, end in islice(link, i, None):
            if end > t:
                if start >= t + xfer:
                    break  # the gap before this transfer is long enough
                t = end
            i += 1
        link.insert(i, (t, t + xfer))
        return t + xfer

    # ------------------------------------------------------------------ state
    def reset_timing(self) -> None:
        self._units = [0] * self.profile.parallelism
        self._link = []

    def save(self) -> dict[str, Any]:
        return {"blocks": dict(self.blocks), "units": list(self._units),
                "link": list(self._link), "rng": self.rng.getstate(),
                "counts": (self.reads, self.writes, self.flushes)}

    def load(self, state: dict[str, Any]) -> None:
        self.blocks = dict(state["blocks"])
        self._units = list(state["units"])
        self._link = [(s, e) for s, e in state["link"]]
        self.rng.setstate(state["rng"])
        self.reads, self.writes, self.flushes = state["counts"]
