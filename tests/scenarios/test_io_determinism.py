"""A run is a pure function of its configuration and seed, on every I/O path."""

from __future__ import annotations

import pytest

from passthru.hv.backends.nvme_paths import PathConfig, build_path
from passthru.hw.devices.nvme.namespace import PRESETS
from passthru.scenarios.fio import FioJob, run_fio

PATHS = ["bare-metal", "passthrough", "emulated", "virtio-blk"]


def _run(path: str, seed: int):  # type: ignore[no-untyped-def]
    p = build_path(path, PathConfig(PRESETS["nand"], queue_depth=8, seed=seed))
    res = run_fio(p, FioJob(rw="randrw", iodepth=8, ios=300, seed=seed))
    return list(res.latencies_ns), res.iops, res.exits_per_io, res.cpu_us_per_io


@pytest.mark.parametrize("path", PATHS)
def test_one_seed_gives_identical_runs_and_another_seed_differs(path):
    first, again, other = _run(path, 3), _run(path, 3), _run(path, 4)
    assert first == again
    assert first[0] != other[0]  # the media jitter and the workload draw from the seed
