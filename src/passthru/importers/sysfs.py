"""Read a Linux sysfs tree (the live `/`, or a saved copy of one) into a Topology and the
kernel's own IOMMU facts.

What it reads, under a root directory (``/`` on the live machine):

* ``sys/bus/pci/devices/DDDD:BB:DD.F``: a symlink to the device's directory under
  ``sys/devices/pciDDDD:BB/...``. The path of that directory is the device tree Linux built
  (Documentation/ABI/testing/sysfs-bus-pci; a bridge's children are its subdirectories, SR-IOV
  VFs sit beside their PF, `pci_iov_add_virtfn()`), so parent/child relations come from it,
  as in Linux; an entry that is a plain directory falls back to the bridges' bus numbers.
* per device: ``config`` (the binary configuration space, 4096 bytes when read as root, 256 or
  64 otherwise; drivers/pci/pci-sysfs.c `pci_read_config()`), decoded exactly: header type,
  bridge bus numbers (0x18..0x1a) and memory windows, the capability list (PCI Express
  Device/Port Type, Link Capabilities port number) and the extended list (ACS capability and
  control registers at their real offset, ATS, SR-IOV) -- the registers are kept byte for
  byte in the function's ConfigSpace; ``vendor``, ``device``, ``class`` (``0x030000``); ``resource``
  (`resource_show()`: ``0x%016llx 0x%016llx 0x%016llx`` start, end, flags, BARs on lines 0..5);
  the ``driver``, ``iommu_group`` and ``physfn`` links (a snapshot may hold the link target as
  a text file instead).
* ``sys/kernel/iommu_groups/N/type`` (Documentation/ABI/testing/sysfs-kernel-iommu_groups,
  drivers/iommu/iommu.c `iommu_group_show_type()`: ``DMA``, ``DMA-FQ``, ``identity``,
  ``blocked``, ``unmanaged``).
* ``sys/class/iommu/*``: the IOMMU units; for Intel ``dmar*/intel-iommu/ecap`` (VT-d 11.4.3:
  ECAP.IR is bit 3).
* ``proc/cmdline``: ``iommu=pt``, ``iommu.passthrough=``, ``iommu.strict=``, ``intel_iommu=``,
  ``amd_iommu=``, ``intremap=``, ``pcie_acs_override=``.
* interrupt remapping state: ``dmesg.txt`` of a snapshot (``DMAR-IR: Enabled IRQ remapping``,
  ``AMD-Vi: Interrupt remapping enabled``), ``proc/interrupts`` (``IR-PCI-MSI`` chips), the
  ECAP.IR bit, ``intremap=off``.

Every problem is a DumpParseError naming the file. Left out: non-PCI members of IOMMU groups
(platform devices), I/O BARs and I/O windows, VMD domains (`pci_real_dma_dev()`), the AMD IVRS
table, reading dmesg on the live machine (the kernel log needs privileges and may have
rotated; `proc/interrupts` is used instead).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from passthru.errors import DumpParseError
from passthru.hw.pci.device import Bar, PciBus, PciFunction
from passthru.hw.pci.ids import pci_devfn
from passthru.hw.pci.regs import (
    CONFIG_SPACE_SIZE,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_SIZE,
    PCI_EXP_FLAGS,
    PCI_EXP_LNKCAP,
    PCI_HEADER_TYPE,
    PCI_MEMORY_BASE,
    PCI_MEMORY_LIMIT,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
    PCI_PREF_MEMORY_LIMIT,
    PCI_SECONDARY_BUS,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_SUBORDINATE_BUS,
    CapId,
    ExtCapId,
    PcieType,
)
from passthru.hw.pci.topology import Topology

__all__ = ["HostIommuFacts", "KernelGroup", "facts_from_lspci", "load_sysfs"]

_BDF = re.compile(r"^([0-9a-f]{4,8}):([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$")
_HEADER_SIZE = 64  # what a non-root reader gets (pci_read_config(): !CAP_SYS_ADMIN)
GROUP_TYPES = ("DMA", "DMA-FQ", "identity", "blocked", "unmanaged", "unknown")
# include/linux/ioport.h
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_MEM_64 = 0x00100000
# pciutils' pci.ids base-class names, for functions the model's table does not name.
_BASE_CLASS_NAMES = {
    0x00: "Unclassified device", 0x01: "Mass storage controller", 0x02: "Network controller",
    0x03: "Display controller", 0x04: "Multimedia controller", 0x05: "Memory controller",
    0x06: "Bridge", 0x07: "Communication controller", 0x08: "Generic system peripheral",
    0x09: "Input device controller", 0x0A: "Docking station", 0x0B: "Processor",
    0x0C: "Serial bus controller", 0x0D: "Wireless controller",
    0x0E: "Intelligent controller", 0x0F: "Satellite communications controller",
    0x10: "Encryption controller", 0x11: "Signal processing controller",
    0x12: "Processing accelerators", 0x13: "Non-Essential Instrumentation",
}


@dataclass(frozen=True)
class KernelGroup:
    """One `/sys/kernel/iommu_groups/N`: its default-domain type and PCI members."""

    id: int
    type: str | None  # None when the `type` file is absent (kernels before 5.3, lspci)
    devices: tuple[str, ...]


@dataclass(frozen=True)
class CmdlineFlags:
    """The IOMMU-relevant kernel parameters (Documentation/admin-guide/kernel-parameters)."""

    text: str
    passthrough: bool | None  # iommu=pt / iommu.passthrough=1 -> True; =0 / iommu=nopt -> False
    strict: bool | None  # iommu.strict=
    iommu_off: bool  # intel_iommu=off, amd_iommu=off, iommu=off
    intremap_off: bool  # intremap=off
    acs_override: str | None  # pcie_acs_override=... (out-of-tree patch)
    intremap_nosid: bool = False  # intremap=nosid: IRTE source-id verification off (SVT=0)

    @staticmethod
    def parse(text: str) -> CmdlineFlags:
        passthrough: bool | None = None
        strict: bool | None = None
        iommu_off = intremap_off = nosid = False
        acs = None
        for token in text.split():
            if token == "--":
                break  # the rest belongs to init
            key, _, value = token.partition("=")
            if key == "iommu":
                for opt in value.split(","):
                    if opt == "pt":
                        passthrough = True
                    elif opt == "nopt":
                        passthrough = False
                    elif opt == "off":
                        iommu_off = True
            elif key == "iommu.passthrough":
                passthrough = value in ("1", "y", "Y", "on")
            elif key == "iommu.strict":
                strict = value in ("1", "y", "Y", "on")
            elif key in ("intel_iommu", "amd_iommu"):
                opts = value.split(",")
                if "off" in opts:
                    iommu_off = True
                # intel_iommu=strict and amd_iommu=fullflush: older spellings of iommu.strict=1
                if "strict" in opts or (key == "amd_iommu" and "fullflush" in opts):
                    strict = True
            elif key == "intremap":
                opts = value.split(",")
                intremap_off = intremap_off or "off" in opts
                # drivers/iommu/irq_remapping.c setup_irqremap: "nosid" sets
                # disable_sourceid_checking; intel/irq_remapping.c set_irte_sid then writes
                # SVT = 0 (no verification) into every IRTE.
                nosid = nosid or "nosid" in opts
            elif key == "pcie_acs_override":
                acs = value
        return CmdlineFlags(text, passthrough, strict, iommu_off, intremap_off, acs, nosid)


@dataclass
class HostIommuFacts:
    """What the kernel of a real host says about its IOMMU, beside the PCI topology."""

    source: str
    kind: str = "sysfs"  # "sysfs" or "lspci": where the facts come from
    iommu_units: tuple[str, ...] = ()  # /sys/class/iommu entries (dmar0, ivhd0, smmu3.0x...)
    groups: dict[int, KernelGroup] = field(default_factory=dict)
    cmdline: CmdlineFlags | None = None
    interrupt_remapping: bool | None = None  # None: could not be determined
    ir_evidence: str = ""
    header_only: tuple[str, ...] = ()  # config read without root: 64 bytes, no capabilities
    no_ext_config: tuple[str, ...] = ()  # PCIe functions whose 4 KiB space was not readable
    warnings: list[str] = field(default_factory=list)

    @property
    def iommu_present(self) -> bool:
        return bool(self.iommu_units or self.groups)

    @property
    def group_types(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for g in self.groups.values():
            out.setdefault(g.type or "unknown", []).append(g.id)
        return out

    def as_json(self) -> dict[str, object]:
        c = self.cmdline
        return {
            "source": self.source,
            "kind": self.kind,
            "iommu_present": self.iommu_present,
            "iommu_units": list(self.iommu_units),
            "groups": {str(g.id): {"type": g.type, "devices": list(g.devices)}
                       for g in sorted(self.groups.values(), key=lambda g: g.id)},
            "cmdline": None if c is None else {
                "text": c.text, "passthrough": c.passthrough, "strict": c.strict,
                "iommu_off": c.iommu_off, "intremap_off": c.intremap_off,
                "pcie_acs_override": c.acs_override},
            "interrupt_remapping": self.interrupt_remapping,
            "interrupt_remapping_evidence": self.ir_evidence,
            "config_header_only": list(self.header_only),
            "config_without_extended_space": list(self.no_ext_config),
            "warnings": list(self.warnings),
        }


# -- small readers ------------------------------------------------------------------------------

def _show(text: str, limit: int = 40) -> str:
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(CONFIG_SPACE_SIZE + 1)
    except OSError as exc:
        raise DumpParseError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_text(path: str, *, limit: int = 1 << 16) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit)
    except OSError as exc:
        raise DumpParseError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return raw.decode("utf-8", errors="replace")


def _hex_file(path: str, width: int) -> int:
    """A sysfs `0x%04x` / `0x%06x` attribute."""
    text = _read_text(path, limit=64).strip()
    if not re.fullmatch(rf"0x[0-9a-fA-F]{{1,{width}}}", text):
        raise DumpParseError(f"{path}: expected a hex number like 0x{'0' * width}, "
                             f"found {_show(text)}")
    return int(text, 16)


def _link_name(path: str) -> str | None:
    """The last component of a link target (`driver`, `iommu_group`, `physfn`), or of the
    text a snapshot saved instead of the link; None when absent."""
    if os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise DumpParseError(f"{path}: cannot read link: {exc.strerror or exc}") from None
    elif os.path.isfile(path):
        target = _read_text(path, limit=4096).strip()
    else:
        return None
    name = target.rstrip("/").rsplit("/", 1)[-1]
    if not name or any(c.isspace() for c in name):
        raise DumpParseError(f"{path}: link target {_show(target)} has no usable name")
    return name


# -- configuration space ------------------------------------------------------------------------

@dataclass
class _Config:
    data: bytes

    def u8(self, off: int) -> int:
        return self.data[off] if off < len(self.data) else 0

    def u16(self, off: int) -> int:
        return int.from_bytes(self.data[off:off + 2].ljust(2, b"\0"), "little")

    def u32(self, off: int) -> int:
        return int.from_bytes(self.data[off:off + 4].ljust(4, b"\0"), "little")


def _find_cap(cfg: _Config, cap_id: int, path: str) -> int:
    """pci_find_capability() with PCI_FIND_CAP_TTL; a looping list is a parse error."""
    if len(cfg.data) < PCI_CFG_SPACE_SIZE or not cfg.u16(PCI_STATUS) & PCI_STATUS_CAP_LIST:
        return 0
    pos, ttl = cfg.u8(PCI_CAPABILITY_LIST) & ~3, 48
    while pos >= 0x40:
        if not ttl:
            raise DumpParseError(f"{path}: capability list at 0x34 loops")
        if cfg.u8(pos) == 0xFF:
            return 0
        if cfg.u8(pos) == cap_id:
            return pos
        pos, ttl = cfg.u8(pos + 1) & ~3, ttl - 1
    return 0


def _ext_caps(cfg: _Config, path: str) -> dict[int, int]:
    """Extended capability ID -> offset of its first instance (pci_find_ext_capability())."""
    out: dict[int, int] = {}
    if len(cfg.data) < CONFIG_SPACE_SIZE:
        return out
    pos, ttl = PCI_CFG_SPACE_SIZE, (CONFIG_SPACE_SIZE - PCI_CFG_SPACE_SIZE) // 8
    while pos:
        hdr = cfg.u32(pos)
        if hdr in (0, 0xFFFFFFFF):
            break
        if not ttl:
            raise DumpParseError(f"{path}: extended capability list at 0x100 loops")
        out.setdefault(hdr & 0xFFFF, pos)
        nxt = (hdr >> 20) & ~3
        if nxt and (nxt < PCI_CFG_SPACE_SIZE or nxt > CONFIG_SPACE_SIZE - 4):
            raise DumpParseError(f"{path}: extended capability at 0x{pos:03x} points to "
                                 f"0x{nxt:03x}, outside 0x100..0xffc")
        pos, ttl = nxt, ttl - 1
    return out


def _windows(cfg: _Config) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """A type-1 header's memory and prefetchable windows (PCI-to-PCI Bridge 1.2, 3.2.5.8-9)."""
    base = (cfg.u16(PCI_MEMORY_BASE) & 0xFFF0) << 16
    limit = ((cfg.u16(PCI_MEMORY_LIMIT) & 0xFFF0) << 16) | 0xFFFFF
    mem = (base, limit) if base <= limit else None
    pb, pl = cfg.u16(PCI_PREF_MEMORY_BASE), cfg.u16(PCI_PREF_MEMORY_LIMIT)
    pbase, plimit = (pb & 0xFFF0) << 16, ((pl & 0xFFF0) << 16) | 0xFFFFF
    if pb & 0xF == 1:  # 64-bit prefetchable window
        pbase |= cfg.u32(PCI_PREF_BASE_UPPER32) << 32
        plimit |= cfg.u32(PCI_PREF_LIMIT_UPPER32) << 32
    pref = (pbase, plimit) if pbase <= plimit else None
    return mem, pref


