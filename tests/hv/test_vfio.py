"""VFIO assignment: group viability, IOVA = GPA DMA, BARs in guest space, MSI delivery."""

from __future__ import annotations

import pytest
from pci_builders import gpu_with_audio, switch_host

from passthru.errors import AssignmentError
from passthru.guest.kernel import GuestKernel
from passthru.hv.host import Host
from passthru.hv.vfio import Vfio
from passthru.hv.vm import InputKind
from passthru.hw.pci.device import AcsSpec
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.platform import DmaStatus

MiB = 1 << 20
GiB = 1 << 30
RR = AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags.RR | AcsFlags.UF | AcsFlags.SV | AcsFlags.CR)
VECTOR = 0x41
REG_ADDR, REG_LEN, REG_DOORBELL = 0x00, 0x08, 0x10
DEVICE_LATENCY_NS = 800


class TinyDma:
    """A DMA-capable test device: on a doorbell it writes a seeded pattern, then its MSI."""

    def __init__(self, host, fn):
        self.host, self.fn = host, fn
        self.regs = {REG_ADDR: 0, REG_LEN: 0}
        self.msi = None  # (address, data)
        self.results = []
        self.rng = host.streams.get(f"tinydma/{fn.bdf}")
        host.attach_device(fn, read=self.read, write=self.write)

    def read(self, bar, off, size):
        return self.regs.get(off, 0).to_bytes(8, "little")[:size]

    def write(self, bar, off, data):
        value = int.from_bytes(data, "little")
        if off == REG_DOORBELL:
            self.host.env.process(self.run(self.regs[REG_ADDR], self.regs[REG_LEN]))
        else:
            self.regs[off] = value

    def run(self, addr, length):
        yield DEVICE_LATENCY_NS
        payload = bytes(self.rng.randrange(256) for _ in range(length))
        self.results.append(self.host.dma_write(self.fn, addr, payload))
        yield self.host.last_dma_ns  # IOTLB-miss walks stall the write
        address, data = self.msi
        self.results.append(self.host.dma_write(self.fn, address, data.to_bytes(4, "little")))


def setup(port_acs=RR, *, posted=True, seed=1):
    host = Host(switch_host([port_acs, port_acs]), cores=4, memory_bytes=2 * GiB,
                posted_interrupts=posted, seed=seed)
    vm = host.create_vm("web", 8 * MiB, [1, 2])
    vfio = Vfio(host)
    fn = host.topology.find("03:00.0")
    dev = TinyDma(host, fn)
    (assigned,) = vfio.assign(vm, fn)
    dev.msi = vfio.setup_msi(fn, VECTOR, vcpu=0)
    return host, vm, vfio, dev, assigned


def driver(bar, out, length=6000):
    def prog(g):
        buf = g.alloc_dma(length)
        yield from g.compute(500)
        yield from g.mmio_write(bar + REG_ADDR, buf, 8)
        yield from g.mmio_write(bar + REG_LEN, length, 8)
        out["readback"] = yield from g.mmio_read(bar + REG_LEN, 8)
        yield from g.mmio_write(bar + REG_DOORBELL, 1, 4)
        yield from g.wait_interrupt(VECTOR)
        out["buf"] = buf
        out["data"] = yield from g.read(buf, length)
    return prog


