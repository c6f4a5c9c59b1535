"""Routing of memory requests through switches and root ports, one case per ACS bit."""

from __future__ import annotations

from pci_builders import ALL_CAP, FULL, switch_host

from passthru.hw.pci.device import AcsSpec, Bar
from passthru.hw.pci.fabric import AddressType, Fabric, MemRequest, RouteKind
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.pci.topology import Topology

NONE_ON = AcsSpec(cap=ALL_CAP, ctl=AcsFlags(0))


def acs(*flags: AcsFlags, egress: int = 0) -> AcsSpec:
    ctl = AcsFlags(0)
    for f in flags:
        ctl |= f
    return AcsSpec(cap=ALL_CAP, ctl=ctl, egress_vector=egress, ecvs=8 if egress else 0)


def write(fabric: Fabric, src, addr: int, *, rid: int | None = None,
          at: AddressType = AddressType.UNTRANSLATED, is_write: bool = True):
    return fabric.route(src, MemRequest(src.rid if rid is None else rid, addr, 4, is_write, at))


def two_peers(port_acs: AcsSpec | None, **kw):
    t = switch_host([port_acs, port_acs], **kw)
    return t, Fabric(t), t.find("03:00.0"), t.find("04:00.0")


def test_peer_write_without_acs_lands_in_the_peer_bar():
    t, fabric, a, b = two_peers(NONE_ON)
    out = write(fabric, a, b.bars[0].address + 0x10)
    assert out.kind is RouteKind.PEER and out.target is b and out.bar is b.bars[0]
    assert [p.bdf for p in out.ports] == ["0000:02:00.0", "0000:02:01.0"]
    assert not out.reached_root_complex


def test_rr_redirects_the_peer_write_to_the_root_complex():
    seen = []
    t = switch_host([acs(AcsFlags.RR, AcsFlags.UF)] * 2)
    fabric = Fabric(t, translate=lambda fn, req, rid: seen.append((fn.bdf, rid)) or "translated")
    a, b = t.find("03:00.0"), t.find("04:00.0")
    out = write(fabric, a, b.bars[0].address)
    assert out.kind is RouteKind.ROOT_COMPLEX and out.redirected
    assert out.translation == "translated" and seen == [("0000:03:00.0", a.rid)]
    assert [p.bdf for p in out.ports] == ["0000:02:00.0", "0000:01:00.0", "0000:00:01.0"]


def test_redirected_request_needs_uf_at_the_root_port_to_continue_upstream():
    t = switch_host([acs(AcsFlags.RR)] * 2, rp_acs=acs())  # root port: UF off
    fabric = Fabric(t)
    a, b = t.find("03:00.0"), t.find("04:00.0")
    out = write(fabric, a, b.bars[0].address)
    assert out.kind is RouteKind.UNSUPPORTED and out.at_port.bdf == "0000:00:01.0"
    t.find("00:01.0").set_acs_ctl(AcsFlags.UF)
    assert write(fabric, a, b.bars[0].address).kind is RouteKind.ROOT_COMPLEX


def test_cr_redirects_the_completion_of_a_peer_read():
    t, fabric, a, b = two_peers(acs(AcsFlags.CR))
    read = write(fabric, a, b.bars[0].address, is_write=False)
    assert read.kind is RouteKind.PEER and read.completion_redirected
    t2, fabric2, a2, b2 = two_peers(NONE_ON)
    assert not write(fabric2, a2, b2.bars[0].address, is_write=False).completion_redirected


def test_sv_blocks_a_spoofed_requester_id():
    t, fabric, a, b = two_peers(acs(AcsFlags.SV))
    spoofed = b.rid  # pretend to be the device below the other port
    out = write(fabric, a, 0x1000, rid=spoofed)
    assert out.kind is RouteKind.ACS_VIOLATION and out.violation == AcsFlags.SV
    assert out.at_port.bdf == "0000:02:00.0"
    # Without SV the spoofed request reaches the root complex carrying the forged ID.
    t2, fabric2, a2, b2 = two_peers(NONE_ON)
    out2 = write(fabric2, a2, 0x1000, rid=b2.rid)
    assert out2.kind is RouteKind.ROOT_COMPLEX and out2.rc_requester_id == b2.rid


def test_tb_blocks_translated_requests():
    t, fabric, a, b = two_peers(acs(AcsFlags.TB), ats=True)
    out = write(fabric, a, 0x1000, at=AddressType.TRANSLATED)
    assert out.kind is RouteKind.ACS_VIOLATION and out.violation == AcsFlags.TB
    assert write(fabric, a, 0x1000).kind is RouteKind.ROOT_COMPLEX


