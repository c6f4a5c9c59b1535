"""The scripted guest kernel API: memory, MMIO, compute, interrupts."""

from __future__ import annotations

import pytest
from pci_builders import switch_host

from passthru.errors import OutOfResources
from passthru.guest.kernel import GuestKernel
from passthru.hv.costs import Costs
from passthru.hv.emulated import REG_COUNT, REG_DMA_ADDR, REG_DOORBELL, REG_SCRATCH, ScratchDevice
from passthru.hv.host import Host

MiB = 1 << 20
GiB = 1 << 30


def guest(**kw):
    host = Host(switch_host([None]), cores=2, memory_bytes=1 * GiB, **kw)
    vm = host.create_vm("g", 4 * MiB, [0, 1])
    return host, vm


def test_alloc_dma_is_aligned_and_bounded():
    _, vm = guest()
    g = GuestKernel(vm)
    a, b = g.alloc_dma(100), g.alloc_dma(100)
    assert a % 4096 == 0 and b % 4096 == 0 and b >= a + 100
    assert g.alloc_dma(8, align=64) % 64 == 0
    with pytest.raises(OutOfResources, match="guest heap"):
        g.alloc_dma(8 * MiB)


def test_write_then_read_round_trips_and_program_returns_a_value():
    host, vm = guest()
    g = GuestKernel(vm)

    def prog(g):
        buf = g.alloc_dma(32)
        yield from g.write(buf, b"hello guest")
        return (yield from g.read(buf, 11))

    proc = g.run(prog)
    host.env.run()
    assert proc.value == b"hello guest"
    assert vm.vcpus[0].retired == 2


def test_load_and_store_are_the_plain_call_forms_of_read_and_write():
    host, vm = guest()
    g = GuestKernel(vm)
    buf = g.alloc_dma(8192)
    g.store(buf + 4093, b"across")  # crosses into the next guest page
    assert g.load(buf + 4093, 6) == b"across" == vm.read(buf + 4093, 6)
    assert vm.vcpus[0].retired == 2 and host.env.now == 0  # one instruction each, no time

    def prog(g):
        yield from g.write(buf, b"gen")
        return (g.load(buf, 3), (yield from g.read(buf + 4093, 6)))

    proc = g.run(prog)
    host.env.run()
    assert proc.value == (b"gen", b"across") and vm.vcpus[0].retired == 5


def test_two_vcpus_run_concurrently_and_count_separately():
    host, vm = guest(costs=Costs(guest_ipc=1, cpu_mhz=1000))
    GuestKernel(vm, 0).run(lambda g: g.compute(3000))
    GuestKernel(vm, 1).run(lambda g: g.compute(2000))
    host.env.run()
    assert host.env.now == 3000
    assert [v.retired for v in vm.vcpus] == [3000, 2000]


def test_processes_on_one_vcpu_queue_for_it_in_order():
    host, vm = guest(costs=Costs(guest_ipc=1, cpu_mhz=1000))
    done = []

    def prog(n):
        def body(g):
            yield from g.compute(n)
            done.append((n, g.env.now, g.retired))
        return body

    g = GuestKernel(vm, 0)
    g.run(prog(3000))
    g.run(prog(2000))
    host.env.run()
    # the second starts when the first is done; its instructions retire when it starts
    assert done == [(3000, 3000, 3000), (2000, 5000, 5000)]
    assert vm.vcpus[0].cpu.busy_ns == 5000 and vm.vcpus[1].cpu.busy_ns == 0


def test_an_injected_interrupt_waits_for_the_busy_vcpu():
    host, vm = guest(costs=Costs(guest_ipc=1, cpu_mhz=1000), posted_interrupts=False)
    GuestKernel(vm, 0).run(lambda g: g.compute(3000))
    host.env.run(until=1)
    vm.deliver_interrupt(0, 0x31, posted=False)  # the exit queues behind the guest's work
    host.env.run()
    c = host.costs
    assert host.env.now == 3000 + c.vm_exit_ns + c.interrupt_inject_ns
    assert 0x31 in vm.vcpus[0].pending


def test_wait_interrupt_blocks_until_delivery_and_consumes_the_vector():
    host, vm = guest(posted_interrupts=True)
    g = GuestKernel(vm)
    woke = []

    def prog(g):
        v = yield from g.wait_interrupt(0x30)
        woke.append((v, g.env.now))
        assert 0x30 not in g.vm.vcpus[0].pending

    g.run(prog)
    host.env.run(until=5000)
    assert woke == []
    vm.deliver_interrupt(0, 0x30, posted=True)
    host.env.run()
    assert woke == [(0x30, 5000 + host.costs.posted_delivery_ns)]


def test_an_interrupt_already_pending_returns_at_once():
    host, vm = guest(posted_interrupts=False)
    vm.deliver_interrupt(0, 0x31, posted=False)
    host.env.run()
    t0 = host.env.now
    g = GuestKernel(vm)
    g.run(lambda g: g.wait_interrupt(0x31))
    host.env.run()
    assert host.env.now == t0 + host.costs.eoi_exit_ns  # only the EOI exit


def test_same_driver_code_runs_on_emulated_device():
    host, vm = guest()
    dev = ScratchDevice(vm)
    g = GuestKernel(vm)

    def prog(g):
        buf = g.alloc_dma(8)
        for i in range(3):
            yield from g.mmio_write(dev.base + REG_SCRATCH, 0xA0 + i, 8)
            yield from g.mmio_write(dev.base + REG_DMA_ADDR, buf, 8)
            yield from g.mmio_write(dev.base + REG_DOORBELL, 1, 8)
        n = yield from g.mmio_read(dev.base + REG_COUNT, 8)
        return n, (yield from g.read(buf, 8))

    proc = g.run(prog)
    host.env.run()
    assert proc.value == (3, (0xA2).to_bytes(8, "little"))
    assert vm.stats.mmio_exits == 10
    dev.reset()
    assert dev.count == 0 and dev.scratch == 0


def test_negative_compute_is_refused():
    host, vm = guest()
    proc = GuestKernel(vm).run(lambda g: g.compute(-1))
    with pytest.raises(ValueError, match="instruction count"):
        host.env.run()
    assert not proc.ok