def _bars(path: str) -> list[Bar]:
    """Memory BARs from `resource` lines 0..5 (pci-sysfs.c resource_show())."""
    if not os.path.exists(path):
        return []
    bars = []
    for lineno, line in enumerate(_read_text(path).splitlines()[:6], start=1):
        parts = line.split()
        try:
            if len(parts) != 3:
                raise ValueError
            start, end, flags = (int(p, 16) for p in parts)
        except ValueError:
            raise DumpParseError(f"{path}:{lineno}: expected 'start end flags' in hex, "
                                 f"found {_show(line)}") from None
        if not flags & IORESOURCE_MEM or not start or end < start:
            continue
        size = end - start + 1
        if size < 16 or size & (size - 1):
            raise DumpParseError(f"{path}:{lineno}: BAR{lineno - 1} size 0x{size:x} is not a "
                                 "power of two >= 16")
        bars.append(Bar(index=lineno - 1, size=size, is_64=bool(flags & IORESOURCE_MEM_64),
                        prefetchable=bool(flags & IORESOURCE_PREFETCH), address=start))
    return bars


# -- devices ------------------------------------------------------------------------------------

@dataclass
class _Dev:
    bdf: str
    domain: int
    bus: int
    devfn: int
    dir: str  # the device's directory (resolved)
    ancestors: tuple[str, ...] | None  # BDFs above it in sys/devices; None: not a link
    cfg: _Config
    vendor: int
    device: int
    class_code: int
    pcie_type: PcieType | None
    port_number: int
    header_type: int
    acs_pos: int
    driver: str | None
    group: int | None
    physfn: str | None

    @property
    def is_bridge(self) -> bool:
        return self.header_type in (1, 2)

    @property
    def bus_range(self) -> tuple[int, int]:
        return self.cfg.u8(PCI_SECONDARY_BUS), self.cfg.u8(PCI_SUBORDINATE_BUS)


