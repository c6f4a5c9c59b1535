"""Read `lspci -vvv` dumps of real machines into plain, frozen records.

What it reads: the text that pciutils 3.x prints for ``lspci -vvv`` (also ``-vv``, ``-nn``,
``-n``, ``-D``, ``-k``), taken as root. Output of pciutils 3.0 up to 3.14 is understood,
including the historic spellings of bridge windows (``0000f000-00000fff`` before 3.5.3,
``None`` / ``[empty]`` up to 3.6.2, ``[disabled]`` and ``[16-bit]`` later) and of the
Express header (``, MSI 00`` before 3.11, ``, IntMsgNum 0`` after). The strings matched are
the ``printf`` formats of pciutils' ``lspci.c`` (``show_slot_name``, ``show_terse``,
``show_verbose``, ``show_htype1``), ``ls-kernel.c`` (``show_kernel``) and, through
:mod:`passthru.importers.lspci_caps`, ``show_bases``, ``show_rom``, ``show_range``,
``ls-caps.c`` and ``ls-ecaps.c``.

What it keeps, per function: address, class, names and IDs, Express port type, bus numbers
and windows of bridges, BARs, which of MSI / MSI-X / ATS / PRI / PASID it has, the ACS
capability and control registers (PCIe r6.0 sec. 7.7.8: SV TB RR CR UF EC DT), the SR-IOV
numbers, whether it is an enabled VF of a PF in the same dump, the kernel driver and modules,
the IOMMU group and the physical slot.

What it refuses, raising :class:`passthru.errors.DumpParseError` as ``source:line: what``: a
dump taken without root (``Capabilities: <access denied>``: its ACS state is unknown, so IOMMU
groups derived from it would be wrong), a capability chain lspci could not walk, ACS or SR-IOV
capabilities printed without their registers (``lspci -v``), malformed device headers,
duplicated addresses, bridges without their ``Bus:`` line, undecodable BAR, window or ACS
lines, and column-0 lines that are not device headers.

What it leaves out: all other capabilities (power management, AER, link status, VPD, vendor
ones; pciutils prints many and they are skipped), CardBus windows, subsystem names, interrupt
routing, NUMA nodes, and the hex dump lines of ``-x`` (skipped, as are ``pcilib:`` warnings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from passthru.importers.lspci_caps import ACS_FLAG_NAMES, ROOT_HINT, CapState, Fail, show
from passthru.importers.lspci_caps import parse_bar as _parse_bar
from passthru.importers.lspci_caps import parse_window as _parse_window

__all__ = [
    "ACS_FLAG_NAMES",
    "BarRecord",
    "LspciDevice",
    "SriovRecord",
    "parse_lspci",
]


@dataclass(frozen=True)
class BarRecord:
    """One ``Region N:`` / ``Expansion ROM at`` line of a device (not a bridge window)."""

    index: int | None  # BAR number; None for the expansion ROM or `lspci -v` lines
    kind: str  # "memory" | "io" | "expansion-rom"
    address: int | None  # None when printed as <unassigned>, <ignored> or <broken-64-bit-slot>
    size: int | None  # bytes; None when lspci printed no [size=..]
    prefetchable: bool
    is_64bit: bool
    disabled: bool  # "[disabled]" (or "[disabled by cmd]" for a ROM)
    virtual: bool  # "[virtual]": reported by the OS but unassigned in the device


@dataclass(frozen=True)
class SriovRecord:
    """The numbers of an SR-IOV capability (ls-ecaps.c cap_sriov)."""

    total_vfs: int
    initial_vfs: int
    num_vfs: int
    vf_offset: int
    vf_stride: int
    vf_device_id: int | None


@dataclass(frozen=True)
class LspciDevice:
    """One PCI function as a root `lspci -vvv` printed it."""

    domain: int
    bus: int
    device: int
    function: int
    class_name: str  # "PCI bridge", "Ethernet controller", ...
    description: str  # vendor + device text as printed, without [vvvv:dddd]
    vendor_id: int | None  # from -nn / -n tags, or an unknown vendor's "Device vvvv:dddd"
    device_id: int | None
    class_code: int | None  # base class << 8 | subclass, from the [cccc] tag
    prog_if: int | None
    revision: int | None
    express_type: str | None  # "root-port", "downstream", ...; None for conventional PCI
    primary_bus: int | None
    secondary_bus: int | None
    subordinate_bus: int | None
    bars: tuple[BarRecord, ...]
    io_window: tuple[int, int] | None  # (base, limit) behind a bridge; None when disabled
    mem_window: tuple[int, int] | None
    pref_window: tuple[int, int] | None
    has_msi: bool
    has_msix: bool
    has_ats: bool
    has_pri: bool
    has_pasid: bool
    acs_cap: int | None  # ACS Capability register bits 0..6; None without an ACS capability
    acs_ctl: int | None  # ACS Control register bits 0..6
    sriov: SriovRecord | None
    is_virtfn: bool | None  # an enabled VF of an SR-IOV PF in the same dump
    kernel_driver: str | None
    kernel_modules: tuple[str, ...]
    iommu_group: int | None
    physical_slot: str | None
    line: int  # 1-based line of the device header

    @property
    def bdf(self) -> str:
        """The address as ``dddd:bb:dd.f``."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.device:02x}.{self.function}"

    @property
    def routing_id(self) -> int:
        """The 16-bit requester ID (bus << 8 | device << 3 | function)."""
        return (self.bus << 8) | (self.device << 3) | self.function


