"""The DMA port's route cache agrees with the full Host/fabric path (a differential test)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.hv.backends.nvme_paths import PathConfig, PciDmaPort, build_path
from passthru.hv.vm import InputKind
from passthru.hw.devices.nvme.namespace import PRESETS


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
