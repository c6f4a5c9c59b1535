"""A fio-like workload over any :class:`~passthru.scenarios.io_path.IoPath`, and its statistics.

What is modelled
    fio's job options that matter for a block path: ``rw`` (read, write, randread,
    randwrite, rw/readwrite, randrw), ``bs``, ``iodepth``, ``numjobs``, ``rwmixread``, the
    region ``size`` and a stop condition (``ios`` in total, or ``runtime_ns``). Each job keeps
    ``iodepth`` I/Os in flight (fio's libaio/io_uring engines with ``iodepth_batch=1``): a
    completion immediately issues the job's next I/O. Random offsets are uniform over the
    job's region in ``bs`` units, drawn from the named stream ``fio/<job>`` of the run's seed.
    Written data is random bytes from the same stream; with ``verify`` every read of a block
    this run wrote (and that no write overlapped in flight) is compared with what was written
    (fio ``verify=`` in spirit; never-written blocks are not checked).

Results
    IOPS and bandwidth over the measured interval (first submission to last completion),
    completion latency mean/p50/p99/p99.9, and per I/O: VM exits, interrupts, host CPU time,
    plus the IOTLB hit rate of the path's DMA, all from the path's monotonic counters.
    ``cpu_util`` is the busiest CPU's work over the measured interval (1.0: that CPU never
    idled, so it bounds the IOPS: ``iops <= cpu_util * 1e6 / its us of work per I/O``).

Left out
    Think time, rate limiting, ramp time, zoned/zipf distributions, unaligned I/O, and
    fio's per-job reports (results are aggregated over jobs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from passthru.errors import ConfigError
from passthru.scenarios.io_path import IoCompletion, IoPath, IoRequest
from passthru.sim import Event, Streams

Rw = Literal["read", "write", "randread", "randwrite", "rw", "readwrite", "randrw"]
RW_MODES: Final = ("read", "write", "randread", "randwrite", "rw", "readwrite", "randrw")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FioJob:
    rw: str = "randread"
    bs: int = 4096
    iodepth: int = 1
    numjobs: int = 1
    ios: int | None = 1000  # total over all jobs
    runtime_ns: int | None = None
    rwmixread: int = 50
    size: int = 1 << 30  # the region the jobs address, from offset 0
    verify: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rw not in RW_MODES:
            raise ConfigError(f"rw = {self.rw!r} must be one of {', '.join(RW_MODES)}")
        for name in ("bs", "iodepth", "numjobs", "size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} = {v!r} must be a positive int")
        if not 0 <= self.rwmixread <= 100:
            raise ConfigError(f"rwmixread = {self.rwmixread} must be in 0..100")
        if self.ios is None and self.runtime_ns is None:
            raise ConfigError("ios or runtime_us: one stop condition is required")
        if self.ios is not None and self.ios < 1:
            raise ConfigError(f"ios = {self.ios} must be >= 1")
        if self.runtime_ns is not None and self.runtime_ns < 1:
            raise ConfigError(f"runtime_us = {self.runtime_ns / 1000} must be > 0")
        if self.size < self.bs * self.numjobs:
            raise ConfigError(f"size = {self.size} must hold at least one block of bs = "
                              f"{self.bs} per job")

    @property
    def read_fraction(self) -> float:
        if self.rw in ("read", "randread"):
            return 1.0
        if self.rw in ("write", "randwrite"):
            return 0.0
        return self.rwmixread / 100

    @property
    def random(self) -> bool:
        return self.rw.startswith("rand")


@dataclass
class FioResult:
    path: str
    device: str
    qd: int
    numjobs: int
    rw: str
    bs: int
    ios: int
    errors: int
    elapsed_ns: int
    iops: float
    bw_bytes_s: float
    lat_us: dict[str, float]
    exits_per_io: float
    irqs_per_io: float
    cpu_us_per_io: float
    iotlb_hit_rate: float | None
    verified: int
    verify_errors: int
    posted_interrupts: bool = True
    cpu_util: float | None = None  # the busiest CPU's busy fraction (None: no CPU reported)
    latencies_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64),
                                     repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "device": self.device, "qd": self.qd,
            "numjobs": self.numjobs, "rw": self.rw, "bs": self.bs,
            "posted_interrupts": self.posted_interrupts,
            "ios": self.ios, "errors": self.errors,
            "iops": round(self.iops, 1), "bw_mb_s": round(self.bw_bytes_s / 1e6, 2),
            "lat_us": {k: round(v, 3) for k, v in self.lat_us.items()},
            "exits_per_io": round(self.exits_per_io, 3),
            "irqs_per_io": round(self.irqs_per_io, 3),
            "cpu_us_per_io": round(self.cpu_us_per_io, 3),
            "cpu_util": None if self.cpu_util is None else round(self.cpu_util, 4),
            "iotlb_hit_rate": (None if self.iotlb_hit_rate is None
                               else round(self.iotlb_hit_rate, 4)),
            "verified": self.verified, "verify_errors": self.verify_errors,
        }


class _Run:
    """The state of one fio run (callbacks, no per-I/O processes)."""

    def __init__(self, path: IoPath, job: FioJob, progress: Progress | None) -> None:
        if job.bs % path.block_size:
            raise ConfigError(f"bs = {job.bs} is not a multiple of the LBA size "
                              f"{path.block_size}")
        if job.iodepth * job.numjobs > path.max_queue_depth:
            raise ConfigError(f"qd = {job.iodepth} x numjobs = {job.numjobs} exceeds the "
                              f"path's queue depth {path.max_queue_depth}")
        self.path, self.job, self.progress = path, job, progress
        self.env = path.env
        streams = Streams(job.seed)
        self.rngs = [streams.get(f"fio/{j}") for j in range(job.numjobs)]
        self.nblk = job.bs // path.block_size
        self.region_blocks = job.size // job.bs // job.numjobs  # per job, in bs units (>= 1)
        self.region_bits = self.region_blocks.bit_length()
        self.seq = [0] * job.numjobs
        self.issued = 0
        self.done = 0
        self.errors = 0
        self.lat: list[int] = []
        self.expected: dict[int, bytes] = {}
        self.inflight_w: dict[int, int] = {}
        self.tainted: set[int] = set()  # blocks read while a write to them was in flight
        self.verified = self.verify_errors = 0
        self.outstanding = 0
        self.finished = Event(self.env)
        self.deadline: int | None = None
        self.first_ns = 0
        self.last_ns = 0
        self.every = max(1, (job.ios or 1000) // 200)
        # The job is frozen: its derived properties are read once, not per I/O.
        self.random = job.random
        self.read_fraction = job.read_fraction

    def _more(self) -> bool:
        job = self.job
        if job.ios is not None and self.issued >= job.ios:
            return False
        return self.deadline is None or self.env.now < self.deadline

    def issue(self, j: int) -> None:
        job, rng = self.job, self.rngs[j]
        if self.random:
            # rng.randrange(n) inlined, the same draws (CPython random.py
            # _randbelow_with_getrandbits): randrange's argument checks cost a third of an I/O's
            # fio time.
            n, k = self.region_blocks, self.region_bits
            idx = rng.getrandbits(k)
            while idx >= n:
                idx = rng.getrandbits(k)
        else:
            idx = self.seq[j]
            self.seq[j] = idx + 1 if idx + 1 < self.region_blocks else 0
        block = j * self.region_blocks + idx
        frac = self.read_fraction
        is_read = frac == 1.0 or (frac > 0.0 and rng.random() < frac)
        lba = block * self.nblk
        if is_read:
            req = IoRequest("read", lba, self.nblk)
            if block in self.inflight_w:
                self.tainted.add(block)
        else:
            data = rng.randbytes(job.bs)
            req = IoRequest("write", lba, self.nblk, data)
            self.inflight_w[block] = self.inflight_w.get(block, 0) + 1
            if job.verify:
                self.expected[block] = data
        self.issued += 1
        self.outstanding += 1
        ev = self.path.submit(req)

        def done(e: Event, j: int = j, block: int = block, req: IoRequest = req) -> None:
            self.complete(e, j, block, req)

        ev.add_callback(done)

    def complete(self, ev: Event, j: int, block: int, req: IoRequest) -> None:
        comp: IoCompletion = ev.value
        self.outstanding -= 1
        self.done += 1
        self.lat.append(comp.complete_ns - comp.submit_ns)
        self.last_ns = comp.complete_ns
        if comp.status:
            self.errors += 1
        if req.op == "write":
            n = self.inflight_w[block] - 1
            if n:
                self.inflight_w[block] = n
            else:
                del self.inflight_w[block]
        elif self.job.verify and comp.status == 0:
            want = self.expected.get(block)
            if want is not None and block not in self.inflight_w:
                if block in self.tainted:
                    self.tainted.discard(block)
                else:
                    self.verified += 1
                    if comp.data != want:
                        self.verify_errors += 1
        if self.progress is not None and self.done % self.every == 0:
            self.progress(self.done, self.job.ios or 0)
        if self._more():
            self.issue(j)
        elif self.outstanding == 0 and not self.finished.triggered:
            self.finished.succeed()

    def body(self) -> Any:
        yield from self.path.start()
        self.c0 = self.path.counters()
        self.first_ns = self.env.now
        if self.job.runtime_ns is not None:
            self.deadline = self.env.now + self.job.runtime_ns
        for _ in range(self.job.iodepth):
            for j in range(self.job.numjobs):
                if self._more():
                    self.issue(j)
        if self.outstanding == 0 and not self.finished.triggered:
            self.finished.succeed()
        yield self.finished


def run_fio(path: IoPath, job: FioJob, *, device: str = "", progress: Progress | None = None,
            posted_interrupts: bool = True) -> FioResult:
    """Bring ``path`` up, run ``job`` on it to completion and summarise."""
    run = _Run(path, job, progress)
    proc = path.env.process(run.body())
    path.env.run(until=proc)
    c0, c1 = run.c0, path.counters()
    n = run.done
    elapsed = max(1, run.last_ns - run.first_ns)
    lat = np.asarray(run.lat, dtype=np.int64)
    if n:
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
        lat_us = {"mean": float(lat.mean()) / 1e3, "p50": float(p50) / 1e3,
                  "p99": float(p99) / 1e3, "p999": float(p999) / 1e3}
    else:
        lat_us = {"mean": 0.0, "p50": 0.0, "p99": 0.0, "p999": 0.0}
    per = 1 / n if n else 0.0
    busy = [ns - c0.cpu_busy_ns.get(name, 0) for name, ns in c1.cpu_busy_ns.items()]
    hits = c1.iotlb_hits - c0.iotlb_hits
    misses = c1.iotlb_misses - c0.iotlb_misses
    return FioResult(
        path=str(path.name), device=device, qd=job.iodepth, numjobs=job.numjobs, rw=job.rw,
        bs=job.bs, ios=n, errors=run.errors, elapsed_ns=elapsed,
        iops=n * 1e9 / elapsed, bw_bytes_s=n * job.bs * 1e9 / elapsed, lat_us=lat_us,
        exits_per_io=(c1.vm_exits - c0.vm_exits) * per,
        irqs_per_io=(c1.interrupts - c0.interrupts) * per,
        cpu_us_per_io=(c1.host_cpu_ns - c0.host_cpu_ns) * per / 1e3,
        iotlb_hit_rate=hits / (hits + misses) if hits + misses else None,
        verified=run.verified, verify_errors=run.verify_errors,
        posted_interrupts=posted_interrupts,
        cpu_util=max(busy) / elapsed if busy else None, latencies_ns=lat)
