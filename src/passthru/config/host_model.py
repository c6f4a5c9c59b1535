"""A host description file as typed models: the machine (cores, memory, IOMMU options), its
PCI hierarchy written as a tree, and the VMs with their pinned vCPUs and assigned devices.

Every model forbids unknown fields and is strict (no `"8"` for 8, no `1.0` for 1), so a typo
is an error that names the field instead of a silently ignored key. Sizes are strings with a
binary unit (`"64GiB"`, `"1.5MiB"`) or integers in bytes; PCI IDs are TOML hex integers
(`0x10de`) or hex strings (`"10de"`). What the models check alone (ranges, units, power-of-two
BARs, ACS controls inside the capability, SR-IOV counts) is checked here; what needs the
whole file (pinned cores exist, memory fits, slots are unique, devices exist after
enumeration, IOMMU groups are viable) is checked by `passthru.config.load`.

The PCI tree (`pci.root_port[*]`, `pci.device[*]` on the root bus, then `device[*]` below a
port or bridge and `port[*]` inside a switch) mirrors what `Topology`'s builder creates; bus
numbers, BDFs, BAR addresses and SR-IOV VFs come from enumeration, never from the file.

The models describe hardware and an assignment plan only: nothing here knows about the
hypervisor that will run the VMs.

Left out: several PCI domains or root buses, I/O BARs, expansion ROMs, hot-plug slots,
conventional PCI-to-PCI bridges behind a PCIe-to-PCI bridge, NUMA nodes, huge pages, CPU
models, and per-VM IOMMU (vIOMMU) options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from passthru.hw.pci.device import AcsSpec
from passthru.hw.pci.ids import format_bdf, parse_bdf
from passthru.hw.pci.regs import AcsFlags

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PAGE_SIZE = 4 * KiB
DEFAULT_RESERVED_MEMORY = 2 * GiB  # host kernel, QEMU processes and page tables
MAX_BAR_SIZE = TiB  # the model's cap on one BAR, far above any shipping device
MAX_TOTAL_VFS = 2048  # the model's cap on TotalVFs: each VF is a full PciFunction object

_UNITS = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_HEX_RE = re.compile(r"^(?:0[xX])?([0-9a-fA-F]+)$")
_VM_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def show(value: object) -> str:
    """A short rendering of a user's value for an error message."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- scalar types -------------------------------------------------------------------------------
def parse_size(value: object) -> int:
    """`"64GiB"`, `"1.5 MiB"`, `"4096"` or 4096 -> bytes. ValueError names the value."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'want a size such as "8GiB" or a number of bytes, got {show(value)}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f'{value!r} is not a size (want e.g. "8GiB", "512MiB" or bytes)')
    number, unit = m.group(1), m.group(2) or "B"
    if unit not in _UNITS:
        canonical = {u.lower(): u for u in _UNITS}
        hint = (f"; did you mean {canonical[unit.lower()]}?" if unit.lower() in canonical
                else "; decimal units are not accepted" if unit.upper().rstrip("B") in
                {"K", "M", "G", "T"} else "")
        raise ValueError(f"{value!r}: unknown unit {unit!r} (want B, KiB, MiB, GiB or TiB{hint})")
    exact = Decimal(number) * _UNITS[unit]
    if exact != exact.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(exact)


def format_size(size: int) -> str:
    """The largest binary unit that divides `size` exactly: 64GiB, 1536MiB, 100B."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


