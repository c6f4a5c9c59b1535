"""Host, VM memory, vCPU pinning, emulated MMIO and the input choke point."""

from __future__ import annotations

import pytest
from pci_builders import switch_host

from passthru.errors import ConfigError
from passthru.guest.kernel import GuestKernel
from passthru.hv.costs import DEFAULT_COSTS, Costs
from passthru.hv.emulated import (
    ID_VALUE,
    REG_DMA_ADDR,
    REG_DOORBELL,
    REG_ID,
    REG_SCRATCH,
    ScratchDevice,
)
from passthru.hv.host import Host
from passthru.hv.vm import InputKind

MiB = 1 << 20
GiB = 1 << 30


def small_host(**kw):
    return Host(switch_host([None, None]), cores=4, memory_bytes=2 * GiB, **kw)


def test_guest_ram_is_backed_by_2m_frames_with_a_4k_tail():
    host = small_host()
    vm = host.create_vm("web", 6 * MiB + 8192, [0, 1])
    sizes = [size for _, _, size in vm.ram_chunks()]
    assert sizes == [2 * MiB] * 3 + [4096] * 2
    for gpa, hpa, _ in vm.ram_chunks():
        assert vm.gpa_to_hpa(gpa + 8) == hpa + 8
    assert host.frames.used_bytes >= vm.memory_bytes
    data = bytes(range(256)) * 40  # crosses a 2 MiB boundary
    vm.write(2 * MiB - 5000, data)
    assert vm.read(2 * MiB - 5000, len(data)) == data
    hpa = vm.gpa_to_hpa(2 * MiB - 5000)
    assert host.memory.read(hpa, 16) == data[:16]
    with pytest.raises(ValueError, match="not guest RAM"):
        vm.gpa_to_hpa(vm.memory_bytes)


def test_pinning_to_a_missing_core_names_the_core():
    host = small_host()
    with pytest.raises(ConfigError, match=r"vcpu_pins\[1\]: host core 7 does not exist"):
        host.create_vm("web", 4 * MiB, [0, 7])
    host.create_vm("a", 4 * MiB, [2])
    with pytest.raises(ConfigError, match="host core 2 is already pinned by vm 'a'"):
        host.create_vm("b", 4 * MiB, [2])


def test_costs_are_overridable_and_validated():
    c = DEFAULT_COSTS.replace(vm_exit_ns=900)
    assert c.vm_exit_ns == 900 and Costs(vm_exit_ns=900) == c
    with pytest.raises(ConfigError, match="costs.nope"):
        DEFAULT_COSTS.replace(nope=1)
    with pytest.raises(ConfigError, match="costs.vm_exit_ns"):
        Costs(vm_exit_ns=-1)
    assert Costs(guest_ipc=1, cpu_mhz=1000).instructions_ns(1000) == 1000


def test_emulated_mmio_counts_one_exit_per_access_and_costs_it():
    costs = Costs()
    host = small_host(costs=costs)
    vm = host.create_vm("web", 4 * MiB, [0])
    dev = ScratchDevice(vm)
    g = GuestKernel(vm)
    out = {}

    def prog(g):
        buf = g.alloc_dma(64)
        out["id"] = yield from g.mmio_read(dev.base + REG_ID, 4)
        yield from g.mmio_write(dev.base + REG_SCRATCH, 0x1122334455667788, 8)
        yield from g.mmio_write(dev.base + REG_DMA_ADDR, buf, 8)
        yield from g.mmio_write(dev.base + REG_DOORBELL, 1, 8)
        out["buf"] = yield from g.read(buf, 8)

    g.run(prog)
    host.env.run()
    per_access = costs.vm_exit_ns + costs.mmio_emulate_ns
    assert out["id"] == ID_VALUE
    assert out["buf"] == (0x1122334455667788).to_bytes(8, "little")
    assert vm.stats.mmio_exits == 4 and vm.stats.exits == 4
    assert vm.stats.exit_ns == 4 * per_access
    assert host.env.now == 4 * per_access
    assert vm.vcpus[0].exits == 4


def test_userspace_device_model_costs_a_heavyweight_exit():
    host = small_host()
    vm = host.create_vm("web", 4 * MiB, [0])
    dev = ScratchDevice(vm, userspace=True)
    g = GuestKernel(vm)
    g.run(lambda g: g.mmio_read(dev.base + REG_ID, 4))
    host.env.run()
    assert host.env.now == host.costs.userspace_exit_ns + host.costs.mmio_emulate_ns
    assert vm.stats.mmio_exits == 1


def test_exits_are_counted_per_vm():
    host = small_host()
    a, b = host.create_vm("a", 4 * MiB, [0]), host.create_vm("b", 4 * MiB, [1])
    da, db = ScratchDevice(a), ScratchDevice(b)

    def touch(dev, n):
        def prog(g):
            for _ in range(n):
                yield from g.mmio_read(dev.base + REG_SCRATCH, 8)
        return prog

    GuestKernel(a).run(touch(da, 3))
    GuestKernel(b).run(touch(db, 5))
    host.env.run()
    assert (a.stats.mmio_exits, b.stats.mmio_exits) == (3, 5)


def test_compute_advances_time_and_retired_instructions():
    host = small_host(costs=Costs(guest_ipc=2, cpu_mhz=2000))
    vm = host.create_vm("web", 4 * MiB, [3])
    g = GuestKernel(vm)
    g.run(lambda g: g.compute(4000))
    host.env.run()
    assert host.env.now == 1000 and vm.vcpus[0].retired == 4000


def test_choke_point_sees_emulated_mmio_reads_and_device_writes_with_instruction_counts():
    host = small_host()
    vm = host.create_vm("web", 4 * MiB, [0])
    dev = ScratchDevice(vm)
    seen = []
    vm.input_hooks.append(seen.append)

    def prog(g):
        yield from g.compute(100)
        yield from g.mmio_read(dev.base + REG_ID, 4)
        yield from g.mmio_write(dev.base + REG_DMA_ADDR, 0x2000, 8)
        yield from g.compute(50)
        yield from g.mmio_write(dev.base + REG_DOORBELL, 1, 8)

    GuestKernel(vm).run(prog)
    host.env.run()
    assert [r.kind for r in seen] == [InputKind.MMIO_READ, InputKind.DMA_WRITE]
    assert seen[0].icount == 101 and seen[0].value == ID_VALUE
    assert seen[1].icount == 153 and seen[1].gpa == 0x2000 and seen[1].data == bytes(8)
    assert [r.seq for r in seen] == [0, 1]
