"""Host memory benchmark: bandwidth and integer access rate of a sparse 1 TiB HostMemory.

A 1 TiB ``HostMemory`` gets a working set (default 256 MiB, placed near the top of the
address space) written once; that first-touch write, which pays the kernel's page faults, is
its own row. Then reads and writes of 4 KiB and 1 MiB at random addresses inside the working
set, naturally aligned or at any byte offset, and ``read_u64``/``write_u64`` at random
8-byte-aligned addresses (the IOMMU table-walk path), and the whole-memory ``digest()``,
``save_state()`` and ``load_state()`` over the working set. Each figure includes the Python call
and loop overhead a caller pays, which is the point for 4 KiB transfers and u64 accesses.

    python benchmarks/bench_memory.py                 # 256 MiB working set
    python benchmarks/bench_memory.py --working-set-mib 64 --repeat 5 --seed 3
    python benchmarks/bench_memory.py --quick         # smoke run

Times are CPU time of this process (kernel page-fault time included), best of ``--repeat``
runs, so that load from other processes on the machine does not skew the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from passthru.hw.memory import HostMemory

TIB = 1 << 40
MIB = 1 << 20
KIB = 1 << 10


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except OSError:
        return float("nan")


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return max(best, 1e-9)


def _addresses(
    rng: random.Random, base: int, span: int, xfer: int, n: int, aligned: bool
) -> list[int]:
    if aligned:
        return [base + rng.randrange(span // xfer) * xfer for _ in range(n)]
    return [base + rng.randrange(span - xfer) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--working-set-mib", type=int, default=256)
    ap.add_argument("--bytes-mib", type=int, default=512, help="bytes moved per bandwidth row")
    ap.add_argument("--int-ops", type=int, default=1_000_000, help="u64 accesses per row")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = ap.parse_args()
    if args.quick:
        args.working_set_mib, args.bytes_mib, args.int_ops, args.repeat = 16, 16, 20_000, 1

    rng = random.Random(args.seed)
    span = args.working_set_mib * MIB
    base = TIB - span - 3 * MIB  # near the top: nothing below it is ever touched
    rss0 = _rss_mib()
    mem = HostMemory(TIB)
    rows: list[tuple[str, str, str, float, float]] = []  # op, size, alignment, GB/s, us/op

    pattern = bytes(rng.getrandbits(8) for _ in range(MIB))
    t0 = time.process_time()
    for a in range(base, base + span, MIB):
        mem.write(a, pattern)
    dt = max(time.process_time() - t0, 1e-9)
    rows.append(
        ("write, first touch", "1 MiB", "aligned", span / dt / 1e9, dt / (span // MIB) * 1e6)
    )

    for xfer, label in ((4 * KIB, "4 KiB"), (MIB, "1 MiB")):
        n = max(1, args.bytes_mib * MIB // xfer)
        data = pattern[:xfer]
        for aligned in (True, False):
            addrs = _addresses(rng, base, span, xfer, n, aligned)

            def do_read(addrs: list[int] = addrs, xfer: int = xfer, read=mem.read) -> None:
                for a in addrs:
                    read(a, xfer)

            def do_write(addrs: list[int] = addrs, data: bytes = data, write=mem.write) -> None:
                for a in addrs:
                    write(a, data)

            align = "aligned" if aligned else "unaligned"
            for op, fn in (("read", do_read), ("write", do_write)):
                dt = _best(fn, args.repeat)
                rows.append((op, label, align, n * xfer / dt / 1e9, dt / n * 1e6))

    int_addrs = _addresses(rng, base, span, 8, args.int_ops, True)
    values = [rng.getrandbits(64) for _ in range(len(int_addrs))]
    read_u64, write_u64 = mem.read_u64, mem.write_u64

    def do_read_u64() -> None:
        for a in int_addrs:
            read_u64(a)

    def do_write_u64() -> None:
        for a, v in zip(int_addrs, values, strict=True):
            write_u64(a, v)

    int_rows = []
    for op, int_fn in (("read_u64", do_read_u64), ("write_u64", do_write_u64)):
        dt = _best(int_fn, args.repeat)
        int_rows.append((op, len(int_addrs) / dt / 1e6, dt / len(int_addrs) * 1e9))

    # Whole-memory operations over the working set (determinism checks, migration).
    saved = mem.save_state()

    def do_load_state() -> None:
        HostMemory(TIB).load_state(saved)

    state_rows = []
    for op, whole_fn in (
        ("digest()", mem.digest),
        ("save_state()", mem.save_state),
        ("load_state()", do_load_state),
    ):
        dt = _best(whole_fn, 1)
        state_rows.append((op, mem.touched_bytes() / dt / 1e9, dt * 1e3))

    print(
        f"HostMemory(size={TIB:#x}), working set {args.working_set_mib} MiB at {base:#x}, "
        f"best of {args.repeat}, CPU time"
    )
    print(f"{'operation':<20} {'size':>6} {'alignment':>10} {'GB/s':>8} {'us/op':>8}")
    for op, size, align, gbs, us in rows:
        print(f"{op:<20} {size:>6} {align:>10} {gbs:8.2f} {us:8.2f}")
    print(f"\n{'operation':<20} {'Mops/s':>8} {'ns/op':>8}")
    for op, mops, ns in int_rows:
        print(f"{op:<20} {mops:8.2f} {ns:8.0f}")
    print(f"\n{'operation':<20} {'GB/s':>8} {'ms':>8}   (over the working set)")
    for op, gbs, ms in state_rows:
        print(f"{op:<20} {gbs:8.2f} {ms:8.1f}")
    print(
        f"\ntouched_bytes = {mem.touched_bytes() / MIB:.1f} MiB of {TIB // (1 << 30)} GiB; "
        f"process RSS grew {_rss_mib() - rss0:.1f} MiB"
    )


if __name__ == "__main__":
    main()