# show_slot_name: optional "%04x:" domain (VMD domains print 5 digits), "%02x:%02x.%d".
_HEADER = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})"
    r"\.(?P<fn>[0-7]) (?P<rest>.*)$"
)
# Anything that starts like an address: a broken header rather than stray text.
_HEADERISH = re.compile(r"^[0-9a-fA-F]{1,8}:\w{1,3}[:.]\w")
# `lspci -x` hex dump lines ("00: 86 80 ...") and pcilib's own warnings, both skipped.
_HEXDUMP = re.compile(r"^[0-9a-f]{2,3}:(?: [0-9a-f]{2}){1,16}\s*$")
_STDERR = ("pcilib: ", "lspci: ")

# show_terse: "CLASS: VENDOR DEVICE (rev xx) (prog-if xx [name])", -nn adds [cccc], [vvvv:dddd].
_PROG_IF = re.compile(r" \(prog-if (?P<pi>[0-9a-fA-F]{2})(?: \[.*\])?\)$")
_REV = re.compile(r" \(rev (?P<rev>[0-9a-fA-F]{2})\)$")
_ID_TAG = re.compile(r" ?\[(?P<v>[0-9a-fA-F]{4}):(?P<d>[0-9a-fA-F]{4})\]$")
_NUMERIC_IDS = re.compile(r"^(?:Device )?(?P<v>[0-9a-fA-F]{4}):(?P<d>[0-9a-fA-F]{4})$")
_CLASS_TAG = re.compile(r"^(?P<name>.*?) ?\[(?P<code>[0-9a-fA-F]{4})\]$")
_CLASS_NUMERIC = re.compile(r"^(?:Class )?(?P<code>[0-9a-fA-F]{4})$")

_BUS = re.compile(
    r"^Bus: primary=(?P<p>[0-9a-fA-F]{2}), secondary=(?P<s>[0-9a-fA-F]{2}), "
    r"subordinate=(?P<u>[0-9a-fA-F]{2}), sec-latency=\d+$"
)
_WINDOW = re.compile(r"^(?P<kind>I/O|Memory|Prefetchable memory) behind bridge:(?P<value>.*)$")
_FLAGS_GROUP = re.compile(r"\bIOMMU group (?P<g>\d+)\b")

# Class codes of functions with a type-1 (or CardBus) header, which always print a Bus: line.
_BRIDGE_CLASSES = {0x0604, 0x0607, 0x0609}
_BRIDGE_CLASS_NAMES = {"PCI bridge", "CardBus bridge", "Semi-transparent PCI-to-PCI bridge"}


@dataclass
class _Header:
    domain: int
    bus: int
    device: int
    function: int
    class_name: str
    class_code: int | None
    description: str
    vendor_id: int | None
    device_id: int | None
    revision: int | None
    prog_if: int | None

    @property
    def name(self) -> str:
        return f"{self.bus:02x}:{self.device:02x}.{self.function}"


