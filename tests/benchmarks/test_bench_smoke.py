"""The benchmarks' own checks run (small sizes): the M/M/1 benchmark exits 1 when the two
kernels' per-customer waits differ, so this keeps that equivalence under test; the NVMe
benchmark prints its machine-yardstick line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_sim_waits_identical_to_simpy() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_sim.py"), "3000", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("per-customer waits identical: yes") == 3


def test_bench_nvme_reports_the_yardstick_ratio() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_nvme.py"), "--ios", "300",
                          "--rounds", "1", "--yardstick", "500"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("passthrough  QD32:") and " x SimPy; " in lines[0]
    assert lines[1].startswith("yardstick: SimPy M/M/1 ") and "0.309 x SimPy" in lines[1]


def test_bench_nvme_run_only_is_one_quiet_run() -> None:
    # What --instructions runs under callgrind (twice, at two lengths): no output, exit 0.
    out = subprocess.run([sys.executable, str(BENCH / "bench_nvme.py"), "--run-only", "50",
                          "--path", "bare-metal"], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