def _read_device(root: str, entry: str, facts: HostIommuFacts) -> _Dev:
    link = os.path.join(root, "sys", "bus", "pci", "devices", entry)
    m = _BDF.match(entry)
    if m is None:
        raise DumpParseError(f"{link}: not a PCI address (want dddd:bb:dd.f)")
    domain, bus = int(m[1], 16), int(m[2], 16)
    devfn = pci_devfn(int(m[3], 16), int(m[4]))
    ancestors: tuple[str, ...] | None = None
    directory = link
    if os.path.islink(link):
        target = os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
        devices_dir = os.path.join(os.path.normpath(root), "sys", "devices") + os.sep
        if not target.startswith(devices_dir) or os.path.basename(target) != entry:
            raise DumpParseError(f"{link}: links to {_show(os.readlink(link), 80)}, not to "
                                 f"a sys/devices/.../{entry} directory")
        parts = target[len(devices_dir):].split(os.sep)
        ancestors = tuple(p for p in parts[:-1] if _BDF.match(p))
        directory = target
    if not os.path.isdir(directory):
        raise DumpParseError(f"{link}: the device directory is missing")
    cfg_path = os.path.join(directory, "config")
    data = _read_bytes(cfg_path)
    if len(data) < _HEADER_SIZE or len(data) not in (64, 256, 4096):
        raise DumpParseError(f"{cfg_path}: {len(data)} bytes; a config file has 64, 256 or "
                             "4096 bytes")
    cfg = _Config(data)
    vendor = _id_file(directory, "vendor", 4, cfg.u16(0))
    device = _id_file(directory, "device", 4, cfg.u16(2))
    class_code = _id_file(directory, "class", 6, cfg.u32(8) >> 8)
    header_type = cfg.u8(PCI_HEADER_TYPE) & 0x7F
    if header_type > 2:
        raise DumpParseError(f"{cfg_path}: header type {header_type} at 0x0e (want 0, 1 or 2)")
    pcie_type, port = None, 0
    if pos := _find_cap(cfg, CapId.EXP, cfg_path):
        raw = (cfg.u16(pos + PCI_EXP_FLAGS) >> 4) & 0xF
        try:
            pcie_type = PcieType(raw)
        except ValueError:
            raise DumpParseError(f"{cfg_path}: PCI Express capability at 0x{pos:02x} has the "
                                 f"reserved Device/Port Type {raw}") from None
        port = cfg.u32(pos + PCI_EXP_LNKCAP) >> 24
    ext = _ext_caps(cfg, cfg_path)
    if len(data) == _HEADER_SIZE:
        facts.header_only += (entry,)
    elif len(data) < CONFIG_SPACE_SIZE and pcie_type is not None:
        facts.no_ext_config += (entry,)
    group_link = os.path.join(directory, "iommu_group")
    group_name = _link_name(group_link)
    if group_name is not None and not group_name.isdigit():
        raise DumpParseError(f"{group_link}: points to {_show(group_name)}, not to an "
                             "iommu_groups/N directory")
    physfn = _link_name(os.path.join(directory, "physfn"))
    if physfn is not None and not _BDF.match(physfn):
        raise DumpParseError(f"{os.path.join(directory, 'physfn')}: points to {_show(physfn)}, "
                             "not to a PCI address")
    return _Dev(entry, domain, bus, devfn, directory, ancestors, cfg, vendor, device, class_code,
                pcie_type, port, header_type, ext.get(ExtCapId.ACS, 0),
                _link_name(os.path.join(directory, "driver")),
                int(group_name) if group_name is not None else None, physfn)