def _parse_header(raw: str, lineno: int, fail: Fail) -> _Header:
    m = _HEADER.match(raw)
    if m is None:
        raise fail(lineno, f"device header with an unparsable address: {show(raw)}")
    cls, sep, desc = m["rest"].partition(": ")
    if not sep or not cls:
        raise fail(lineno, f"device header without a class name: {show(raw)}")
    prog_if = revision = None
    if pm := _PROG_IF.search(desc):
        prog_if = int(pm["pi"], 16)
        desc = desc[: pm.start()]
    if rm := _REV.search(desc):
        revision = int(rm["rev"], 16)
        desc = desc[: rm.start()]
    vendor_id = device_id = None
    if im := _ID_TAG.search(desc):  # -nn: "Intel Corporation Device [8086:a110]"
        vendor_id, device_id = int(im["v"], 16), int(im["d"], 16)
        desc = desc[: im.start()]
    elif nm := _NUMERIC_IDS.match(desc):  # -n "8086:a110", unknown vendor "Device 1b21:1080"
        vendor_id, device_id = int(nm["v"], 16), int(nm["d"], 16)
    class_code = None
    if cm := _CLASS_TAG.match(cls):  # -nn "PCI bridge [0604]"; also an unnamed subclass
        cls, class_code = cm["name"], int(cm["code"], 16)
    elif cn := _CLASS_NUMERIC.match(cls):  # -n "0604", or an unknown class "Class ff00"
        class_code = int(cn["code"], 16)
    return _Header(
        domain=int(m["domain"], 16) if m["domain"] else 0,
        bus=int(m["bus"], 16),
        device=int(m["dev"], 16),
        function=int(m["fn"]),
        class_name=cls,
        class_code=class_code,
        description=desc,
        vendor_id=vendor_id,
        device_id=device_id,
        revision=revision,
        prog_if=prog_if,
    )


@dataclass
class _Device:
    """Mutable state while one device block is read."""

    header: _Header
    line: int
    caps: CapState = field(default_factory=CapState)
    bus_numbers: tuple[int, int, int] | None = None
    windows: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    bars: list[BarRecord] = field(default_factory=list)
    kernel_driver: str | None = None
    kernel_modules: tuple[str, ...] = ()
    iommu_group: int | None = None
    physical_slot: str | None = None

    def top_level(self, text: str, lineno: int, fail: Fail) -> None:
        """One line at the device's own indentation."""
        if text.startswith("Capabilities:"):
            self.caps.header(text, lineno, fail)
            return
        self.caps.close(fail)
        if text.startswith("<access denied"):  # show_htype2: "<access denied to the rest>"
            raise fail(lineno, f"configuration space not readable ({show(text)}): {ROOT_HINT}")
        if text.startswith("Bus:"):
            m = _BUS.match(text)
            if m is None:
                raise fail(lineno, f"bridge Bus: line cannot be decoded: {show(text)}")
            if self.bus_numbers is not None:
                raise fail(lineno, f"second Bus: line in device {self.header.name}")
            self.bus_numbers = (int(m["p"], 16), int(m["s"], 16), int(m["u"], 16))
            return
        if m := _WINDOW.match(text):
            if m["kind"] in self.windows:
                raise fail(lineno, f"second '{m['kind']} behind bridge' line in one device")
            self.windows[m["kind"]] = _parse_window(m["value"], lineno, fail)
            return
        if (bar := _parse_bar(text, lineno, fail)) is not None:
            self.bars.append(BarRecord(*bar))
            return
        key, _, value = text.partition(":")
        value = value.strip()
        if key in ("Kernel driver in use", "Driver in use"):
            self.kernel_driver = value or None
        elif key == "Kernel modules":
            self.kernel_modules = tuple(mod.strip() for mod in value.split(",") if mod.strip())
        elif key == "IOMMU group":
            if not value.isdigit():
                raise fail(lineno, f"IOMMU group is not a number: {show(text)}")
            self.iommu_group = int(value)
        elif key == "Physical Slot":
            self.physical_slot = value
        elif key == "Flags" and (g := _FLAGS_GROUP.search(value)):  # `lspci -v` summary
            self.iommu_group = int(g["g"])

    def finish(self, fail: Fail) -> LspciDevice:
        caps, h = self.caps, self.header
        caps.close(fail)
        # By class, not by Express type: Intel's 00:00.0 DMI port is a host bridge (type-0
        # header, no Bus: line) that still advertises "Express Root Port".
        is_bridge = h.class_code in _BRIDGE_CLASSES or h.class_name in _BRIDGE_CLASS_NAMES
        if is_bridge and self.bus_numbers is None:
            raise fail(
                self.line,
                f"bridge {h.name} has no 'Bus: primary=.., secondary=.., subordinate=..' line",
            )
        sriov = None
        if caps.sriov_counts is not None and caps.sriov_offset is not None:
            initial, total, num = caps.sriov_counts
            offset, stride, vf_did = caps.sriov_offset
            sriov = SriovRecord(total, initial, num, offset, stride, vf_did)
        primary, secondary, subordinate = self.bus_numbers or (None, None, None)
        return LspciDevice(
            domain=h.domain,
            bus=h.bus,
            device=h.device,
            function=h.function,
            class_name=h.class_name,
            description=h.description,
            vendor_id=h.vendor_id,
            device_id=h.device_id,
            class_code=h.class_code,
            prog_if=h.prog_if,
            revision=h.revision,
            express_type=caps.express_type,
            primary_bus=primary,
            secondary_bus=secondary,
            subordinate_bus=subordinate,
            bars=tuple(self.bars),
            io_window=self.windows.get("I/O"),
            mem_window=self.windows.get("Memory"),
            pref_window=self.windows.get("Prefetchable memory"),
            has_msi=caps.has_msi,
            has_msix=caps.has_msix,
            has_ats=caps.has_ats,
            has_pri=caps.has_pri,
            has_pasid=caps.has_pasid,
            acs_cap=caps.acs_cap,
            acs_ctl=caps.acs_ctl,
            sriov=sriov,
            is_virtfn=None,
            kernel_driver=self.kernel_driver,
            kernel_modules=self.kernel_modules,
            iommu_group=self.iommu_group,
            physical_slot=self.physical_slot,
            line=self.line,
        )


