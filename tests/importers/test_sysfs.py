"""The sysfs reader: snapshots derived from real lspci dumps read back to the same topology,
the kernel's facts (groups, types, command line, interrupt remapping), one-line errors naming
the file, and a fuzz test: random corruption of files and links raises only DumpParseError."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passthru.analysis.audit import run_audit
from passthru.analysis.groups import compute_iommu_groups
from passthru.errors import DumpParseError
from passthru.importers.lspci_topology import load_lspci
from passthru.importers.sysfs import CmdlineFlags, load_sysfs

DATA = Path(__file__).resolve().parent.parent / "data"
SNAP = DATA / "sysfs"
FROM_DUMP = {
    "xps13_9310_intel_dma": "dell_xps13_9310_tigerlake.txt",
    "x570_amd_identity": "asrockrack_x570d4u_2l2t_matisse.txt",
    "xps13_9380_tb3_no_ir": "dell_xps13_9380_whiskeylake_tb3.txt",
    "orion_o6_lazy_acs_override": "radxa_orion_o6_arm.txt",
}


def copy(name: str, dest: Path) -> Path:
    out = dest / name
    shutil.copytree(SNAP / name, out, symlinks=True)
    return out


def _parent(fn) -> str | None:
    bus = fn.bus
    while bus is not None and bus.self_ is None and bus.parent is not None:
        bus = bus.parent
    return bus.self_.bdf if bus is not None and bus.self_ is not None else None


@pytest.mark.parametrize("snapshot", sorted(FROM_DUMP))
def test_snapshot_reads_back_to_the_dumps_topology(snapshot):
    topo, facts = load_sysfs(str(SNAP / snapshot))
    ref = load_lspci(str(DATA / "lspci" / FROM_DUMP[snapshot]))
    got = {fn.bdf: fn for fn in topo.functions()}
    want = {fn.bdf: fn for fn in ref.functions()}
    assert got.keys() == want.keys()
    for bdf, w in want.items():
        g = got[bdf]
        assert (g.vendor_id, g.device_id, g.class_code) == (w.vendor_id, w.device_id,
                                                             w.class_code), bdf
        assert g.pcie_type == w.pcie_type, bdf
        assert _parent(g) == _parent(w), bdf
        assert g.acs_registers() == w.acs_registers(), bdf
        assert g.multifunction == w.multifunction, bdf
        assert g.secondary_bus == w.secondary_bus and g.subordinate_bus == w.subordinate_bus
        assert [(b.index, b.address, b.size, b.prefetchable) for b in g.bars] == [
            (b.index, b.address, b.size, b.prefetchable) for b in w.bars], bdf
        if w.subordinate is not None:
            assert (g.mem_window, g.pref_window) == (w.mem_window, w.pref_window), bdf
        assert g.driver == w.driver
        if w.pcie_type is not None:  # Link Capabilities port number (egress vector index)
            assert g.port_number == w.port_number, bdf
    # Linux's group algorithm gives the same groups on both.
    assert [grp.bdfs() for grp in compute_iommu_groups(topo)] == [
        grp.bdfs() for grp in compute_iommu_groups(ref)]
    assert facts.iommu_present


def test_kernel_groups_types_and_links_come_from_sysfs():
    topo, facts = load_sysfs(str(SNAP / "xps13_9310_intel_dma"))
    ref = load_lspci(str(DATA / "lspci" / "dell_xps13_9310_tigerlake.txt"))
    want: dict[int, list[str]] = {}
    for fn in ref.functions():
        want.setdefault(fn.iommu_group_hint, []).append(fn.bdf)
    assert {g.id: list(g.devices) for g in facts.groups.values()} == {
        k: sorted(v) for k, v in want.items()}
    assert {g.type for g in facts.groups.values()} == {"DMA"}
    assert facts.iommu_units == ("dmar0", "dmar1")
    assert topo.find("00:14.3").iommu_group_hint == ref.find("00:14.3").iommu_group_hint
    assert facts.interrupt_remapping is True and "DMAR-IR" in facts.ir_evidence


def test_x570_devices_outside_any_group_stay_outside():
    topo, facts = load_sysfs(str(SNAP / "x570_amd_identity"))
    assert topo.find("00:00.2").iommu_group_hint is None
    assert {g.type for g in facts.groups.values()} == {"identity"}
    assert facts.cmdline is not None and facts.cmdline.passthrough is True
    assert facts.interrupt_remapping is True  # AMD-Vi dmesg line


def test_interrupt_remapping_from_ecap_intremap_and_proc_interrupts(tmp_path):
    _, facts = load_sysfs(str(SNAP / "xps13_9380_tb3_no_ir"))
    assert facts.interrupt_remapping is False and "ECAP.IR" in facts.ir_evidence
    snap = copy("xps13_9310_intel_dma", tmp_path)
    (snap / "dmesg.txt").unlink()
    _, facts = load_sysfs(str(snap))
    # ECAP.IR shows capability, not enablement (GSTS.IRES is not in sysfs): unknown
    assert facts.interrupt_remapping is None and "capable" in facts.ir_evidence
    (snap / "proc" / "interrupts").write_text(
        "           CPU0\n 120:   0   PCI-MSI 327680-edge   xhci_hcd\n")
    _, facts = load_sysfs(str(snap))
    assert facts.interrupt_remapping is False and "PCI-MSI" in facts.ir_evidence
    (snap / "proc" / "interrupts").write_text(
        "           CPU0\n 120:   0   IR-PCI-MSI 327680-edge   xhci_hcd\n")
    _, facts = load_sysfs(str(snap))
    assert facts.interrupt_remapping is True
    cmd = snap / "proc" / "cmdline"
    cmd.write_text(cmd.read_text().strip() + " intremap=off\n")
    _, facts = load_sysfs(str(snap))
    assert facts.interrupt_remapping is False and "intremap=off" in facts.ir_evidence
    _, facts = load_sysfs(str(SNAP / "orion_o6_lazy_acs_override"))
    assert facts.interrupt_remapping is None


def test_cmdline_flags():
    c = CmdlineFlags.parse("root=/dev/sda iommu=pt iommu.strict=0 intel_iommu=on "
                           "pcie_acs_override=downstream -- iommu=off")
    assert (c.passthrough, c.strict, c.iommu_off, c.acs_override) == (True, False, False,
                                                                      "downstream")
    c = CmdlineFlags.parse("iommu.passthrough=0 amd_iommu=off intremap=off iommu.strict=1")
    assert (c.passthrough, c.strict, c.iommu_off, c.intremap_off) == (False, True, True, True)
    assert CmdlineFlags.parse("").passthrough is None


def test_parent_comes_from_the_device_path_and_falls_back_to_bus_numbers(tmp_path):
    snap = copy("xps13_9380_tb3_no_ir", tmp_path)
    topo, _ = load_sysfs(str(snap))
    want = {fn.bdf: _parent(fn) for fn in topo.functions()}
    assert want["0000:05:00.0"] == "0000:04:00.0"  # behind the Thunderbolt switch
    # Replace every bus/pci/devices link by a plain copy: bus numbers must give the same tree.
    devices = snap / "sys" / "bus" / "pci" / "devices"
    for link in list(devices.iterdir()):
        target = link.resolve()
        link.unlink()
        link.mkdir()
        for f in ("config", "vendor", "device", "class", "resource"):
            shutil.copy(target / f, link / f)
    topo2, _ = load_sysfs(str(snap))
    assert {fn.bdf: _parent(fn) for fn in topo2.functions()} == want


def test_short_config_spaces_are_reported(tmp_path):
    snap = copy("orion_o6_lazy_acs_override", tmp_path)
    configs = sorted(snap.glob("sys/devices/**/config"))
    for cfg in configs:
        cfg.write_bytes(cfg.read_bytes()[:256])
    topo, facts = load_sysfs(str(snap))
    assert len(facts.no_ext_config) == len(configs) and "4 KiB" in facts.warnings[0]
    assert all(fn.acs_registers() is None for fn in topo.functions())
    for cfg in configs:
        cfg.write_bytes(cfg.read_bytes()[:64])
    topo, facts = load_sysfs(str(snap))
    assert len(facts.header_only) == len(configs) and "root" in facts.warnings[0]
    assert all(fn.pcie_type is None for fn in topo.functions())


def test_live_system_reads_without_error():
    try:
        topo, facts = load_sysfs("/")
    except DumpParseError as exc:  # an unusual host: still one line, never a traceback
        assert "\n" not in str(exc)
        return
    assert facts.source == "/"
    assert len(topo.functions()) == len(os.listdir("/sys/bus/pci/devices"))


# -- one-line errors naming the file ------------------------------------------------------------

def _break(snap: Path, how: str) -> str:
    """Corrupt `snap` one way; returns a piece of the path the message must name."""
    dev = (snap / "sys" / "bus" / "pci" / "devices" / "0000:00:14.0").resolve()
    if how == "short-config":
        (dev / "config").write_bytes(b"\x86\x80")
        return "config"
    if how == "class":
        (dev / "class").write_text("VGA\n")
        return "class"
    if how == "group-link":
        (dev / "iommu_group").unlink()
        os.symlink("../../../kernel/iommu_groups/seven", dev / "iommu_group")
        return "iommu_group"
    if how == "group-type":
        (snap / "sys" / "kernel" / "iommu_groups" / "9" / "type").write_text("sideways\n")
        return "type"
    if how == "resource":
        (dev / "resource").write_text("0x0 nonsense\n")
        return "resource"
    if how == "device-link":
        link = snap / "sys" / "bus" / "pci" / "devices" / "0000:00:14.0"
        link.unlink()
        os.symlink("/etc", link)
        return "0000:00:14.0"
    if how == "cap-loop":
        data = bytearray((dev / "config").read_bytes())
        data[0x100:0x104] = (0x0001 | (0x100 << 20)).to_bytes(4, "little")  # points to itself
        (dev / "config").write_bytes(bytes(data))
        return "config"
    if how == "no-pci":
        shutil.rmtree(snap / "sys" / "bus")
        return "devices"
    if how == "ecap":
        (snap / "dmesg.txt").unlink()
        (snap / "sys" / "class" / "iommu" / "dmar0" / "intel-iommu" / "ecap").write_text("zz\n")
        return "ecap"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["short-config", "class", "group-link", "group-type",
                                 "resource", "device-link", "cap-loop", "no-pci", "ecap"])
def test_malformed_snapshots_raise_one_line_naming_the_file(tmp_path, how):
    snap = copy("xps13_9310_intel_dma", tmp_path)
    piece = _break(snap, how)
    with pytest.raises(DumpParseError) as err:
        load_sysfs(str(snap))
    msg = str(err.value)
    assert "\n" not in msg and piece in msg and str(snap) in msg


def test_not_a_directory(tmp_path):
    with pytest.raises(DumpParseError, match="not a directory"):
        load_sysfs(str(tmp_path / "nowhere"))


# -- fuzzing ------------------------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = "orion_o6_lazy_acs_override"
_FILES = sorted(str(p.relative_to(SNAP / SMALL)) for p in (SNAP / SMALL).rglob("*")
                if p.is_file() or p.is_symlink())

MUTATION = st.tuples(
    st.sampled_from(_FILES),
    st.sampled_from(["bytes", "flip", "truncate", "delete", "relink", "text"]),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=4200),
    st.text(max_size=40),
)


def _mutate(root: Path, rel: str, kind: str, blob: bytes, pos: int, text: str) -> None:
    path = root / rel
    if kind == "delete" or (kind == "relink" and path.is_symlink()):
        path.unlink()
        if kind == "relink":
            try:
                os.symlink(text or ".", path)
            except (OSError, ValueError):
                pass
        return
    if path.is_symlink():  # do not write through a link into another file of the snapshot
        path.unlink()
        path.write_bytes(blob)
        return
    data = bytearray(path.read_bytes())
    if kind == "bytes":
        data[pos:pos + len(blob)] = blob
    elif kind == "flip" and data:
        for i, b in enumerate(blob[:8]):
            data[(pos + 97 * i) % len(data)] ^= b or 0xFF
    elif kind == "truncate":
        del data[pos % (len(data) + 1):]
    elif kind == "text":
        data = bytearray(text.encode())
    path.write_bytes(bytes(data))


@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzzed_snapshots_raise_only_dump_parse_errors(mutations):
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / SMALL
        shutil.copytree(SNAP / SMALL, snap, symlinks=True)
        for m in mutations:
            if os.path.lexists(snap / m[0]):
                _mutate(snap, *m)
        try:
            topo, facts = load_sysfs(str(snap))
            run_audit(topo, facts)
        except DumpParseError as exc:
            msg = str(exc)
            assert "\n" not in msg and msg.startswith(str(snap)), msg
