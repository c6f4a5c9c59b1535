"""virtio-blk end to end: guest driver -> virtio-pci -> device model -> store, and back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pci_builders import switch_host

from passthru.errors import ConfigError, PassthruError
from passthru.hv.backends import virtio_blk as backend
from passthru.hv.backends.virtio_blk import VirtioBlkPath
from passthru.hv.host import Host
from passthru.hw.devices.nvme.namespace import media_profile
from passthru.hw.devices.virtio import COMMON_CFG, DEVICE_CFG, DeviceStatus, Feature, bit
from passthru.hw.devices.virtio.blk import CFG_BLK_SIZE, CFG_CAPACITY, BlkStatus, ReqType
from passthru.hw.devices.virtio.virtqueue import DescFlags
from passthru.scenarios.io_path import IoRequest

GiB = 1 << 30
MiB = 1 << 20


def make(notify="ioeventfd", *, seed=0, start=True, posted=False, **kw):
    host = Host(switch_host([None]), cores=2, memory_bytes=1 * GiB, seed=seed,
                posted_interrupts=posted)
    kw.setdefault("capacity_bytes", 64 * MiB)
    kw.setdefault("vm_memory_bytes", 32 * MiB)
    path = VirtioBlkPath(host, notify=notify, **kw)
    if start:
        host.env.process(path.start())
        host.env.run()
    return path


def run(path, reqs):
    """Issue ``reqs`` one after another from a workload process; return the completions."""
    out = []

    def proc():
        for r in reqs:
            out.append((yield path.submit(r)))

    path.env.process(proc())
    path.env.run()
    return out


def pattern(n, salt=0):
    return bytes((i * 7 + salt + i // 512) & 0xFF for i in range(n))


def test_start_negotiates_features_and_reads_the_config():
    p = make()
    drv = p.driver
    assert drv.capacity == 64 * MiB // 512
    assert drv.has(Feature.VIRTIO_F_VERSION_1) and drv.has(Feature.VIRTIO_F_INDIRECT_DESC)
    assert not drv.has(Feature.VIRTIO_F_EVENT_IDX)  # not asked for
    status = p.transport.read(COMMON_CFG + 0x14, 1)
    assert status == (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
                      | DeviceStatus.DRIVER_OK)
    assert p.transport.read(DEVICE_CFG + CFG_CAPACITY, 8) == drv.capacity
    assert p.transport.read(DEVICE_CFG + CFG_BLK_SIZE, 4) == 512
    cfg = p.device.config_bytes()
    assert struct.unpack_from("<QII", cfg, 0) == (drv.capacity, 1 << 20, 32)
    assert p.device.rings and p.device.rings[0].layout == drv.ring.layout


def test_features_ok_is_refused_for_a_feature_not_offered():
    p = make(start=False)
    t = p.transport
    t.write(0x14, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER, 1)
    t.write(0x08, 1, 4)
    t.write(0x0C, (bit(Feature.VIRTIO_F_VERSION_1) >> 32) | 1 << 3, 4)  # bit 35: unknown
    t.write(0x14, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK, 1)
    assert not t.read(0x14, 1) & DeviceStatus.FEATURES_OK


def test_transport_registers():
    p = make(start=False)
    t = p.transport
    assert t.read(0x12, 2) == 1  # num_queues
    t.write(0x20, 0x1234_5000, 4)  # queue_desc lo
    t.write(0x24, 0x1, 4)  # queue_desc hi
    assert t.read(0x20, 8) == 0x1_1234_5000 and t.read(0x24, 4) == 1
    t.write(0x18, 100, 2)  # not a power of two: ignored
    assert t.read(0x18, 2) == 128
    t.write(0x18, 256, 2)  # above the maximum: ignored
    assert t.read(0x18, 2) == 128
    t.write(0x18, 64, 2)
    assert t.read(0x18, 2) == 64
    t.write(0x1C, 1, 2)  # queue_enable: the queue's fields are now fixed
    t.write(0x18, 32, 2)
    assert t.read(0x18, 2) == 64
    t.write(0x14, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.DRIVER_OK, 1)
    assert t.read(0x14, 1) & DeviceStatus.DEVICE_NEEDS_RESET  # DRIVER_OK w/o FEATURES_OK
    t.signal_used(0)
    assert t.read(0x1000, 1) == 1 and t.read(0x1000, 1) == 0  # ISR: read to clear
    t.write(0x14, 0, 1)
    assert t.read(0x14, 1) == 0 and t.read(0x1C, 2) == 0 and t.read(0x20, 8) == 0


@pytest.mark.parametrize("notify", ["userspace", "ioeventfd", "poll"])
def test_data_read_equals_data_written_across_sectors_and_chains(notify):
    p = make(notify)
    a, b = pattern(24 * 512, 1), pattern(3 * 512, 2)  # a: 3 pages -> 5-descriptor chain
    done = run(p, [IoRequest("write", 7, 24, a), IoRequest("write", 20, 3, b),
                   IoRequest("read", 7, 24), IoRequest("read", 0, 8), IoRequest("flush", 0, 0)])
    assert [c.status for c in done] == [0] * 5
    assert done[2].data == a[:13 * 512] + b + a[16 * 512:]
    assert done[3].data == bytes(512 * 7) + a[:512]
    assert all(c.latency_ns > 0 for c in done)
    assert p.counters().ios == 5


def test_ring_bytes_in_guest_memory_decode_per_spec():
    p = make()
    vm, lay = p.vm, p.driver.ring.layout
    data = pattern(2 * 4096 + 512, 5)
    run(p, [IoRequest("write", 100, 17, data), IoRequest("read", 100, 17)])
    avail_flags, avail_idx = struct.unpack("<HH", vm.read(lay.avail, 4))
    assert (avail_flags, avail_idx) == (0, 2)
    heads = struct.unpack("<HH", vm.read(lay.avail + 4, 4))
    used_flags, used_idx = struct.unpack("<HH", vm.read(lay.used, 4))
    assert used_idx == 2 and used_flags == 0  # notifications re-enabled after the drain
    elems = [struct.unpack("<II", vm.read(lay.used + 4 + 8 * i, 8)) for i in range(2)]
    assert [e[0] for e in elems] == list(heads)
    assert elems[0][1] == 1 and elems[1][1] == len(data) + 1  # status only / data + status
    # the read's ring descriptor points at an indirect table of 1 + 3 + 1 descriptors
    addr, length, flags, _ = struct.unpack("<QIHH", vm.read(lay.desc + 16 * heads[1], 16))
    assert flags == DescFlags.INDIRECT and length == 16 * 5
    table = [struct.unpack("<QIHH", vm.read(addr + 16 * i, 16)) for i in range(5)]
    hdr = struct.unpack("<IIQ", vm.read(table[0][0], table[0][1]))
    assert hdr == (ReqType.VIRTIO_BLK_T_IN, 0, 100)
    assert [t[2] for t in table] == [DescFlags.NEXT] + [DescFlags.NEXT | DescFlags.WRITE] * 3 \
        + [DescFlags.WRITE]
    assert [t[1] for t in table[1:]] == [4096, 4096, 512, 1]
    assert b"".join(vm.read(t[0], t[1]) for t in table[1:4]) == data
    assert vm.read(table[4][0], 1) == bytes([BlkStatus.VIRTIO_BLK_S_OK])


def steady_writes(notify, n=6):
    """One warm-up write (an idle poller sleeps, so it is kicked), then ``n`` back to back."""
    p = make(notify, seed=3)
    counts = []

    def proc():
        yield p.submit(IoRequest("write", 0, 8, pattern(4096)))
        counts.append(p.counters())
        for i in range(n):
            c = yield p.submit(IoRequest("write", 8 * i, 8, pattern(4096, i)))
            assert c.status == 0
        counts.append(p.counters())

    p.env.process(proc())
    p.env.run()
    return p, counts[0], counts[1]


def test_notification_options_change_exits_and_cost():
    _, b_us, a_us = steady_writes("userspace")
    _, b_io, a_io = steady_writes("ioeventfd")
    p_poll, b_po, a_po = steady_writes("poll")
    for b, a in ((b_us, a_us), (b_io, a_io)):
        assert a.extra["notify_exits"] - b.extra["notify_exits"] == 6
        assert a.vm_exits - b.vm_exits == 6 * 3  # notify, injection, EOI per request
    us_cost = (a_us.host_cpu_ns - b_us.host_cpu_ns)
    io_cost = (a_io.host_cpu_ns - b_io.host_cpu_ns)
    assert us_cost > io_cost
    assert p_poll.vm.stats.exit_ns  # sanity
    # polling: the guest never kicks, the poller's time is host CPU
    assert a_po.extra["notify_exits"] - b_po.extra["notify_exits"] == 0
    assert a_po.extra["kicks_suppressed"] - b_po.extra["kicks_suppressed"] == 6
    assert a_po.vm_exits - b_po.vm_exits == 6 * 2
    poll = a_po.extra["poll_ns"] - b_po.extra["poll_ns"]
    assert poll > 0
    assert a_po.host_cpu_ns - b_po.host_cpu_ns >= poll
    assert a_io.extra["iothread_wakeups"] - b_io.extra["iothread_wakeups"] == 6
    assert a_po.extra["iothread_wakeups"] == b_po.extra["iothread_wakeups"]


@pytest.mark.parametrize("indirect", [True, False])
def test_queue_depth_up_to_the_queue_size(indirect):
    # Writes slow enough that all 16 are in flight before the first completes: the iothread
    # submits them one at a time.
    slow = media_profile("nand").with_(write_ns=500_000)
    p = make(queue_size=16, indirect=indirect, device=slow)
    assert p.max_queue_depth == (16 if indirect else 5)
    reqs = [IoRequest("write", 8 * i, 8, pattern(4096, i)) for i in range(16)]
    events = [p.submit(r) for r in reqs]
    p.env.run()
    assert all(e.value.status == 0 for e in events)
    if indirect:
        assert p.peak_inflight == 16
    if indirect:
        got = run(p, [IoRequest("read", 0, 128)])  # 18 buffers in one indirect table
    else:
        with pytest.raises(ConfigError, match="nblocks"):
            p.submit(IoRequest("read", 0, 128))  # 18 descriptors > a 16-entry ring
        got = run(p, [IoRequest("read", 8 * i, 8) for i in range(16)])
    assert b"".join(c.data for c in got) == b"".join(r.data for r in reqs)


def test_event_idx_moves_data_and_suppresses_interrupts():
    p = make(event_idx=True, queue_size=16)
    assert p.driver.has(Feature.VIRTIO_F_EVENT_IDX)
    events = [p.submit(IoRequest("write", 8 * i, 8, pattern(4096, i))) for i in range(16)]
    p.env.run()
    assert all(e.value.status == 0 for e in events)
    assert p.counters().interrupts <= 16
    assert run(p, [IoRequest("read", 8, 8)])[0].data == pattern(4096, 1)


def test_errors_are_status_bytes():
    p = make()
    cap = p.driver.capacity
    done = run(p, [IoRequest("read", cap - 4, 8)])
    assert done[0].status == BlkStatus.VIRTIO_BLK_S_IOERR

    def proc(g=p.driver):
        r1 = yield from g.submit(ReqType.VIRTIO_BLK_T_GET_ID, 0, nbytes=20)
        r2 = yield from g.submit(99, 0, nbytes=512)
        return r1, r2

    pr = p.env.process(proc())
    p.env.run()
    ident, unsupported = pr.value
    assert ident.status == 0 and ident.data.rstrip(b"\0") == b"passthru"
    assert unsupported.status == BlkStatus.VIRTIO_BLK_S_UNSUPP
    with pytest.raises(ConfigError, match="nblocks"):
        p.submit(IoRequest("read", 0, 1024))
    with pytest.raises(ConfigError, match="data"):
        p.submit(IoRequest("write", 0, 1, b"x"))


def test_device_reset_restores_initial_registers_and_the_driver_can_reprobe():
    p = make()
    run(p, [IoRequest("write", 0, 8, pattern(4096, 9))])
    t = p.transport
    p.env.process(p.driver.reset())
    p.env.run()
    assert t.read(0x14, 1) == 0  # device_status
    assert t.read(0x0C, 4) == 0  # driver_feature
    assert t.read(0x1C, 2) == 0  # queue_enable
    assert t.read(0x20, 8) == 0  # queue_desc
    assert t.read(0x18, 2) == 16 or t.read(0x18, 2) == p.device.max_queue_size
    assert not p.device.state.activated and p.device.rings == []
    p.env.process(p.driver.probe())
    p.env.run()
    done = run(p, [IoRequest("read", 0, 8)])
    assert done[0].data == pattern(4096, 9)  # the disk survives a device reset


def test_save_restore_round_trip():
    p = make(seed=1)
    run(p, [IoRequest("write", 16, 8, pattern(4096, 4))])
    state = p.save_state()
    q = make(seed=1, start=False)
    q.load_state(state)
    assert q.save_state() == state
    # the saved state is everything the device needs to carry on with the same guest
    p.transport.reset()
    assert p.device.rings == []
    p.load_state(state)
    done = run(p, [IoRequest("read", 16, 8), IoRequest("write", 0, 1, pattern(512))])
    assert done[0].data == pattern(4096, 4) and done[1].status == 0
    assert p.driver.ring.last_used_idx == 3


def test_save_refuses_with_requests_in_flight():
    p = make()
    p.submit(IoRequest("read", 0, 8))
    p.env.run(until=p.env.now + 20_000)
    assert p.inflight == 1
    with pytest.raises(PassthruError, match="in flight"):
        p.save_state()


def test_dma_goes_through_the_input_choke_point():
    p = make()
    seen = []
    p.vm.input_hooks.append(seen.append)
    data = pattern(4096, 3)
    run(p, [IoRequest("write", 0, 8, data), IoRequest("read", 0, 8)])
    dma = b"".join(r.data for r in seen if r.kind.value == "dma_write" and r.size == 4096)
    assert dma == data
    assert sum(r.kind.value == "interrupt" for r in seen) == 2


def workload(seed):
    p = make("poll", seed=seed, queue_size=8)
    reqs = [IoRequest("write", 8 * i, 8, pattern(4096, i)) for i in range(8)]
    reqs += [IoRequest("read", 4 * i, 8) for i in range(8)]
    events = [p.submit(r) for r in reqs]
    p.env.run()
    return [(e.value.status, e.value.submit_ns, e.value.complete_ns, e.value.data)
            for e in events], p.vm.digest(), p.counters()


def test_two_runs_with_one_seed_are_identical():
    a, b = workload(7), workload(7)
    assert a == b


def test_registered_as_virtio_blk_and_built_from_a_path_config():
    nvme_paths = pytest.importorskip("passthru.hv.backends.nvme_paths")
    from passthru.hw.devices.nvme.namespace import PRESETS

    assert "virtio-blk" in nvme_paths.available_paths()
    assert nvme_paths.PATHS["virtio-blk"] is backend.build_virtio_blk_path
    cfg = nvme_paths.PathConfig(device=PRESETS["optane"], queue_depth=4,
                                options={"notify": "poll"}, capacity_bytes=1 << 30)
    p = nvme_paths.build_path("virtio-blk", cfg)
    assert p.name == "virtio-blk" and p.max_queue_depth >= 4
    p.env.process(p.start())
    p.env.run()
    data = pattern(8192, 6)
    events = [p.submit(IoRequest("write", 64, 16, data))]
    p.env.run()
    events.append(p.submit(IoRequest("read", 64, 16)))
    p.env.run()
    assert [e.value.status for e in events] == [0, 0] and events[1].value.data == data
    assert p.counters().ios == 2
    with pytest.raises(ConfigError, match="option 'notfy'"):
        nvme_paths.build_path("virtio-blk", nvme_paths.PathConfig(
            device=PRESETS["nand"], options={"notfy": "poll"}))


def test_a_malformed_chain_breaks_the_device_and_is_recorded():
    p = make()
    ring = p.driver.ring
    lay = ring.layout
    vm = p.vm
    # the guest puts a looping chain 0 -> 1 -> 0 on the ring and kicks
    vm.write(lay.desc, struct.pack("<QIHH", 0x200000, 16, DescFlags.NEXT, 1)
             + struct.pack("<QIHH", 0x200000, 16, DescFlags.NEXT, 0))
    vm.write(lay.avail + 4, b"\0\0")
    vm.write(lay.avail + 2, b"\1\0")
    p.env.process(p.driver.g.mmio_write(p.driver.notify_addr, 0, 2))
    p.env.run()
    assert [e.reason for e in p.errors] == ["descriptor chain loops"]
    assert p.transport.read(0x14, 1) & DeviceStatus.DEVICE_NEEDS_RESET
    assert p.counters().extra["chain_errors"] == 1


def test_a_4k_logical_block_device():
    from passthru.hw.devices.nvme.namespace import PRESETS

    p = make(device=PRESETS["nand"].with_(lba_size=4096))
    assert p.block_size == 4096 and p.driver.blk_size == 4096
    assert p.driver.capacity == 64 * MiB // 512  # capacity stays in 512-byte sectors
    data = pattern(3 * 4096, 8)
    done = run(p, [IoRequest("write", 5, 3, data), IoRequest("read", 5, 3)])
    assert done[1].data == data

    def misaligned(g=p.driver):
        return (yield from g.read(41, 8))  # sector 41 is not 4 KiB aligned

    pr = p.env.process(misaligned())
    p.env.run()
    assert pr.value.status == BlkStatus.VIRTIO_BLK_S_IOERR


def test_bad_options_name_the_field():
    host = Host(switch_host([None]), cores=2, memory_bytes=1 * GiB)
    with pytest.raises(ConfigError, match="notify"):
        VirtioBlkPath(host, notify="irq")
    with pytest.raises(ConfigError, match="queue_size"):
        VirtioBlkPath(host, queue_size=12)


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 120), st.integers(1, 20),
                         st.integers(0, 255)), min_size=1, max_size=12)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_writes_and_reads_against_a_sector_oracle(seq):
    p = make(capacity_bytes=1 * MiB, max_io_bytes=16 * 1024)
    cap = p.driver.capacity
    oracle: dict[int, bytes] = {}
    reqs = []
    for is_write, lba, n, salt in seq:
        lba = lba % (cap - n)
        data = pattern(512 * n, salt) if is_write else None
        reqs.append(IoRequest("write" if is_write else "read", lba, n, data))
    done = run(p, reqs)
    for req, c in zip(reqs, done, strict=True):
        assert c.status == 0
        if req.op == "write":
            for i in range(req.nblocks):
                oracle[req.lba + i] = req.data[512 * i:512 * (i + 1)]
        else:
            want = b"".join(oracle.get(req.lba + i, bytes(512)) for i in range(req.nblocks))
            assert c.data == want