@pytest.mark.parametrize("posted", [True, False])
def test_device_dma_lands_in_guest_buffer_and_msi_wakes_the_guest(posted):
    host, vm, vfio, dev, assigned = setup(posted=posted)
    out = {}
    GuestKernel(vm).run(driver(assigned.bar_gpas[0], out))
    host.env.run()
    dma, msi = dev.results
    assert dma.status is DmaStatus.MEMORY and msi.status is DmaStatus.INTERRUPT
    assert msi.interrupt.posted is posted
    # The guest reads back exactly the bytes the device wrote, through its own RAM view.
    assert out["readback"] == 6000
    hpa = vm.gpa_to_hpa(out["buf"])
    assert out["data"] == host.memory.read(hpa, 6000)
    again = Host(switch_host([RR, RR]), seed=1).streams.get("tinydma/0000:03:00.0")
    assert out["data"] == bytes(again.randrange(256) for _ in range(6000))
    # Passthrough BAR accesses never exit; an exit is paid only for a non-posted interrupt.
    assert vm.stats.mmio_exits == 0 and vm.stats.mmio_direct == 4
    if posted:
        assert vm.stats.interrupts_posted == 1 and vm.stats.exits == 0
    else:
        assert vm.stats.interrupts_injected == 1 and vm.stats.eoi_exits == 1
        assert vm.stats.exits == 2


def test_posted_delivery_is_faster_than_injection():
    ends = {}
    for posted in (True, False):
        host, vm, _, _, assigned = setup(posted=posted)
        GuestKernel(vm).run(driver(assigned.bar_gpas[0], {}))
        host.env.run()
        ends[posted] = host.env.now
    c = host.costs
    assert ends[False] - ends[True] == (c.vm_exit_ns + c.interrupt_inject_ns
                                       - c.posted_delivery_ns + c.eoi_exit_ns)


def test_all_guest_ram_is_mapped_iova_equals_gpa_and_pinned():
    host, vm, vfio, dev, _ = setup()
    domain = vfio.domains["web"]
    for gpa, hpa, _ in vm.ram_chunks():
        got = host.iommu.lookup(domain, gpa + 0x123)
        assert got is not None
        page_hpa, page_size, _ = got
        assert page_hpa + ((gpa + 0x123) & (page_size - 1)) == hpa + 0x123
    pages = vm.memory_bytes // 4096
    assert vm.stats.pinned_pages == pages
    assert vm.stats.pin_ns == pages * host.costs.pin_page_4k_ns
    # Beyond guest RAM the device faults: it cannot reach the rest of host memory.
    res = host.dma_write(dev.fn, vm.memory_bytes, b"x")
    assert res.status is DmaStatus.FAULT


def test_unviable_group_raises_with_the_offending_function():
    host = Host(gpu_with_audio(None), cores=4, memory_bytes=2 * GiB)
    vm = host.create_vm("web", 4 * MiB, [0])
    vfio = Vfio(host)
    gpu, audio = host.topology.find("01:00.0"), host.topology.find("01:00.1")
    group = host.group_of(gpu)
    assert any(d is audio for d in group.devices)
    with pytest.raises(AssignmentError) as err:
        vfio.assign(vm, gpu)
    assert str(err.value) == (f'group {group.id} is not viable: '
                              '0000:01:00.1 is not assigned to vm "web"')
    assert not vfio.devices and "web" not in vfio.domains  # nothing half-done
    other = host.create_vm("db", 4 * MiB, [1])
    vfio.assign(vm, gpu, audio)  # the whole group is viable: the root port has no driver
    with pytest.raises(AssignmentError, match='already assigned to vm "web"'):
        vfio.assign(other, audio)


@pytest.mark.parametrize(("driver", "viable"), [
    (None, True), ("pcieport", True), ("pci-stub", True), ("some-driver", False)])
def test_a_bridge_keeps_the_group_viable_unless_its_driver_does_dma(driver, viable):
    # Linux >= 5.19: pcieport and pci-stub set driver_managed_dma, so a root port bound to
    # pcieport (every real host) does not stop its endpoints' assignment.
    host = Host(gpu_with_audio(None), cores=4, memory_bytes=2 * GiB)
    vm = host.create_vm("web", 4 * MiB, [0])
    host.topology.find("00:01.0").driver = driver
    fns = (host.topology.find("01:00.0"), host.topology.find("01:00.1"))
    if viable:
        assert len(Vfio(host).assign(vm, *fns)) == 2
    else:
        with pytest.raises(AssignmentError, match="0000:00:01.0 is not assigned"):
            Vfio(host).assign(vm, *fns)


