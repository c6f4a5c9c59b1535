"""Write the sysfs snapshots in this directory from the real lspci dumps in ../lspci.

Each snapshot has the layout that scripts/capture-sysfs.sh produces on a real machine:
`sys/devices/pciDDDD:BB/<bridge>/.../<device>/{config,vendor,device,class,resource,driver,
iommu_group}`, `sys/bus/pci/devices/<bdf>` links, `sys/kernel/iommu_groups/N/{type,devices}`,
`sys/class/iommu/<unit>`, `proc/cmdline`, and optionally `proc/interrupts` / `dmesg.txt`.

What comes from the dump: every function, its IDs and class, its bus position, the Express
port type, ACS capability and control registers, SR-IOV numbers, ATS, MSI/MSI-X, bridge bus
numbers and windows, BARs, drivers, and the `IOMMU group:` membership. The binary config files
are synthesised from those records (the model's own config-space layout, with the real
register values), so capability *offsets* differ from the machine's. What is invented per
snapshot (see SNAPSHOTS below and README.md): the kernel command line, the group domain types,
the IOMMU unit names and ECAP values, and the interrupt-remapping evidence.

Run from the repository root:  python tests/data/sysfs/make_snapshots.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import compute_iommu_groups
from passthru.hw.pci.device import PciFunction
from passthru.importers.lspci_topology import load_lspci

HERE = Path(__file__).resolve().parent
LSPCI = HERE.parent / "lspci"

# name: (dump, cmdline, group type, iommu units {name: ecap or None}, dmesg lines, regroup with
# the command line's pcie_acs_override as the kernel would, keep groups)
SNAPSHOTS: dict[str, dict[str, object]] = {
    "xps13_9310_intel_dma": dict(
        dump="dell_xps13_9310_tigerlake.txt",
        cmdline="BOOT_IMAGE=/vmlinuz-linux root=UUID=0 rw intel_iommu=on quiet",
        group_type="DMA",
        units={"dmar0": 0x69DE008C40F0DF, "dmar1": 0xF050DA},
        dmesg=["DMAR: IOMMU enabled",
               "DMAR-IR: Enabled IRQ remapping in x2apic mode"],
    ),
    "xps13_9310_iommu_off": dict(
        dump="dell_xps13_9310_tigerlake.txt",
        cmdline="BOOT_IMAGE=/vmlinuz-linux root=UUID=0 rw intel_iommu=off quiet",
        groups=False,
        units={},
        dmesg=["DMAR: IOMMU disabled"],
    ),
    "x570_amd_identity": dict(
        dump="asrockrack_x570d4u_2l2t_matisse.txt",
        cmdline="BOOT_IMAGE=/vmlinuz-linux root=UUID=0 rw amd_iommu=on iommu=pt",
        group_type="identity",
        units={"ivhd0": None},
        dmesg=["AMD-Vi: Interrupt remapping enabled"],
    ),
    "xps13_9380_tb3_no_ir": dict(
        dump="dell_xps13_9380_whiskeylake_tb3.txt",
        cmdline="BOOT_IMAGE=/vmlinuz root=UUID=0 ro intel_iommu=on iommu.strict=1",
        group_type="DMA",
        units={"dmar0": 0xF050D2, "dmar1": 0xF050D2},  # ECAP.IR (bit 3) clear
        dmesg=[],
    ),
    "orion_o6_lazy_acs_override": dict(
        dump="radxa_orion_o6_arm.txt",
        cmdline=("BOOT_IMAGE=/Image root=UUID=0 rw iommu.strict=0 "
                 "pcie_acs_override=downstream,multifunction"),
        group_type="DMA-FQ",
        units={"smmu3.0x000000000b010000": None},
        dmesg=[],
        regroup=True,
    ),
}


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


def _devpath(fn: PciFunction) -> list[str]:
    """sys/devices components: pciDDDD:BB, the bridges above, the function itself."""
    parts = [fn.bdf]
    bus = fn.bus
    assert bus is not None
    while bus.parent is not None:
        if bus.self_ is not None:
            parts.append(bus.self_.bdf)
        bus = bus.parent
    parts.append(f"pci{bus.domain:04x}:{bus.number:02x}")
    return parts[::-1]


def _config(fn: PciFunction) -> bytes:
    """The model's config space with the dump's BARs and windows written into it."""
    cfg = bytearray(fn.config.data)
    if fn.subordinate is None:
        for bar in fn.bars:
            if bar.address is None or bar.index > 5:
                continue
            off = 0x10 + 4 * bar.index
            low = (bar.address & 0xFFFFFFF0) | (4 if bar.is_64 else 0) | (
                8 if bar.prefetchable else 0)
            cfg[off:off + 4] = low.to_bytes(4, "little")
            if bar.is_64 and bar.index < 5:
                cfg[off + 4:off + 8] = (bar.address >> 32).to_bytes(4, "little")
    else:
        base, limit = fn.mem_window or (0xFFF00000, 0x000FFFFF)
        cfg[0x20:0x22] = ((base >> 16) & 0xFFF0).to_bytes(2, "little")
        cfg[0x22:0x24] = ((limit >> 16) & 0xFFF0).to_bytes(2, "little")
        pbase, plimit = fn.pref_window or (0xFFF00000, 0x000FFFFF)
        cfg[0x24:0x26] = (((pbase >> 16) & 0xFFF0) | 1).to_bytes(2, "little")
        cfg[0x26:0x28] = (((plimit >> 16) & 0xFFF0) | 1).to_bytes(2, "little")
        cfg[0x28:0x2C] = (pbase >> 32).to_bytes(4, "little")
        cfg[0x2C:0x30] = (plimit >> 32).to_bytes(4, "little")
    return bytes(cfg)


def _resource(fn: PciFunction) -> str:
    """resource_show(): 13 lines for a device (6 BARs, ROM, 6 IOV), 17 for a bridge."""
    lines = [(0, 0, 0)] * (17 if fn.subordinate is not None else 13)
    for bar in fn.bars:
        if bar.address is not None and bar.index <= 5:
            flags = 0x200 | (0x2000 if bar.prefetchable else 0) | (
                0x100000 if bar.is_64 else 0)
            lines[bar.index] = (bar.address, bar.address + bar.size - 1, flags)
    return "".join(f"0x{s:016x} 0x{e:016x} 0x{f:016x}\n" for s, e, f in lines)


def make(name: str, spec: dict[str, object]) -> None:
    out = HERE / name
    if out.exists():
        shutil.rmtree(out)
    topo = load_lspci(str(LSPCI / str(spec["dump"])))
    groups: dict[str, int] = {}
    if spec.get("groups", True):
        if spec.get("regroup"):
            opt = str(spec["cmdline"]).split("pcie_acs_override=")[1].split()[0]
            for g in compute_iommu_groups(topo, AcsOverride.parse(opt)):
                groups.update({d.bdf: g.id for d in g.devices})
        else:
            groups = {fn.bdf: fn.iommu_group_hint for fn in topo.functions()
                      if fn.iommu_group_hint is not None}
    sysdir = out / "sys"
    for fn in topo.functions():
        d = sysdir.joinpath("devices", *_devpath(fn))
        _write(d / "config", _config(fn))
        _write(d / "vendor", f"0x{fn.vendor_id:04x}\n")
        _write(d / "device", f"0x{fn.device_id:04x}\n")
        _write(d / "class", f"0x{fn.class_code:06x}\n")
        _write(d / "resource", _resource(fn))
        if fn.driver:
            drv = sysdir / "bus" / "pci" / "drivers" / fn.driver
            drv.mkdir(parents=True, exist_ok=True)
            _link(d / "driver", drv)
        if fn.physfn is not None:
            _link(d / "physfn", sysdir.joinpath("devices", *_devpath(fn.physfn)))
        if fn.bdf in groups:
            gdir = sysdir / "kernel" / "iommu_groups" / str(groups[fn.bdf])
            _write(gdir / "type", f"{spec['group_type']}\n")
            _link(gdir / "devices" / fn.bdf, d)
            _link(d / "iommu_group", gdir)
        _link(sysdir / "bus" / "pci" / "devices" / fn.bdf, d)
    units = spec.get("units") or {}
    assert isinstance(units, dict)
    (sysdir / "class" / "iommu").mkdir(parents=True, exist_ok=True)
    for unit, ecap in units.items():
        # Every sysfs device directory has a `uevent` file; it also keeps the unit's
        # directory in git, which drops empty ones.
        _write(sysdir / "class" / "iommu" / unit / "uevent", "")
        if ecap is not None:
            _write(sysdir / "class" / "iommu" / unit / "intel-iommu" / "ecap", f"{ecap:x}\n")
    _write(out / "proc" / "cmdline", f"{spec['cmdline']}\n")
    dmesg = spec.get("dmesg") or []
    assert isinstance(dmesg, list)
    if dmesg:
        _write(out / "dmesg.txt", "".join(f"[    0.{i:06d}] {line}\n"
                                          for i, line in enumerate(dmesg)))


def main() -> None:
    for name, spec in SNAPSHOTS.items():
        make(name, spec)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