def _id_file(directory: str, name: str, width: int, fallback: int) -> int:
    path = os.path.join(directory, name)
    return _hex_file(path, width) if os.path.exists(path) else fallback


# -- the tree -----------------------------------------------------------------------------------

def _parent_of(dev: _Dev, devs: dict[str, _Dev]) -> _Dev | None:
    """The bridge above `dev`: from its sys/devices path, else from bus numbers."""
    if dev.ancestors is not None:
        if not dev.ancestors:
            return None
        name = dev.ancestors[-1]
        if name not in devs:
            raise DumpParseError(f"{dev.dir}: its parent {name} is not in sys/bus/pci/devices")
        return devs[name]
    holders = [d for d in devs.values() if d.is_bridge and d.domain == dev.domain
               and d.bus_range[0] <= dev.bus <= d.bus_range[1] and d is not dev]
    if not holders:
        return None
    return min(holders, key=lambda d: d.bus_range[1] - d.bus_range[0])


def _build(devs: dict[str, _Dev]) -> Topology:
    topo = Topology()
    made: dict[str, PciFunction] = {}
    buses: dict[tuple[int, int], PciBus] = {}
    parents = {name: _parent_of(d, devs) for name, d in devs.items()}

    def depth(name: str) -> int:
        n, cur = 0, parents[name]
        while cur is not None:
            n, cur = n + 1, parents[cur.bdf]
            if n > 256:
                raise DumpParseError(f"{devs[name].dir}: the device path loops")
        return n

    for name in sorted(devs, key=lambda n: (depth(n), n)):
        dev, parent = devs[name], parents[name]
        bus = _bus_for(topo, dev, parent, made, buses)
        fn = topo.add_function(bus, dev.devfn >> 3, dev.devfn & 7, pcie_type=dev.pcie_type,
                               vendor_id=dev.vendor, device_id=dev.device,
                               class_code=dev.class_code, msi=False, driver=dev.driver,
                               port_number=dev.port_number)
        _fit_bridge(fn, bus, dev)
        fn.config.data[:] = bytes(CONFIG_SPACE_SIZE)
        fn.config.data[:len(dev.cfg.data)] = dev.cfg.data[:CONFIG_SPACE_SIZE]
        fn.acs_cap_pos = dev.acs_pos
        if not fn.class_name:
            fn.class_name = _BASE_CLASS_NAMES.get(dev.class_code >> 16, "Class")
        fn.revision = dev.cfg.u8(8)
        fn.iommu_group_hint = dev.group
        fn.bars = _bars(os.path.join(dev.dir, "resource"))
        if fn.subordinate is not None:
            fn.mem_window, fn.pref_window = _windows(dev.cfg)
        made[name] = fn
    for name, dev in devs.items():  # VFs: physfn links (pci_iov_add_virtfn() sysfs_create_link)
        if dev.physfn is None:
            continue
        pf = made.get(dev.physfn)
        if pf is None:
            raise DumpParseError(f"{os.path.join(dev.dir, 'physfn')}: PF {dev.physfn} is not in "
                                 "sys/bus/pci/devices")
        made[name].physfn = pf
        pf.virtfns.append(made[name])
        made[name].multifunction = pf.header_multifunction()
    return topo.enumerate(assign_buses=False, assign_bars=False)