def test_choke_point_sees_mmio_reads_dma_writes_and_interrupts_with_icounts():
    host, vm, _, _, assigned = setup()
    seen = []
    vm.input_hooks.append(seen.append)
    GuestKernel(vm).run(driver(assigned.bar_gpas[0], {}))
    host.env.run()
    kinds = [r.kind for r in seen]
    assert kinds == [InputKind.MMIO_READ, InputKind.DMA_WRITE, InputKind.INTERRUPT]
    mmio, dma, intr = seen
    assert mmio.value == 6000 and mmio.icount == 503
    assert dma.size == 6000 and dma.icount == 504  # the doorbell store retired, then HLT
    assert intr.value == VECTOR and intr.icount == 504 and intr.vcpu == 0
    assert intr.time_ns > dma.time_ns


def _run_once(seed):
    host, vm, _, _, assigned = setup(seed=seed)
    log = []
    vm.input_hooks.append(lambda r: log.append(repr(r) + (r.data or b"").hex()))
    GuestKernel(vm).run(driver(assigned.bar_gpas[0], {}))
    host.env.run()
    return vm.digest(), log, host.env.now


def test_one_seed_gives_identical_guest_memory_and_logs():
    first, second = _run_once(7), _run_once(7)
    assert first == second
    assert _run_once(8)[0] != first[0]


@pytest.mark.parametrize("strict", [True, False])
def test_identity_default_domain_is_replaced_by_the_vm_domain_on_assignment(strict):
    host = Host(switch_host([RR, RR]), cores=4, memory_bytes=2 * GiB,
                identity_default=True, strict=strict)
    a, b = host.topology.find("03:00.0"), host.topology.find("04:00.0")
    secret = b"host secret"
    host.memory.write(0x0010_0000, secret)  # in the hypervisor's reserve
    assert host.dma_read(a, 0x0010_0000, len(secret)).data == secret  # iommu=pt exposes it
    vm = host.create_vm("web", 4 * MiB, [0])
    Vfio(host).assign(vm, a)
    assert host.dma_read(a, 0x0010_0000, len(secret)).data == bytes(len(secret))  # guest RAM
    assert host.dma_read(a, vm.memory_bytes, 4).status is DmaStatus.FAULT
    assert host.dma_read(b, 0x0010_0000, len(secret)).data == secret  # b is still host-owned
    (other,) = Vfio(host).assign(host.create_vm("db", 4 * MiB, [1]), b)
    assert repr(other) == "<AssignedDevice 0000:04:00.0 -> vm 'db' BAR0@0x40000000>"
    assert host.dma_read(b, 0x0010_0000, len(secret)).data == bytes(len(secret))


def test_iotlb_misses_are_costed_and_a_warm_iotlb_is_free():
    host, vm, _, dev, _ = setup()
    host.dma_write(dev.fn, 0x20_0000, b"a" * 64)
    first = host.last_dma_ns
    assert first > 0 and first % host.costs.iotlb_miss_walk_ns == 0
    host.dma_write(dev.fn, 0x20_0040, b"b" * 64)
    assert host.last_dma_ns == 0
    assert host.iotlb_walk_ns == first


def test_bar_window_prefers_the_register_level_write_and_falls_back_to_bytes():
    host, vm, vfio, dev, assigned = setup()
    values = []
    host.attach_device(dev.fn, read=dev.read, write=dev.write,
                       write_value=lambda bar, off, value, size: values.append((off, value,
                                                                               size)))
    window = vm.region_at(assigned.bar_gpas[0]).handler
    window.write(REG_LEN, 0x1234, 8)
    assert values == [(REG_LEN, 0x1234, 8)] and dev.regs[REG_LEN] == 0
    host.attach_device(dev.fn, read=dev.read, write=dev.write)  # no write_value: bytes again
    window.write(REG_LEN, 0x1234, 8)
    assert dev.regs[REG_LEN] == 0x1234 and len(values) == 1