def _parse_hex(value: object, bits: int, what: str) -> int:
    limit = (1 << bits) - 1
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"want a {what} as 0x... or a hex string, got {show(value)}")
    if isinstance(value, str):
        m = _HEX_RE.match(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a hex {what}")
        value = int(m.group(1), 16)
    if value < 0:
        raise ValueError(f"{what} {value} is negative")
    if value > limit:
        raise ValueError(f"{what} 0x{value:x} does not fit in {bits} bits")
    return value


def _pci_id(value: object) -> int:
    return _parse_hex(value, 16, "16-bit ID")


# Readable class names for the classes the model's device kinds use (PCI Code and ID
# Assignment spec, 1.x); any other class is given as hex.
CLASS_NAMES = {
    "host-bridge": 0x060000, "vga": 0x030000, "3d": 0x030200, "audio": 0x040300,
    "multimedia-audio": 0x040100, "nvme": 0x010802, "sata": 0x010601, "ethernet": 0x020000,
    "usb": 0x0C0330, "can": 0x0C0900, "serial-bus": 0x0C8000, "system": 0x088000,
}


def _class_code(value: object) -> int:
    """A class name (`"nvme"`), 4 hex digits as lspci -nn prints them (`"0300"`: base class
    and subclass, prog-if 0), 6 hex digits, or a 24-bit integer."""
    if isinstance(value, str) and value in CLASS_NAMES:
        return CLASS_NAMES[value]
    if isinstance(value, str):
        digits = value.strip().removeprefix("0x").removeprefix("0X")
        if len(digits) == 4 and _HEX_RE.match(digits):
            return int(digits, 16) << 8
        if len(digits) != 6 or not _HEX_RE.match(digits):
            raise ValueError(f"{value!r} is not a class: want 4 or 6 hex digits or one of "
                             f"{', '.join(CLASS_NAMES)}")
    return _parse_hex(value, 24, "24-bit class code")


def _bdf(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"want a PCI address string such as \"0000:01:00.0\", got {show(value)}")
    return format_bdf(*parse_bdf(value))


Size = Annotated[int, BeforeValidator(parse_size)]
PciId = Annotated[int, BeforeValidator(_pci_id)]
ClassCode = Annotated[int, BeforeValidator(_class_code)]
Bdf = Annotated[str, BeforeValidator(_bdf)]
Slot = Annotated[int, Field(ge=0, le=0x1F)]
Function = Annotated[int, Field(ge=0, le=7)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- capabilities -------------------------------------------------------------------------------
AcsBit = Literal["SV", "TB", "RR", "CR", "UF", "EC", "DT"]
_ACS_IMPLEMENTED = ["SV", "TB", "RR", "CR", "UF", "DT"]
ACS_PRESETS: dict[str, dict[str, Any] | None] = {
    # What pci_std_enable_acs() leaves enabled where the capability exists.
    "full": {"cap": _ACS_IMPLEMENTED, "ctl": ["SV", "RR", "CR", "UF"]},
    # Capability present, every control clear (as firmware leaves it before Linux enables it).
    "off": {"cap": _ACS_IMPLEMENTED, "ctl": []},
    # No ACS capability at all (the default).
    "none": None,
}


class AcsConfig(_Model):
    """An ACS extended capability: implemented bits, enabled bits, egress control vector."""

    cap: list[AcsBit]
    ctl: list[AcsBit] = []
    egress_vector: int = Field(default=0, ge=0, le=0xFFFF_FFFF)
    ecvs: int = Field(default=0, ge=0, le=0xFF)

    @field_validator("ctl")
    @classmethod
    def _ctl_within_cap(cls, ctl: list[str], info: ValidationInfo) -> list[str]:
        cap = info.data.get("cap")
        missing = [b for b in ctl if cap is not None and b not in cap]
        if missing:
            raise ValueError(f"{', '.join(missing)} enabled but not implemented in cap "
                             "(an unimplemented ACS control reads as 0)")
        return ctl

    @model_validator(mode="after")
    def _egress_needs_ec(self) -> AcsConfig:
        if (self.egress_vector or self.ecvs) and "EC" not in self.cap:
            raise ValueError("egress_vector and ecvs need EC (P2P Egress Control) in cap")
        return self

    def to_spec(self) -> AcsSpec:
        def flags(names: Sequence[str]) -> AcsFlags:
            out = AcsFlags(0)
            for name in names:
                out |= AcsFlags[name]
            return out

        return AcsSpec(cap=flags(self.cap), ctl=flags(self.ctl),
                       egress_vector=self.egress_vector, ecvs=self.ecvs)


def _acs(value: object) -> object:
    if isinstance(value, str):
        if value not in ACS_PRESETS:
            raise ValueError(f'{value!r} is not an ACS setting (want "full", "off", "none" or '
                             'a table {cap = [...], ctl = [...]})')
        return ACS_PRESETS[value]
    if value is not None and not isinstance(value, dict):
        raise ValueError(f'want "full", "off", "none" or a table {{cap = [...], ctl = [...]}}, '
                         f"got {show(value)}")
    return value


Acs = Annotated[AcsConfig | None, BeforeValidator(_acs)]


def _check_bar_size(size: int, bits: int = 64) -> int:
    if size < 16 or size & (size - 1):
        raise ValueError(f"BAR size {format_size(size)} is not a power of two >= 16 bytes")
    if size > (MAX_BAR_SIZE if bits == 64 else 2 * GiB):
        raise ValueError(f"BAR size {format_size(size)} is above the "
                         f"{format_size(MAX_BAR_SIZE if bits == 64 else 2 * GiB)} "
                         f"a {bits}-bit BAR may have here")
    return size


class BarConfig(_Model):
    """A memory BAR. Prefetchable defaults to true for 64-bit BARs of 16MiB and more."""

    size: Size
    bits: Literal[32, 64] = 64
    prefetchable: bool | None = None

    @model_validator(mode="after")
    def _size_ok(self) -> BarConfig:
        _check_bar_size(self.size, self.bits)
        return self

    @property
    def is_prefetchable(self) -> bool:
        if self.prefetchable is not None:
            return self.prefetchable
        return self.bits == 64 and self.size >= 16 * MiB


def _bar(value: object) -> object:
    """A bare size is shorthand for {size = ...}; its errors then belong to bars[i]."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return {"size": _check_bar_size(parse_size(value))}
    return value


Bars = Annotated[list[Annotated[BarConfig, BeforeValidator(_bar)]], Field(max_length=6)]


def _vf_bar(value: object) -> int:
    size = _check_bar_size(parse_size(value))
    if size < PAGE_SIZE:
        raise ValueError(f"VF BAR size {format_size(size)} is below the 4KiB system page size")
    return size


class SriovConfig(_Model):
    """SR-IOV capability of a physical function (SR-IOV 1.1, 3.3). VFs are created by
    enumeration at routing IDs PF + vf_offset + i * vf_stride."""

    total_vfs: int = Field(ge=1, le=MAX_TOTAL_VFS)
    num_vfs: int = Field(default=0, ge=0)
    vf_offset: int = Field(default=1, ge=1, le=0xFFFF)
    vf_stride: int = Field(default=1, ge=1, le=0xFFFF)
    vf_device_id: PciId
    vf_bars: Annotated[list[Annotated[int, BeforeValidator(_vf_bar)]],
                       Field(max_length=6)] = [0x4000]

    @field_validator("num_vfs")
    @classmethod
    def _num_within_total(cls, num: int, info: ValidationInfo) -> int:
        total = info.data.get("total_vfs")
        if total is not None and num > total:
            raise ValueError(f"num_vfs {num} is above total_vfs {total}")
        return num


# -- the PCI tree -------------------------------------------------------------------------------
class _FunctionConfig(_Model):
    """Fields every function kind has."""

    slot: Slot = 0
    function: Function = 0
    name: str = ""
    vendor_id: PciId = 0x8086
    device_id: PciId = 0x0000
    class_code: ClassCode = Field(default=0x000000, alias="class")
    bars: Bars = []
    msi: bool = True
    msix: bool = False
    multifunction: bool = False  # force the header's multifunction bit on a lone function 0


class EndpointConfig(_FunctionConfig):
    """A PCIe endpoint function (below a root port or a switch downstream port)."""

    kind: Literal["endpoint"] = "endpoint"
    acs: Acs = None
    ats: bool = False
    sriov: SriovConfig | None = None


class RcEndpointConfig(EndpointConfig):
    """A root complex integrated endpoint (on the root bus)."""

    kind: Literal["rc-endpoint"] = "rc-endpoint"  # type: ignore[assignment]


class PciDeviceConfig(_FunctionConfig):
    """A conventional PCI function: behind a PCIe-to-PCI bridge, or on the root bus (such as
    the host bridge). It has no PCI Express capability, hence no ACS, ATS or SR-IOV."""

    kind: Literal["pci"]


class SwitchPortConfig(_Model):
    """A switch downstream port; ports are numbered by their position in `port`."""

    acs: Acs = None
    device: list[DeviceConfig] = []


class SwitchConfig(_Model):
    """A PCIe switch: an upstream port (function 0 at `slot`) and its downstream ports."""

    kind: Literal["switch"]
    slot: Slot = 0
    name: str = "PCIe switch"
    vendor_id: PciId = 0x10B5
    device_id: PciId = 0x8747
    port: Annotated[list[SwitchPortConfig], Field(min_length=1, max_length=32)]


class PcieToPciBridgeConfig(_Model):
    """A PCIe-to-PCI/PCI-X bridge; its `device` entries are conventional PCI functions."""

    kind: Literal["pcie-to-pci-bridge"]
    slot: Slot = 0
    function: Function = 0
    name: str = "PCIe to PCI/PCI-X Bridge"
    vendor_id: PciId = 0x104C  # a real PCIe-to-PCI bridge part: TI XIO2001
    device_id: PciId = 0x8240
    device: list[DeviceConfig] = []


DEVICE_KINDS = ("endpoint", "rc-endpoint", "pci", "switch", "pcie-to-pci-bridge")


def _kind_of(value: object) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "endpoint")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


# One union for every `device` list; which kinds may sit where is checked by the loader,
# so the error can say why ("below a PCIe port", "behind a PCIe-to-PCI bridge").
DeviceConfig = Annotated[
    Annotated[EndpointConfig, Tag("endpoint")]
    | Annotated[RcEndpointConfig, Tag("rc-endpoint")]
    | Annotated[PciDeviceConfig, Tag("pci")]
    | Annotated[SwitchConfig, Tag("switch")]
    | Annotated[PcieToPciBridgeConfig, Tag("pcie-to-pci-bridge")],
    Discriminator(_kind_of, custom_error_type="device_kind",
                  custom_error_message="unknown device kind",
                  custom_error_context={"kinds": ", ".join(DEVICE_KINDS)}),
]


class RootPortConfig(_Model):
    """A PCIe root port on the root bus (00:slot.function) with what is below its link."""

    slot: Slot
    function: Function = 0
    name: str = "PCI Express Root Port"
    vendor_id: PciId = 0x8086
    device_id: PciId = 0x0000
    acs: Acs = None
    device: list[DeviceConfig] = []


class PciConfig(_Model):
    """The root bus (domain 0000, bus 00): root ports and the other root-bus functions."""

    root_port: list[RootPortConfig] = []
    device: list[DeviceConfig] = []
    rc_p2p: bool = True  # the root complex routes peer-to-peer between its root ports


SwitchPortConfig.model_rebuild()
SwitchConfig.model_rebuild()
PcieToPciBridgeConfig.model_rebuild()
RootPortConfig.model_rebuild()
PciConfig.model_rebuild()


# -- host and VMs -------------------------------------------------------------------------------
class IommuConfig(_Model):
    """The host IOMMU (VT-d style) and the kernel options that shape it."""

    enabled: bool = True  # intel_iommu=on
    mode: Literal["translated", "identity"] = "translated"  # identity: iommu=pt
    strict: bool = True  # false: lazy invalidation through a flush queue (iommu.strict=0)
    interrupt_remapping: bool = True
    posted_interrupts: bool = False
    # vfio_iommu_type1 allow_unsafe_interrupts: assignment without interrupt remapping.
    allow_unsafe_interrupts: bool = False
    iotlb_entries: int = Field(default=512, ge=1, le=1 << 20)
    address_width: Literal[39, 48, 57] = 48  # 3-, 4- or 5-level second-level tables
    acs_override: str = ""  # pcie_acs_override= what-if: downstream,multifunction,id:v:d

    @field_validator("address_width")
    @classmethod
    def _modelled_width(cls, width: int) -> int:
        if width == 57:  # refused here, so that `passthru check` agrees with hv.build
            raise ValueError("5-level (57-bit) second-level tables are not modelled; use 39 "
                             "or 48")
        return width

    @field_validator("posted_interrupts")
    @classmethod
    def _posted_needs_remapping(cls, posted: bool, info: ValidationInfo) -> bool:
        if posted and info.data.get("interrupt_remapping") is False:
            raise ValueError("posted interrupts are a mode of interrupt remapping entries; "
                             "they need interrupt_remapping = true")
        return posted

    @field_validator("acs_override")
    @classmethod
    def _override_parses(cls, text: str) -> str:
        from passthru.analysis.acs import AcsOverride
        from passthru.errors import ConfigError

        if text.strip():
            try:
                AcsOverride.parse(text)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return text


class MachineConfig(_Model):
    """The `[host]` table: the physical machine."""

    name: str = Field(min_length=1)
    cores: int = Field(ge=1, le=4096)
    memory: Size
    reserved_memory: Size = DEFAULT_RESERVED_MEMORY
    allow_shared_cores: bool = False
    iommu: IommuConfig = Field(default_factory=IommuConfig)

    @field_validator("memory")
    @classmethod
    def _positive(cls, size: int) -> int:
        if size < PAGE_SIZE or size % PAGE_SIZE:
            raise ValueError(f"{format_size(size)} is not a positive multiple of 4KiB pages")
        return size

    @field_validator("reserved_memory")
    @classmethod
    def _within_memory(cls, size: int, info: ValidationInfo) -> int:
        memory = info.data.get("memory")
        if memory is not None and size > memory:
            raise ValueError(f"{format_size(size)} is more than host.memory "
                             f"{format_size(memory)}")
        return size


EMULATED_DEVICES = ("nvme", "e1000", "virtio-blk", "virtio-net", "virtio-gpu", "vga",
                    "usb-xhci", "tpm")
EmulatedDevice = Literal["nvme", "e1000", "virtio-blk", "virtio-net", "virtio-gpu", "vga",
                         "usb-xhci", "tpm"]


class VmConfig(_Model):
    """A `[[vm]]`: memory, one host core per vCPU, assigned (VFIO) devices by BDF."""

    name: str = Field(pattern=_VM_NAME_RE)
    memory: Size
    vcpus: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=1024)]
    devices: list[Bdf] = []
    emulated: list[EmulatedDevice] = []

    @field_validator("memory")
    @classmethod
    def _pages(cls, size: int) -> int:
        if size < PAGE_SIZE or size % PAGE_SIZE:
            raise ValueError(f"{format_size(size)} is not a positive multiple of 4KiB pages")
        return size


class HostFile(_Model):
    """A whole host description file."""

    host: MachineConfig
    pci: PciConfig = Field(default_factory=PciConfig)
    vm: list[VmConfig] = []