def _bus_for(topo: Topology, dev: _Dev, parent: _Dev | None, made: dict[str, PciFunction],
             buses: dict[tuple[int, int], PciBus]) -> PciBus:
    if parent is None:
        return topo.root_bus(dev.bus, dev.domain)
    pfn = made[parent.bdf]
    if pfn.subordinate is None:
        raise DumpParseError(f"{dev.dir}: sits below {parent.bdf}, which is not a bridge "
                             f"(header type {parent.header_type})")
    sec, sub = parent.bus_range
    if dev.bus == sec:
        return pfn.subordinate
    if sec < dev.bus <= sub:  # an SR-IOV virtual bus (virtfn_add_bus())
        key = (dev.domain, dev.bus)
        if key not in buses:
            buses[key] = PciBus(number=dev.bus, domain=dev.domain, parent=pfn.subordinate,
                                is_virtual=True)
            pfn.subordinate.children.append(buses[key])
        return buses[key]
    raise DumpParseError(f"{os.path.join(parent.dir, 'config')}: bridge forwards buses "
                         f"{sec:02x}..{sub:02x} but {dev.bdf} below it is on bus {dev.bus:02x}")


def _fit_bridge(fn: PciFunction, bus: PciBus, dev: _Dev) -> None:
    """The header type decides bridge-ness (Intel's DMI port 00:00.0 is a type-0 host bridge
    that advertises "Root Port"); add_function() guessed from the Express type."""
    if dev.is_bridge and fn.subordinate is None:
        fn.is_bridge = True
        fn.subordinate = PciBus(number=-1, domain=bus.domain, parent=bus, self_=fn)
        bus.children.append(fn.subordinate)
    elif not dev.is_bridge and fn.subordinate is not None:
        bus.children.remove(fn.subordinate)
        fn.subordinate, fn.is_bridge = None, False
    if fn.subordinate is not None:
        fn.subordinate.number = dev.bus_range[0]


