"""Namespace: sparse storage, presets, and IOPS that scale with queue depth to a limit."""

from __future__ import annotations

import random

import pytest

from passthru.errors import ConfigError
from passthru.hw.devices.nvme.namespace import PRESETS, Namespace, media_profile


def test_sparse_store_of_any_size():
    ns = Namespace(PRESETS["nand"], 1 << 50, random.Random(0))  # 1 PiB, nothing allocated
    assert ns.read(ns.nsze - 8, 8) == bytes(8 * 512)
    data = bytes(range(256)) * 4
    ns.write(ns.nsze - 2, data)
    assert ns.read(ns.nsze - 2, 2) == data and len(ns.blocks) == 2
    ns.write(ns.nsze - 2, bytes(1024))  # zeros deallocate
    assert not ns.blocks
    assert ns.in_range(0, 1) and not ns.in_range(ns.nsze - 1, 2)


def test_presets_latency_at_qd1():
    for name, lo, hi in (("nand", 70_000, 95_000), ("optane", 8_000, 14_000)):
        ns = Namespace(PRESETS[name], 1 << 30, random.Random(1))
        lats = sorted(ns.service(i * 1_000_000, 2, 4096) for i in range(1000))
        assert lo <= lats[500] <= hi, name


@pytest.mark.parametrize("name", ["nand", "optane"])
def test_iops_scale_with_queue_depth_up_to_the_device_limit(name):
    """Closed loop of `qd` commands: throughput grows with qd, then saturates."""
    p = PRESETS[name]

    def iops(qd: int) -> float:
        ns = Namespace(p, 1 << 30, random.Random(2))
        import heapq
        inflight = [ns.service(0, 2, 4096) for _ in range(qd)]
        heapq.heapify(inflight)
        done = 0
        now = 0
        while done < 4000:
            now = heapq.heappop(inflight)
            done += 1
            heapq.heappush(inflight, now + ns.service(now, 2, 4096))
        return done / now * 1e9

    i1, i4, i32, i256 = iops(1), iops(4), iops(32), iops(256)
    assert 3.5 < i4 / i1 < 4.2
    assert i32 > i4
    limit = min(p.parallelism * 1e9 / (p.read_ns * 0.9), p.bandwidth / 4096)
    assert i256 <= limit * 1.05
    assert i256 >= 0.8 * limit


def test_unknown_preset_and_bad_profile():
    with pytest.raises(ConfigError, match="'floppy' does not exist"):
        media_profile("floppy")
    with pytest.raises(ConfigError, match="lba_size"):
        PRESETS["nand"].with_(lba_size=1000)
    with pytest.raises(ConfigError, match="nand.speed is not a device parameter"):
        PRESETS["nand"].with_(speed=1)


def test_save_restore_and_reset_timing():
    ns = Namespace(PRESETS["optane"], 1 << 30, random.Random(4))
    ns.write(3, bytes([7]) * 512)
    ns.service(0, 2, 4096)
    state = ns.save()
    a = [ns.service(1000 * i, 2, 4096) for i in range(20)]
    ns2 = Namespace(PRESETS["optane"], 1 << 30, random.Random(0))
    ns2.load(state)
    assert [ns2.service(1000 * i, 2, 4096) for i in range(20)] == a
    assert ns2.read(3, 1) == bytes([7]) * 512
    ns2.reset_timing()
    assert ns2._link == [] and set(ns2._units) == {0}


class _Draws:
    """A stand-in for the media stream: ``random()`` returns the given draws, then 0.5."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.5


def test_a_burst_waits_for_the_link_or_a_unit_not_both():
    """32 reads at one instant on 8 units: access and transfer are pipelined, so the last
    one completes when the link has moved 32 blocks after the first access (link-bound),
    not after 4 rounds of access plus 31 queued transfers."""
    p = PRESETS["optane"].with_(jitter=0.0, tail_prob=0.0)
    ns = Namespace(p, 1 << 30, _Draws())
    lats = [ns.service(0, 2, 4096) for _ in range(32)]
    xfer = 4096 * 1_000_000_000 // p.bandwidth
    assert max(lats) == p.read_ns + 32 * xfer + p.overhead_ns
    assert lats == sorted(lats)  # one transfer at a time, in the order the data is ready


def test_a_slow_access_does_not_hold_up_the_link():
    p = PRESETS["optane"].with_(jitter=0.0, tail_prob=0.5, tail_factor=4)
    ns = Namespace(p, 1 << 30, _Draws(0.0, 0.9))  # a tail access, then a normal one
    xfer = 4096 * 1_000_000_000 // p.bandwidth
    slow, fast = ns.service(0, 2, 4096), ns.service(0, 2, 4096)
    assert slow == 4 * p.read_ns + xfer + p.overhead_ns
    assert fast == p.read_ns + xfer + p.overhead_ns
