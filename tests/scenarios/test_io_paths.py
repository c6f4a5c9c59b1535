"""Every block path moves real bytes; the paths order as published measurements do."""

from __future__ import annotations

import pytest

from passthru.errors import ConfigError
from passthru.hv.backends.nvme_paths import PATHS, PathConfig, available_paths, build_path
from passthru.hv.costs import DEFAULT_COSTS
from passthru.hw.devices.nvme.namespace import PRESETS
from passthru.scenarios.fio import FioJob, run_fio
from passthru.scenarios.io_demo import parse_scenario, run_specs
from passthru.scenarios.io_path import IoRequest

NVME_PATHS = ["bare-metal", "passthrough", "emulated"]


ALL_PATHS = ["bare-metal", "passthrough", "emulated", "virtio-blk"]


def _paths():
    assert set(ALL_PATHS) <= set(available_paths())  # virtio-blk registers itself on import
    return ALL_PATHS


@pytest.mark.parametrize("name", _paths())
def test_data_read_equals_data_written(name):
    path = build_path(name, PathConfig(PRESETS["optane"], queue_depth=4))
    env, out = path.env, {}
    payloads = {lba: bytes([lba & 0xFF]) * 4096 + bytes(range(256)) * 16
                for lba in (0, 64, 1 << 20)}

    def prog():
        yield from path.start()
        for lba, data in payloads.items():
            c = yield path.submit(IoRequest("write", lba, len(data) // path.block_size, data))
            assert c.status == 0
        c = yield path.submit(IoRequest("flush", 0, 0))
        assert c.status == 0
        for lba, data in payloads.items():
            c = yield path.submit(IoRequest("read", lba, len(data) // path.block_size))
            out[lba] = c.data
        c = yield path.submit(IoRequest("read", 4096, 8))  # never written: zeros
        out["zero"] = c.data

    env.process(prog())
    env.run()
    for lba, data in payloads.items():
        assert out[lba] == data, lba
    assert out["zero"] == bytes(4096)


@pytest.mark.parametrize("name", _paths())
def test_mixed_workload_verifies_at_depth(name):
    path = build_path(name, PathConfig(PRESETS["nand"], queue_depth=8))
    r = run_fio(path, FioJob(rw="randrw", bs=4096, iodepth=8, ios=400, size=64 * 4096,
                             seed=3))
    assert r.ios == 400 and r.errors == 0
    assert r.verified > 20 and r.verify_errors == 0


def test_expected_shape_at_qd1():
    """bare metal >= passthrough > virtio-blk > emulated in IOPS; exits per I/O."""
    res = {}
    for name in _paths():
        for dev in ("optane", "nand"):
            path = build_path(name, PathConfig(PRESETS[dev], queue_depth=1, seed=5))
            res[name, dev] = run_fio(path, FioJob(iodepth=1, ios=300, seed=5))
    for dev in ("optane", "nand"):
        bm, pt, em = (res[p, dev] for p in NVME_PATHS)
        assert bm.iops >= pt.iops > em.iops
        assert pt.iops >= 0.97 * bm.iops  # within a few percent with posted interrupts
        assert pt.iops > res["virtio-blk", dev].iops > em.iops
        assert bm.exits_per_io == 0 and pt.exits_per_io == 0
        assert em.exits_per_io >= 2  # SQ tail + CQ head doorbells trap to the model
        assert pt.iotlb_hit_rate is not None and pt.iotlb_hit_rate > 0.99
        assert em.cpu_us_per_io > 3 * pt.cpu_us_per_io


def test_expected_shape_at_qd32():
    """At QD32 a CPU is the limit. Every CPU runs its work serially, so none is busy more
    than all of the time: IOPS <= 1e6 / (us of work per I/O on the busiest CPU). Bare metal
    (one core) and passthrough (one vCPU) are bound by the kernel's per-I/O work; virtio-blk's
    one iothread and the emulated controller's device-model thread serialize far more work
    per request, so they stay well below bare metal."""
    for dev in ("optane", "nand"):
        res = {}
        for name in _paths():
            path = build_path(name, PathConfig(PRESETS[dev], queue_depth=32, seed=5))
            res[name] = run_fio(path, FioJob(iodepth=32, ios=400, seed=5))
        for name, r in res.items():
            assert r.cpu_util is not None, name
            busiest_us = r.cpu_util * r.elapsed_ns / r.ios / 1e3  # its work per I/O
            assert r.iops <= 1e6 / busiest_us * 1.01, (dev, name)  # i.e. cpu_util <= 1.01
        bm, pt, em = (res[p] for p in NVME_PATHS)
        vb = res["virtio-blk"]
        c = DEFAULT_COSTS
        kernel_us = (c.syscall_ns + c.block_layer_submit_ns + c.nvme_driver_submit_ns
                     + c.nvme_driver_complete_ns + c.block_layer_complete_ns) / 1e3
        assert bm.iops <= 1e6 / kernel_us and pt.iops <= 1e6 / kernel_us, dev
        assert pt.iops == pytest.approx(bm.iops, rel=0.03), dev
        assert vb.iops < 0.8 * bm.iops and vb.lat_us["mean"] >= bm.lat_us["mean"], dev
        assert em.iops < 0.5 * bm.iops and em.iops <= vb.iops, dev
        assert vb.cpu_util > 0.9 and em.cpu_util > 0.95, dev  # bound by their one thread
        if dev == "optane":
            assert bm.cpu_util > 0.95  # the core, not the SSD, is the limit


def test_cpu_time_per_io_is_work_not_waiting():
    """Queueing for a busy CPU does not count as CPU time: the work per I/O at QD32 is at
    most what it is at QD1 (interrupts coalesce), although the latency grows."""
    for name in _paths():
        r = {qd: run_fio(build_path(name, PathConfig(PRESETS["optane"], queue_depth=qd,
                                                     seed=2)),
                         FioJob(iodepth=qd, ios=200, seed=2)) for qd in (1, 32)}
        assert r[32].cpu_us_per_io <= r[1].cpu_us_per_io * 1.001, name
        assert r[32].lat_us["mean"] > r[1].lat_us["mean"], name


def test_injected_interrupts_cost_exits_on_passthrough():
    posted = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=1))
    injected = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=1,
                                                   posted_interrupts=False))
    a = run_fio(posted, FioJob(iodepth=1, ios=100))
    b = run_fio(injected, FioJob(iodepth=1, ios=100))
    assert a.exits_per_io == 0 and b.exits_per_io == pytest.approx(2.0)  # inject + EOI
    assert b.lat_us["mean"] > a.lat_us["mean"]