# -- IOMMU facts --------------------------------------------------------------------------------

def _kernel_groups(root: str, devs: dict[str, _Dev]) -> dict[int, KernelGroup]:
    base = os.path.join(root, "sys", "kernel", "iommu_groups")
    members: dict[int, list[str]] = {}
    for d in devs.values():
        if d.group is not None:
            members.setdefault(d.group, []).append(d.bdf)
    ids = set(members)
    if os.path.isdir(base):
        for name in os.listdir(base):
            if not name.isdigit():
                raise DumpParseError(f"{os.path.join(base, name)}: not a group number")
            ids.add(int(name))
    groups = {}
    for gid in sorted(ids):
        path = os.path.join(base, str(gid), "type")
        gtype = None
        if os.path.exists(path):
            gtype = _read_text(path, limit=64).strip()
            if gtype not in GROUP_TYPES:
                raise DumpParseError(f"{path}: unknown domain type {_show(gtype)} (want one of "
                                     f"{', '.join(GROUP_TYPES)})")
        groups[gid] = KernelGroup(gid, gtype, tuple(sorted(members.get(gid, []))))
    return groups


def _iommu_units(root: str) -> tuple[str, ...]:
    base = os.path.join(root, "sys", "class", "iommu")
    return tuple(sorted(os.listdir(base))) if os.path.isdir(base) else ()