def _indent(raw: str) -> int:
    expanded = raw.expandtabs(8)
    return len(expanded) - len(expanded.lstrip())


def _virtfn_ids(devices: list[LspciDevice]) -> set[tuple[int, int]]:
    """(domain, routing ID) of every enabled VF: PF RID + First VF Offset + i * VF Stride
    (SR-IOV r1.1 sec. 3.3.9/3.3.10; Linux pci_iov_virtfn_bus/devfn)."""
    vfs: set[tuple[int, int]] = set()
    for pf in devices:
        if pf.sriov is None:
            continue
        for i in range(pf.sriov.num_vfs):
            rid = pf.routing_id + pf.sriov.vf_offset + i * pf.sriov.vf_stride
            if rid <= 0xFFFF:
                vfs.add((pf.domain, rid))
    return vfs


def _unexpected(raw: str, lineno: int, current: _Device | None, fail: Fail) -> Exception:
    """The error for a column-0 line that is not a device header."""
    if _HEADERISH.match(raw):
        return fail(lineno, f"device header with an unparsable address: {show(raw)}")
    if current is None:
        return fail(
            lineno,
            f"expected a device header such as '00:1c.0 PCI bridge: ...', found {show(raw)} "
            "(is this lspci -vvv output?)",
        )
    return fail(
        lineno, f"unexpected unindented line inside device {current.header.name}: {show(raw)}"
    )


def parse_lspci(text: str, *, source: str = "<lspci>") -> list[LspciDevice]:
    """Parse the text of a root ``lspci -vvv`` dump into one record per function, in dump order.

    Raises DumpParseError (``source:line: what``) on anything it cannot read faithfully.
    """
    fail = Fail(source)
    devices: list[LspciDevice] = []
    seen: dict[tuple[int, int, int, int], int] = {}
    current: _Device | None = None
    top_indent: int | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if not raw[0].isspace():  # a device header, or nothing lspci prints at column 0
            if raw.startswith(_STDERR) or _HEXDUMP.match(raw):
                continue
            if _HEADER.match(raw) is None:
                raise _unexpected(raw, lineno, current, fail)
            if current is not None:
                devices.append(current.finish(fail))
            header = _parse_header(raw, lineno, fail)
            key = (header.domain, header.bus, header.device, header.function)
            if key in seen:
                raise fail(
                    lineno,
                    f"device {header.domain:04x}:{header.name} appears twice "
                    f"(first at line {seen[key]})",
                )
            seen[key] = lineno
            current, top_indent = _Device(header=header, line=lineno), None
            continue
        if current is None:
            raise fail(
                lineno,
                f"indented line before the first device header: {show(raw)} "
                "(is this lspci -vvv output?)",
            )
        indent = _indent(raw)
        if top_indent is None:
            top_indent = indent
        if indent <= top_indent:
            current.top_level(raw.strip(), lineno, fail)
        elif current.caps.current is not None:
            current.caps.nested(raw.strip(), lineno, fail)
    if current is not None:
        devices.append(current.finish(fail))
    if not devices:
        if text.strip():
            raise fail(1, "no device header found (is this lspci -vvv output?)")
        raise fail(1, "empty dump: no lspci output at all")
    vfs = _virtfn_ids(devices)
    return [
        replace(dev, is_virtfn=dev.sriov is None and (dev.domain, dev.routing_id) in vfs)
        for dev in devices
    ]