def test_iops_scale_with_queue_depth_on_passthrough():
    iops = {}
    for qd in (1, 8):
        path = build_path("passthrough", PathConfig(PRESETS["nand"], queue_depth=qd))
        iops[qd] = run_fio(path, FioJob(iodepth=qd, ios=400)).iops
    assert iops[8] > 5 * iops[1]


def test_numjobs_use_one_queue_pair_each():
    path = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=4,
                                                io_queues=3))
    r = run_fio(path, FioJob(rw="randwrite", iodepth=4, numjobs=3, ios=120))
    assert r.ios == 120 and len(path.driver.queues) == 3
    assert sorted(q for q in path.ctrl.sqs if q) == [1, 2, 3]


def test_registry_and_errors():
    assert set(NVME_PATHS) <= set(PATHS)
    with pytest.raises(ConfigError, match="path 'floppy' does not exist"):
        build_path("floppy", PathConfig(PRESETS["nand"]))
    with pytest.raises(ConfigError, match="qd = 5000 exceeds the controller's limit 1023"):
        PathConfig(PRESETS["nand"], queue_depth=5000)


BAD = [
    ('device = "floppy"', "runs[0].device: device 'floppy' does not exist"),
    ("qd = 4096", "runs[0].qd = 4096 exceeds the controller's limit 1023"),
    ("bs = 1000", "runs[0].bs = 1000 is not a multiple of the LBA size 512"),
    ("colour = 1", 'runs[0].colour: unknown field'),
    ('rw = "sideways"', "runs[0].rw = 'sideways': must be one of"),
    ('path = "floppy"', "runs[0].path: path 'floppy' does not exist"),
]


@pytest.mark.parametrize("line,message", BAD)
def test_scenario_errors_name_the_field(line, message):
    key = line.split(" = ")[0]
    base = {"path": 'path = "passthrough"', "device": 'device = "nand"', "qd": "qd = 1",
            "bs": "bs = 4096", "rw": 'rw = "randread"'}
    base[key] = line
    text = "[[runs]]\nios = 10\n" + "\n".join(base.values()) + "\n"
    with pytest.raises(ConfigError) as exc:
        parse_scenario(text, "s.toml")
    assert str(exc.value).startswith("s.toml: ")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_scenario_costs_and_custom_device():
    text = """
seed = 2
[costs]
userspace_exit_ns = 20000
[devices.slow]
preset = "optane"
read_ns = 30000
[[runs]]
path = ["passthrough", "emulated"]
device = "slow"
ios = 50
"""
    specs = parse_scenario(text)
    assert [s.path for s in specs] == ["passthrough", "emulated"]
    assert specs[0].profile.read_ns == 30000 and specs[0].costs.userspace_exit_ns == 20000
    res = run_specs(specs)
    assert res[0].lat_us["p50"] > 30 and res[1].lat_us["mean"] > res[0].lat_us["mean"] + 20
    with pytest.raises(ConfigError, match="costs.vm_exit_usec is not a cost parameter"):
        parse_scenario("[costs]\nvm_exit_usec = 1\n[[runs]]\npath='passthrough'\nios=1\n")


def test_sequential_runtime_bounded_job():
    path = build_path("bare-metal", PathConfig(PRESETS["optane"], queue_depth=2))
    r = run_fio(path, FioJob(rw="write", iodepth=2, ios=None, runtime_ns=200_000,
                             size=1 << 20))
    assert 20 < r.ios < 60  # ~12 us per I/O, two in flight, for 200 us
    blocks = sorted(path.ctrl.media.ns.blocks)  # sequential from LBA 0, 8 blocks per I/O
    assert blocks[:16] == list(range(16))
    assert r.bw_bytes_s == pytest.approx(r.iops * 4096)


def test_progress_counts_ios_or_runs():
    seen: list[tuple[int, int]] = []
    specs = parse_scenario('[[runs]]\npath = ["bare-metal", "passthrough"]\nios = 20\n')
    run_specs(specs, lambda done, total, _label: seen.append((done, total)))
    assert seen[-1] == (40, 40) and all(total == 40 for _, total in seen)
    seen.clear()
    specs = parse_scenario('[[runs]]\npath = ["bare-metal", "passthrough"]\nruntime_us = 200\n')
    run_specs(specs, lambda done, total, _label: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]  # a time-bounded run has no I/O count to show