def _interrupt_remapping(root: str, facts: HostIommuFacts) -> None:
    """Enabled / disabled / unknown, with the line that decided it."""
    cmd = facts.cmdline
    if cmd is not None and cmd.intremap_off:
        facts.interrupt_remapping, facts.ir_evidence = False, "intremap=off on the command line"
        return
    dmesg = os.path.join(root, "dmesg.txt")
    if os.path.isfile(dmesg):
        for line in _read_text(dmesg, limit=1 << 24).splitlines():
            if re.search(r"DMAR-IR: Enabled IRQ remapping|AMD-Vi: Interrupt remapping enabled",
                         line):
                facts.interrupt_remapping, facts.ir_evidence = True, f"dmesg: {line.strip()}"
                return
            if re.search(r"IRQ remapping disabled|Not enabling interrupt remapping|"
                         r"Failed to enable irq remapping", line, re.IGNORECASE):
                facts.interrupt_remapping, facts.ir_evidence = False, f"dmesg: {line.strip()}"
                return
    interrupts = os.path.join(root, "proc", "interrupts")
    if os.path.isfile(interrupts):
        text = _read_text(interrupts, limit=1 << 22)
        if re.search(r"\bIR-(?:PCI-MSI|PCI-MSIX|IO-APIC)", text):
            facts.interrupt_remapping = True
            facts.ir_evidence = "proc/interrupts: IR-PCI-MSI / IR-IO-APIC interrupt chips"
            return
        x86_units = [u for u in facts.iommu_units if u.startswith(("dmar", "ivhd"))]
        if x86_units and re.search(r"\bPCI-MSI", text):
            facts.interrupt_remapping = False
            facts.ir_evidence = ("proc/interrupts: MSIs go through PCI-MSI, not IR-PCI-MSI, "
                                 f"although {x86_units[0]} is present")
            return
    ecaps = []
    for unit in facts.iommu_units:
        path = os.path.join(root, "sys", "class", "iommu", unit, "intel-iommu", "ecap")
        if os.path.isfile(path):
            text = _read_text(path, limit=64).strip()
            try:
                ecaps.append((unit, int(text, 16)))
            except ValueError:
                raise DumpParseError(f"{path}: not a hex number: {_show(text)}") from None
    if ecaps:
        lacking = [u for u, e in ecaps if not e >> 3 & 1]  # VT-d 11.4.3 ECAP.IR
        if lacking:
            facts.interrupt_remapping = False
            facts.ir_evidence = f"{lacking[0]}: ECAP.IR (bit 3) is clear: no interrupt remapping"
        else:
            # ECAP.IR says the hardware can remap; GSTS.IRES (whether the kernel enabled it)
            # is not in sysfs, and firmware (DMAR x2APIC opt-out) or the kernel may not have.
            facts.interrupt_remapping = None
            facts.ir_evidence = ("ECAP.IR (bit 3) set on " + ", ".join(u for u, _ in ecaps)
                                 + ": capable, but whether it is enabled is not visible")


