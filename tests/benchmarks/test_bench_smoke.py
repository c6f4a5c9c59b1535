"""The benchmarks' own checks run (small sizes): the M/M/1 benchmark exits 1 when the two
kernels' per-customer waits differ, so this keeps that equivalence under test; the NVMe
benchmark prints its machine-yardstick line."""

from __future__ import annotations

import re
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
    path_line, yard_line = out.stdout.splitlines()
    per_cpu = float(re.search(r"([\d,]+) per CPU second", path_line)[1].replace(",", ""))
    ratio = float(re.search(r"; ([\d.]+) x SimPy;", path_line)[1])
    simpy = float(re.search(r"SimPy M/M/1 ([\d,]+) customers", yard_line)[1].replace(",", ""))
    # The printed ratio is the path's I/Os per CPU second over SimPy's customers per second.
    assert abs(ratio - per_cpu / simpy) <= 0.0006 + 0.001 * ratio
    assert "the goal reads 0.309 x SimPy" in yard_line


def test_bench_nvme_run_only_is_one_quiet_run() -> None:
    # What --instructions runs under callgrind (twice, at two lengths): no output, exit 0.
    out = subprocess.run([sys.executable, str(BENCH / "bench_nvme.py"), "--run-only", "50",
                          "--path", "bare-metal"], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_bench_nvme_profile_needs_the_pure_modules() -> None:
    import passthru.sim.kernel

    out = subprocess.run([sys.executable, str(BENCH / "bench_nvme.py"), "--profile", "--ios",
                          "300", "--rounds", "1", "--yardstick", "0", "--top", "3"],
                         capture_output=True, text=True, timeout=120)
    if passthru.sim.kernel.__file__.endswith(".py"):  # pure install: the layer table
        assert out.returncode == 0, out.stderr
        assert "own time by layer:" in out.stdout and "sim kernel" in out.stdout
    else:  # compiled: cProfile would see nothing, so one line and exit 2, before any run
        assert (out.returncode, out.stdout) == (2, "")
        assert out.stderr.startswith("bench_nvme: --profile needs the pure-Python modules")
