"""The DMA port's route cache agrees with the full Host/fabric path (a differential test)."""

from __future__ import annotations

import random
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.hv.backends.nvme_paths import PathConfig, PciDmaPort, build_path
from passthru.hv.vm import InputKind
from passthru.hw.devices.nvme.namespace import PRESETS
from passthru.hw.devices.nvme.regs import MSIX_ENTRY, MSIX_TABLE
from passthru.hw.pci.regs import PCI_SUBORDINATE_BUS, AcsFlags
from passthru.hw.platform import DmaStatus


def _pair():
    path = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=2))
    host, fn, vm = path.host, path.port.fn, path.vm
    return host, fn, vm, PciDmaPort(host, fn), PciDmaPort(host, fn, route_cache=False)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, (64 << 20) - 1), st.integers(1, 9000), st.integers(0, 2**32))
def test_cached_route_equals_full_route(gpa, n, seed):
    host, fn, vm, fast, slow = _pair()
    assert fast._limit > 0 and slow._limit == 0
    gpa = gpa % (vm.memory_bytes + 8192)  # some requests fault past the end of guest RAM
    data = random.Random(seed).randbytes(n)
    seen = []
    vm.input_hooks.append(lambda r: seen.append((r.kind, r.gpa, r.data)))
    ok_fast = fast.write(gpa, data)
    ok_slow = slow.write(gpa, data)
    assert ok_fast == ok_slow
    assert fast.read(gpa, n) == slow.read(gpa, n)
    if ok_fast:
        assert vm.read(gpa, n) == data
        assert seen == [(InputKind.DMA_WRITE, gpa, data)] * 2
    else:
        assert fast.faults == slow.faults == 2


def test_msi_through_cached_route_reaches_the_guest():
    path = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=2))
    host, fn, vm = path.host, path.port.fn, path.vm
    addr, data = path.vfio.setup_msi(fn, 0x55, vcpu=0)
    PciDmaPort(host, fn).msi(addr, data)
    PciDmaPort(host, fn, route_cache=False).msi(addr, data)
    host.env.run()
    assert vm.stats.interrupts_posted == 2


def _probed(posted=True):
    path = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=2,
                                                posted_interrupts=posted))
    path.env.run(until=path.env.process(path.start()))
    return path


def _trap_state(path):
    c = path.ctrl
    sqs = {q: (s.head, s.tail) for q, s in c.sqs.items()}
    cqs = {q: (s.head, s.tail, s.phase) for q, s in c.cqs.items()}
    return (dict(c.regs.values), bytes(c.msix), c.pba, sqs, cqs, asdict(c.stats),
            dict(path.trap.remapped))


@pytest.mark.parametrize("posted", [True, False])
def test_trap_register_write_equals_the_bytes_write(posted):
    """MsixTrap.write_value (CPU stores) does what MsixTrap.write (bytes) does, in and out of
    the MSI-X table: doorbells, a property, an entry's vector (remapped) and its mask."""
    writes = [(0x1000 + 12, 0, 4),  # CQ1 head doorbell
              (0x1000 + 4 * 6, 1, 4),  # the SQ tail doorbell of a queue that does not exist
              (0x24, 0x0003_0003, 4),  # AQA
              (MSIX_TABLE + 2 * MSIX_ENTRY + 8, 0x47, 4),  # entry 2's vector: remapped
              (MSIX_TABLE + 2 * MSIX_ENTRY + 12, 0, 4),  # entry 2 unmasked
              (0x1000 + 4 * 9, 5, 4)]  # a CQ head doorbell of no queue
    by_bytes, by_value = _probed(posted), _probed(posted)
    bar = by_bytes.port.fn.bars[0]
    errors = by_value.ctrl.stats.errors
    for off, value, size in writes:
        by_bytes.trap.write(bar, off, value.to_bytes(size, "little"))
        by_value.trap.write_value(bar, off, value, size)
        by_bytes.env.run()
        by_value.env.run()
        assert _trap_state(by_bytes) == _trap_state(by_value)
    assert by_value.trap.remapped[2] == 0x47
    assert by_value.ctrl.stats.errors == errors + 2  # both bad doorbells reached it


def test_route_cache_follows_config_writes():
    """A cached route is dropped by any config write: the SSD's root port first stops
    accepting its requests (subordinate bus below the SSD's bus, ACS Source Validation on),
    then accepts them again once ACS control no longer has SV."""
    path = build_path("passthrough", PathConfig(PRESETS["optane"], queue_depth=2))
    host, fn, vm = path.host, path.port.fn, path.vm
    port = PciDmaPort(host, fn)
    addr, data = path.vfio.setup_msi(fn, 0x55, vcpu=0)
    root_port = fn.bus.self_
    assert port.write(0x1000, b"a" * 64) and port._limit > 0
    root_port.config.write(PCI_SUBORDINATE_BUS, 1, 0)
    assert host.dma_write(fn, 0x1000, b"b" * 64).status is DmaStatus.ACS_VIOLATION
    assert not port.write(0x1000, b"b" * 64) and port.read(0x1000, 64) is None
    port.msi(addr, data)
    assert port.faults == 2 and vm.read(0x1000, 64) == b"a" * 64
    root_port.set_acs_ctl(root_port.acs_ctl() & ~AcsFlags.SV)
    assert port.write(0x1000, b"c" * 64) and port.read(0x1000, 64) == b"c" * 64
    port.msi(addr, data)
    host.env.run()
    assert vm.stats.interrupts_posted == 1  # only the MSI sent while SV allowed it
