"""Benchmark the NVMe passthrough path: simulated I/Os per wall-clock second at QD32.

Runs fio-like 4 KiB random reads at QD32 on the passthrough path (guest NVMe driver, VFIO
BAR mapping, controller model, DMA through the VT-d unit, posted MSI-X) and prints:

- simulated I/Os per second of wall time and of CPU time (``time.process_time``; other load
  on the machine skews it less), best of ``--rounds``; the goal is >= 50,000 per second;
- the same for bare metal and emulated NVMe, for comparison (``--all``);
- with ``--profile``, a cProfile summary of one round: the top entries by own time, and
  the share of wall time spent in each layer (sim kernel, guest driver, controller,
  IOMMU/platform, hypervisor); it needs the pure-Python modules (``PYTHONPATH=src`` or an
  editable install), as cProfile does not see compiled functions;
- a machine yardstick measured in the same run, interleaved with the rounds: SimPy's M/M/1
  customers per CPU second (``bench_sim.mm1_simpy``, the reference kernel the simulation is
  checked against), and each path's I/Os per second as a ratio of it. The earlier figures
  for the 50,000 goal (passthrough 46-51 k/s) came from a machine where SimPy ran about
  162,000 customers per second at N = 1e5, so the goal reads about 0.31 simulated I/Os per
  SimPy customer; the ratio is what to compare across machines, whose speeds differ by
  several times;
- with ``--instructions``, instead of timing: machine instructions, L1 instruction-cache
  misses and L2 instruction misses per simulated I/O, counted by ``valgrind --tool=cachegrind``
  over two runs of different lengths (their difference, so start-up cancels out), simulating
  this machine's L1i, L1d and L2 as sysfs describes them. The counts do not drift with the
  machine's load, so they show an optimisation's effect where wall time varies by tens of
  percent; the misses show what a compiled build's code footprint costs (a Cython build of
  the same modules ran 26% fewer instructions than pure Python yet no faster, for its
  misses). Not wall-clock figures: they leave out branch prediction and memory latency, and
  differ between Python builds.

Run: ``python benchmarks/bench_nvme.py [--ios 20000] [--rounds 3] [--profile] [--all]
[--yardstick 100000] [--instructions]`` (``--yardstick 0``: no SimPy run).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench_sim import _draws, mm1_simpy

import passthru
from passthru.hv.backends.nvme_paths import PathConfig, build_path
from passthru.hw.devices.nvme.namespace import PRESETS
from passthru.scenarios.fio import FioJob, run_fio
from passthru.scenarios.io_path import IoPath

LAYERS = [
    ("sim kernel", "passthru/sim/"),
    ("guest driver + kernel API", "passthru/guest/"),
    ("NVMe controller + namespace", "passthru/hw/devices/"),
    ("IOMMU + memory + fabric", "passthru/hw/"),
    ("hypervisor (host, vm, vfio, paths)", "passthru/hv/"),
    ("fio workload", "passthru/scenarios/"),
]


GOAL = 50_000
# SimPy's M/M/1 customers per CPU second (bench_sim, N = 1e5, draws in the model) on the
# machine of the earlier NVMe figures (passthrough 46-51 k I/Os per second there).
GOAL_MACHINE_SIMPY = 162_000
GOAL_RATIO = GOAL / GOAL_MACHINE_SIMPY


def workload(path_name: str, ios: int, qd: int) -> tuple[IoPath, FioJob]:
    """The measured run: 4 KiB random reads at ``qd`` on the NAND preset, seed 1."""
    path = build_path(path_name, PathConfig(PRESETS["nand"], queue_depth=qd))
    return path, FioJob(rw="randread", bs=4096, iodepth=qd, ios=ios, seed=1)


def one_round(path_name: str, ios: int, qd: int) -> tuple[float, float, float]:
    path, job = workload(path_name, ios, qd)
    gc.collect()  # the previous round's model is garbage: not this round's to collect
    w0, c0 = time.perf_counter(), time.process_time()
    res = run_fio(path, job)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return res.ios / wall, res.ios / cpu, res.iops


def yardstick(n: int) -> float:
    """SimPy's M/M/1 customers per CPU second (bench_sim's model, seed 1)."""
    draws = _draws(1)
    gc.collect()
    c0 = time.process_time()
    mm1_simpy(n, draws)
    return n / (time.process_time() - c0)


def profile(path_name: str, ios: int, qd: int, top: int) -> None:
    path, job = workload(path_name, ios, qd)
    prof = cProfile.Profile()
    prof.enable()
    run_fio(path, job)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    print("\n".join(buf.getvalue().splitlines()[:top + 12]))
    share: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        for name, marker in LAYERS:
            if marker in filename:
                share[name] += tottime
                break
        else:
            share["other (stdlib, builtins)"] += tottime
    print("own time by layer:")
    for name, t in sorted(share.items(), key=lambda kv: -kv[1]):
        print(f"  {name:38s} {100 * t / total:5.1f}%")


# Cache levels cachegrind simulates, by what Linux reports for CPU 0: (sysfs level, type).
_SIMULATED_CACHES = {"I1": ("1", "Instruction"), "D1": ("1", "Data"), "LL": ("2", "Unified")}


def cache_geometry(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> list[str]:
    """cachegrind's ``--I1/--D1/--LL=size,ways,line`` for this machine's L1i, L1d and L2, read
    from sysfs (valgrind's own CPUID probe can be wrong in a VM); ``[]`` if sysfs lacks one.
    L2 stands in for the last level: a miss there is what a bigger code footprint costs."""
    found: dict[tuple[str, str], str] = {}
    for index in sorted(sysfs.glob("index*")):
        try:
            level, kind, size, ways, line = (
                (index / f).read_text().strip() for f in
                ("level", "type", "size", "ways_of_associativity", "coherency_line_size"))
        except OSError:
            continue
        if size.endswith("K") and size[:-1].isdigit():
            found[(level, kind)] = f"{int(size[:-1]) * 1024},{ways},{line}"
    if any(key not in found for key in _SIMULATED_CACHES.values()):
        return []
    return [f"--{name}={found[key]}" for name, key in _SIMULATED_CACHES.items()]


def cachegrind_counts(out_file: str) -> dict[str, int]:
    """The program totals of a cachegrind output file, by event (``Ir``, ``I1mr``, ``ILmr``)."""
    text = Path(out_file).read_text()
    events = re.search(r"^events: (.+)$", text, re.M)
    summary = re.search(r"^summary: (.+)$", text, re.M)
    if events is None or summary is None:
        sys.exit(f"bench_nvme: {out_file} is not a cachegrind output file")
    return dict(zip(events[1].split(), map(int, summary[1].split()), strict=True))


def instructions(path_name: str, qd: int, short: int = 200,
                 long: int = 1_200) -> tuple[dict[str, int], str]:
    """Instructions, L1i misses and L2 instruction misses per simulated I/O: cachegrind's
    totals for ``long`` and ``short`` I/Os in fresh processes of this interpreter, their
    difference over ``long - short``; and the caches simulated."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("bench_nvme: --instructions needs valgrind (apt-get install valgrind)")
    geometry = cache_geometry()
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (short, long):
            out_file = str(Path(tmp) / f"cachegrind.{n}")
            subprocess.run(
                [valgrind, "--tool=cachegrind", "--cache-sim=yes", *geometry,
                 f"--cachegrind-out-file={out_file}", sys.executable, __file__,
                 "--run-only", str(n), "--path", path_name, "--qd", str(qd)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "PYTHONHASHSEED": "0"})  # same dict layouts every run
            totals.append(cachegrind_counts(out_file))
    per_io = {event: (totals[1][event] - totals[0][event]) // (long - short)
              for event in ("Ir", "I1mr", "ILmr")}
    return per_io, " ".join(geometry) or "valgrind's own cache probe"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ios", type=int, default=20_000)
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--all", action="store_true", help="also bare metal and emulated")
    ap.add_argument("--yardstick", type=int, default=100_000, metavar="N",
                    help="SimPy M/M/1 customers per yardstick run, one per round (0: none)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions and instruction-cache misses per simulated I/O "
                         "under cachegrind instead")
    ap.add_argument("--run-only", type=int, metavar="N", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="passthrough", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile and passthru.is_compiled():
        # cProfile sees only Python frames: a compiled install puts ~90% under "other".
        print("bench_nvme: --profile needs the pure-Python modules (cProfile does not see "
              "compiled ones): run it with PYTHONPATH=src, or after pip install -e .",
              file=sys.stderr)
        sys.exit(2)
    names = ["passthrough"] + (["bare-metal", "emulated"] if args.all else [])
    if args.run_only is not None:  # one untimed run: what --instructions counts
        run_fio(*workload(args.path, args.run_only, args.qd))
        return
    if args.instructions:
        for name in names:
            per_io, caches = instructions(name, args.qd)
            print(f"{name:12s} QD{args.qd}: {per_io['Ir']:,} instructions, {per_io['I1mr']:,} "
                  f"L1i misses, {per_io['ILmr']:,} L2 instruction misses per simulated I/O "
                  f"(cachegrind: {caches})")
        return
    simpy_rate = 0.0
    best: dict[str, tuple[float, float, float]] = {}
    for name in names:
        rounds = []
        for _ in range(args.rounds):  # interleaved, so a drift in machine speed hits both
            rounds.append(one_round(name, args.ios, args.qd))
            if args.yardstick:
                simpy_rate = max(simpy_rate, yardstick(args.yardstick))
        best[name] = (max(r[0] for r in rounds), max(r[1] for r in rounds), rounds[0][2])
    for name, (wall, cpu, iops) in best.items():
        ratio = f"; {cpu / simpy_rate:.3f} x SimPy" if simpy_rate else ""
        print(f"{name:12s} QD{args.qd}: {wall:9,.0f} simulated I/Os per wall second, "
              f"{cpu:9,.0f} per CPU second (goal >= {GOAL:,}){ratio}; "
              f"simulated device rate {iops:,.0f} IOPS")
    if simpy_rate:
        print(f"yardstick: SimPy M/M/1 {simpy_rate:,.0f} customers per CPU second (best of "
              f"{args.rounds * len(names)}); the goal reads {GOAL_RATIO:.3f} x SimPy "
              f"({GOAL:,} where SimPy ran {GOAL_MACHINE_SIMPY:,}), "
              f"{GOAL_RATIO * simpy_rate:,.0f} I/Os per second on this machine")
    if args.profile:
        profile("passthrough", min(args.ios, 10_000), args.qd, args.top)


if __name__ == "__main__":
    main()