def test_dt_lets_translated_peer_requests_bypass_rr():
    t, fabric, a, b = two_peers(acs(AcsFlags.RR, AcsFlags.UF, AcsFlags.DT), ats=True)
    assert write(fabric, a, b.bars[0].address).kind is RouteKind.ROOT_COMPLEX
    out = write(fabric, a, b.bars[0].address, at=AddressType.TRANSLATED)
    assert out.kind is RouteKind.PEER and out.target is b


def test_ec_egress_vector_blocks_only_the_named_port():
    t = switch_host([acs(AcsFlags.EC, egress=0b010), NONE_ON, NONE_ON])
    fabric = Fabric(t)
    a, b, c = t.find("03:00.0"), t.find("04:00.0"), t.find("05:00.0")
    blocked = write(fabric, a, b.bars[0].address)
    assert blocked.kind is RouteKind.ACS_VIOLATION and blocked.violation == AcsFlags.EC
    assert write(fabric, a, c.bars[0].address).target is c


def test_rr_takes_precedence_over_egress_control():
    t = switch_host([acs(AcsFlags.RR, AcsFlags.EC, egress=0b10), NONE_ON], rp_acs=FULL)
    fabric = Fabric(t)
    out = write(fabric, t.find("03:00.0"), t.find("04:00.0").bars[0].address)
    assert out.kind is RouteKind.ROOT_COMPLEX and out.redirected


def test_requests_for_host_memory_go_upstream():
    t, fabric, a, b = two_peers(NONE_ON)
    out = write(fabric, a, 0x10_0000)
    assert out.kind is RouteKind.ROOT_COMPLEX and not out.redirected
    assert out.rc_requester_id == a.rid


def test_pcie_to_pci_bridge_takes_ownership_of_the_requester_id():
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    br = t.add_pcie_to_pci_bridge(rp)
    x = t.add_pci_device(br, 3, bars=[0x1000])
    y = t.add_pci_device(br, 4, bars=[0x1000])
    t.enumerate()
    fabric = Fabric(t)
    up = write(fabric, x, 0x2000)
    assert up.kind is RouteKind.ROOT_COMPLEX and up.rc_requester_id == 0x0200  # 02:00.0
    peer = write(fabric, x, y.bars[0].address)  # a shared conventional bus: no ACS applies
    assert peer.kind is RouteKind.PEER and peer.target is y and peer.ports == ()


def test_root_ports_route_peer_to_peer_only_when_the_root_complex_does():
    t = Topology()
    rp1, rp2 = t.add_root_port(1), t.add_root_port(2)
    a = t.add_endpoint(rp1, 0, bars=[0x4000])
    b = t.add_endpoint(rp2, 0, bars=[0x4000])
    t.enumerate()
    assert write(Fabric(t), a, b.bars[0].address).target is b
    t.rc_p2p = False
    assert write(Fabric(t), a, b.bars[0].address).kind is RouteKind.ROOT_COMPLEX


def test_unclaimed_address_inside_a_window_is_an_unsupported_request():
    t, fabric, a, b = two_peers(NONE_ON)
    port_b = t.find("02:01.0")
    hole = port_b.mem_window[0] + 0x80000  # inside the 1 MiB window, past the 64 KiB BAR
    out = write(fabric, a, hole)
    assert out.kind is RouteKind.UNSUPPORTED


def test_multifunction_loopback_without_acs_and_redirect_with_it():
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    f0 = t.add_endpoint(rp, 0, 0, bars=[Bar(0, 0x4000, is_64=False)])
    f1 = t.add_endpoint(rp, 0, 1, bars=[Bar(0, 0x4000, is_64=False)])
    t.enumerate()
    out = write(Fabric(t), f0, f1.bars[0].address)
    assert out.kind is RouteKind.PEER and out.target is f1 and out.ports == ()

    t2 = Topology()
    rp2 = t2.add_root_port(1, acs=FULL)
    mf = AcsSpec(cap=AcsFlags.RR | AcsFlags.CR, ctl=AcsFlags.RR | AcsFlags.CR)
    g0 = t2.add_endpoint(rp2, 0, 0, bars=[Bar(0, 0x4000, is_64=False)], acs=mf)
    g1 = t2.add_endpoint(rp2, 0, 1, bars=[Bar(0, 0x4000, is_64=False)], acs=mf)
    t2.enumerate()
    out2 = write(Fabric(t2), g0, g1.bars[0].address)
    assert out2.kind is RouteKind.ROOT_COMPLEX and out2.redirected