def load_sysfs(root: str = "/") -> tuple[Topology, HostIommuFacts]:
    """Read the PCI tree and IOMMU facts under `root`; DumpParseError names the bad file."""
    if not os.path.isdir(root):
        raise DumpParseError(f"{root}: not a directory (want the root of a sysfs snapshot)")
    pci = os.path.join(root, "sys", "bus", "pci", "devices")
    if not os.path.isdir(pci):
        raise DumpParseError(f"{pci}: missing (is {root} a sysfs snapshot? see "
                             "scripts/capture-sysfs.sh)")
    facts = HostIommuFacts(source=root)
    try:
        entries = sorted(os.listdir(pci))
        devs = {e: _read_device(root, e, facts) for e in entries}
    except OSError as exc:
        raise DumpParseError(f"{exc.filename or pci}: cannot read: {exc.strerror}") from None
    facts.iommu_units = _iommu_units(root)
    facts.groups = _kernel_groups(root, devs)
    cmdline = os.path.join(root, "proc", "cmdline")
    if os.path.isfile(cmdline):
        facts.cmdline = CmdlineFlags.parse(_read_text(cmdline).strip())
    _interrupt_remapping(root, facts)
    if facts.header_only:
        facts.warnings.append(
            f"{len(facts.header_only)} config file(s) gave only the 64-byte header (read "
            "without root): no capabilities, so Express types and ACS are unknown; run as root")
    elif facts.no_ext_config:
        facts.warnings.append(
            f"{len(facts.no_ext_config)} PCI Express function(s) without the 4 KiB extended "
            "config space: their ACS capability cannot be seen and counts as absent")
    return _build(devs), facts


def facts_from_lspci(topo: Topology, source: str) -> HostIommuFacts:
    """The facts an lspci dump carries: group membership (`IOMMU group:` lines), no types,
    no command line, no interrupt-remapping state."""
    members: dict[int, list[str]] = {}
    for fn in topo.functions():
        if fn.iommu_group_hint is not None:
            members.setdefault(fn.iommu_group_hint, []).append(fn.bdf)
    groups = {g: KernelGroup(g, None, tuple(sorted(b))) for g, b in members.items()}
    return HostIommuFacts(source=source, kind="lspci", groups=groups)
