"""The benchmarks' own checks run (small sizes): the M/M/1 benchmark exits 1 when the two
kernels' per-customer waits differ, so this keeps that equivalence under test; the NVMe
benchmark prints its machine-yardstick line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    import passthru

    out = subprocess.run([sys.executable, str(BENCH / "bench_nvme.py"), "--profile", "--ios",
                          "300", "--rounds", "1", "--yardstick", "0", "--top", "3"],
                         capture_output=True, text=True, timeout=120)
    if not passthru.is_compiled():  # pure install: the layer table
        assert out.returncode == 0, out.stderr
        assert "own time by layer:" in out.stdout and "sim kernel" in out.stdout
    else:  # compiled: cProfile would see nothing, so one line and exit 2, before any run
        assert (out.returncode, out.stdout) == (2, "")
        assert out.stderr.startswith("bench_nvme: --profile needs the pure-Python modules")


def _bench_nvme():
    sys.path.insert(0, str(BENCH))  # bench_nvme imports bench_sim by its bare name
    try:
        import bench_nvme
    finally:
        sys.path.remove(str(BENCH))
    return bench_nvme


def _cache_index(root: Path, name: str, level: str, kind: str, size: str, ways: str) -> None:
    d = root / name
    d.mkdir()
    for field, value in (("level", level), ("type", kind), ("size", size),
                         ("ways_of_associativity", ways), ("coherency_line_size", "64")):
        (d / field).write_text(value + "\n")


def test_cache_geometry_reads_l1i_l1d_l2_from_sysfs(tmp_path: Path) -> None:
    bench = _bench_nvme()
    _cache_index(tmp_path, "index0", "1", "Data", "48K", "12")
    _cache_index(tmp_path, "index1", "1", "Instruction", "32K", "8")
    _cache_index(tmp_path, "index2", "2", "Unified", "2048K", "16")
    _cache_index(tmp_path, "index3", "3", "Unified", "32768K", "16")
    assert bench.cache_geometry(tmp_path) == [
        "--I1=32768,8,64", "--D1=49152,12,64", "--LL=2097152,16,64"]
    # No L2 described (or no sysfs at all): valgrind probes the caches itself.
    for f in (tmp_path / "index2").iterdir():
        f.unlink()
    assert bench.cache_geometry(tmp_path) == []
    assert bench.cache_geometry(tmp_path / "absent") == []


def test_cachegrind_counts_reads_the_summary(tmp_path: Path) -> None:
    bench = _bench_nvme()
    out = tmp_path / "cachegrind.out"
    out.write_text("desc: I1 cache: 32768 B, 64 B, 8-way associative\ncmd: python x\n"
                   "events: Ir I1mr ILmr \nfl=a.c\nfn=main\n1 5 1 0\n"
                   "summary: 1200 34 5\n")
    assert bench.cachegrind_counts(str(out)) == {"Ir": 1200, "I1mr": 34, "ILmr": 5}
    out.write_text("events: Ir\n")
    with pytest.raises(SystemExit, match="is not a cachegrind output file"):
        bench.cachegrind_counts(str(out))
