"""Reading a host description: TOML text -> validated `HostFile` -> built, enumerated
`Topology`, its IOMMU groups and each VM's assigned functions (`HostConfig`).

Checks, in order, each failing with one `ConfigError` line `file:line: field.path: message`:
TOML syntax (`file:line:col`), the schema (`host_model`), VM names, vCPU pinning against
`host.cores` and `host.allow_shared_cores`, guest memory against `host.memory` minus
`host.reserved_memory`, the PCI tree (where each kind may sit, unique slot/function, function
0 present), enumeration (VF routing IDs that collide, bus numbers, MMIO space), then the
assignments: the BDF exists after enumeration, is not a bridge, is assigned once, the IOMMU
and interrupt remapping are on (vfio_iommu_type1 refuses otherwise), and every IOMMU group a
VM touches is viable (VFIO: every endpoint of the group bound to vfio-pci for the same user,
`vfio_group_viable()`; bridges may stay with the host's pcieport driver).

Line numbers come from a light scan of table headers and `key =` lines; a field the scan
cannot place (deep inside an inline table or array) gets the line of its nearest parent.
Left out: several files (includes), environment overrides, and writing files (the loader only
reads: nothing is ever half-written).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import IommuGroup, compute_iommu_groups
from passthru.config.host_model import (
    DEVICE_KINDS,
    EndpointConfig,
    HostFile,
    MachineConfig,
    PciDeviceConfig,
    PcieToPciBridgeConfig,
    RcEndpointConfig,
    RootPortConfig,
    SwitchConfig,
    VmConfig,
    format_size,
    show,
)
from passthru.errors import AssignmentError, ConfigError, OutOfResources, PassthruError
from passthru.hv.vfio import Vfio
from passthru.hw.pci.device import Bar, PciBus, PciFunction, SriovSpec
from passthru.hw.pci.regs import PcieType
from passthru.hw.pci.topology import Topology

Path = tuple[str | int, ...]


class HostAssignmentError(ConfigError, AssignmentError):
    """An assignment in a host file is impossible (a ConfigError and an AssignmentError)."""


class HostResourcesError(ConfigError, OutOfResources):
    """A host file's PCI tree does not fit (bus numbers, MMIO); also an OutOfResources."""


@dataclass
class HostConfig:
    """A validated host file with its built, enumerated topology and its assignments."""

    model: HostFile
    source: str
    topology: Topology
    groups: list[IommuGroup]  # [] when host.iommu.enabled is false (Linux has none then)
    assigned: dict[str, list[PciFunction]]  # vm name -> functions, in `devices` order
    acs_override: AcsOverride | None
    paths: dict[str, str] = field(default_factory=dict)  # BDF -> field path in the file

    @property
    def host(self) -> MachineConfig:
        return self.model.host

    @property
    def vms(self) -> list[VmConfig]:
        return self.model.vm

    def group_of(self, fn: PciFunction | str) -> IommuGroup | None:
        bdf = fn if isinstance(fn, str) else fn.bdf
        for group in self.groups:
            if any(d.bdf == bdf for d in group.devices):
                return group
        return None

    def __repr__(self) -> str:
        return (f"<HostConfig {self.host.name!r} from {self.source}: {len(self.vms)} VM(s), "
                f"{len(self.groups)} IOMMU group(s)>")


# -- errors with a field path -------------------------------------------------------------------
class _Problem(Exception):
    """One user error found while checking: where (a field path) and what."""

    def __init__(self, path: Path, message: str, *, show_path: bool = True,
                 error: type[ConfigError] = ConfigError) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.show_path = show_path
        self.error = error


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: Sequence[str | int]) -> str:
    """('vm', 1, 'vcpus', 0) -> 'vm[1].vcpus[0]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if _BARE_KEY.match(part) else json.dumps(part))
    return out


class _Locator:
    """Field path -> line number, from table headers (`[a.b]`, `[[a.b]]`) and `key =` lines."""

    _HEADER = re.compile(r"^\s*(\[\[?)([^\[\]]+)\]\]?\s*(?:#.*)?$")
    _KEYPART = r"(?:[A-Za-z0-9_-]+|\"[^\"\\]*\"|'[^']*')"
    _KEY = re.compile(rf"^\s*({_KEYPART}(?:\s*\.\s*{_KEYPART})*)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        counts: dict[Path, int] = {}
        section: Path = ()
        open_quote: str | None = None

        def resolve(names: list[str]) -> Path:
            cur: Path = ()
            for name in names:
                cur += (name,)
                if cur in counts:
                    cur += (counts[cur] - 1,)
            return cur

        for lineno, line in enumerate(text.split("\n"), 1):
            if open_quote is not None:  # inside a multi-line string
                if line.count(open_quote) % 2:
                    open_quote = None
                continue
            header = self._HEADER.match(line)
            if header:
                names = self._split(header.group(2))
                if header.group(1) == "[[" and names:
                    key = resolve(names[:-1]) + (names[-1],)
                    counts[key] = counts.get(key, 0) + 1
                    section = key + (counts[key] - 1,)
                else:
                    section = resolve(names)
                self.lines.setdefault(section, lineno)
                continue
            key_line = self._KEY.match(line)
            if key_line:
                self.lines.setdefault(section + tuple(self._split(key_line.group(1))), lineno)
                rest = line[key_line.end():]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2:
                        open_quote = quote

    @classmethod
    def _split(cls, dotted: str) -> list[str]:
        return [p.strip("\"'") for p in re.findall(cls._KEYPART, dotted)]

    def line_of(self, path: Path) -> int | None:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def _raise(problem: _Problem, source: str, text: str | None) -> typing.NoReturn:
    line = _Locator(text).line_of(problem.path) if text is not None else None
    where = f"{source}:{line}" if line is not None else source
    what = (f"{format_path(problem.path)}: {problem.message}"
            if problem.show_path and problem.path else problem.message)
    raise problem.error(f"{where}: {what}") from None


# -- pydantic errors -> one line ----------------------------------------------------------------
_KIND_MODELS: dict[str, type[BaseModel]] = {
    "endpoint": EndpointConfig, "rc-endpoint": RcEndpointConfig, "pci": PciDeviceConfig,
    "switch": SwitchConfig, "pcie-to-pci-bridge": PcieToPciBridgeConfig,
}


def _clean_loc(loc: Sequence[str | int]) -> Path:
    """Drop the union tag pydantic puts after `device[i]`."""
    out: list[str | int] = []
    for part in loc:
        if (part in DEVICE_KINDS and len(out) >= 2 and isinstance(out[-1], int)
                and out[-2] == "device"):
            continue
        out.append(part)
    return tuple(out)


def _unwrap(tp: Any) -> Any:
    """Annotated[X, ...], list[X], X | None -> X; a union of several models stays."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated or origin is list:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The field names of the model at `loc` (a raw pydantic location, tags included)."""
    tp: Any = HostFile
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or name): f for name, f in tp.model_fields.items()}
            if part not in fields:
                return []
            tp = fields[part].annotation
        elif part in _KIND_MODELS:
            tp = _KIND_MODELS[part]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


_TYPE_WORDS = {
    "model_type": "a table", "dict_type": "a table", "model_attributes_type": "a table",
    "list_type": "an array", "int_type": "an integer", "int_parsing": "an integer",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
}


def _from_validation_error(exc: ValidationError) -> _Problem:
    err = exc.errors(include_url=False)[0]
    raw_loc = err["loc"]
    path = _clean_loc(raw_loc)
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(raw_loc[-1]) if raw_loc else ""
        allowed = _allowed_keys(raw_loc[:-1])
        close = difflib.get_close_matches(name, allowed, n=1)
        message = (f'unknown field (did you mean "{close[0]}"?)' if close else
                   f"unknown field (allowed: {', '.join(allowed)})" if allowed else
                   "unknown field")
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "device_kind":
        if isinstance(value, dict):
            path += ("kind",)
            message = (f"{show(value.get('kind'))} is not a device kind "
                       f"(want one of {ctx.get('kinds')})")
        else:
            message = f"want a table, got {show(value)}"
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", err["msg"]))
    elif kind in _TYPE_WORDS:
        message = f"want {_TYPE_WORDS[kind]}, got {show(value)}"
    elif kind == "string_pattern_mismatch":
        message = (f"{show(value)} is not a valid name (letters, digits, '_', '.', '-'; "
                   "starting with a letter or digit; at most 64)")
    else:
        text = err["msg"]
        message = f"{text[:1].lower()}{text[1:]}, got {show(value)}"
    return _Problem(path, message)


# -- reading ------------------------------------------------------------------------------------
_TOML_POS = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)


def load_host(path: str | os.PathLike[str]) -> HostConfig:
    """Read, validate and build the host described by the TOML file at `path`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{source}: cannot read: {reason}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})"
                          ) from None
    return load_host_text(text, source)


def parse_host_text(text: str, source: str = "<string>") -> HostFile:
    """TOML syntax and schema only: the validated model, no topology built."""
    return _parse(text, source)


def _parse(text: str, source: str) -> HostFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.match(msg)
        if m:
            raise ConfigError(f"{source}:{m.group(2)}:{m.group(3)}: {m.group(1)}") from None
        raise ConfigError(f"{source}: {msg}") from None
    try:
        return HostFile.model_validate(data)
    except ValidationError as exc:
        _raise(_from_validation_error(exc), source, text)


def load_host_text(text: str, source: str = "<string>") -> HostConfig:
    """Validate and build the host described by TOML `text`; `source` names it in errors."""
    model = _parse(text, source)
    try:
        return _Builder(model, source).build()
    except _Problem as problem:
        _raise(problem, source, text)


def build_host(model: HostFile, source: str = "<model>") -> HostConfig:
    """Check and build an already validated model (for hosts described in Python)."""
    try:
        return _Builder(model, source).build()
    except _Problem as problem:
        _raise(problem, source, None)


# -- checks across the file and building --------------------------------------------------------
_WHERE = {
    "root": (("rc-endpoint", "pci", "pcie-to-pci-bridge"),
             "on the root bus (root ports go in pci.root_port)"),
    "port": (("endpoint", "switch", "pcie-to-pci-bridge"), "below a PCIe port"),
    "bridge": (("pci",), "behind a PCIe-to-PCI bridge (only conventional PCI functions)"),
}
_PCIE_TYPE = {"endpoint": PcieType.ENDPOINT, "rc-endpoint": PcieType.RC_END, "pci": None}
_BRIDGE_WORDS = {PcieType.ROOT_PORT: "PCIe root port", PcieType.UPSTREAM: "switch upstream port",
                 PcieType.DOWNSTREAM: "switch downstream port",
                 PcieType.PCI_BRIDGE: "PCIe-to-PCI bridge"}
_FunctionLike = EndpointConfig | RcEndpointConfig | PciDeviceConfig
_Entry = tuple[Path, Any]


class _Builder:
    def __init__(self, model: HostFile, source: str) -> None:
        self.model = model
        self.source = source
        self.topo = Topology(rc_p2p=model.pci.rc_p2p)
        self.paths: dict[int, Path] = {}  # id(PciFunction) -> path
        self.created: list[PciFunction] = []

    def build(self) -> HostConfig:
        self._check_vms()
        self._build_tree()
        self._enumerate()
        iommu = self.model.host.iommu
        override = AcsOverride.parse(iommu.acs_override) if iommu.acs_override.strip() else None
        groups = compute_iommu_groups(self.topo, override) if iommu.enabled else []
        assigned = self._check_assignments(groups)
        paths = {}
        for fn in self.topo.functions():
            pf = fn.physfn
            path = self.paths[id(pf)] + ("sriov",) if pf is not None else self.paths[id(fn)]
            paths[fn.bdf] = format_path(path)
        return HostConfig(self.model, self.source, self.topo, groups, assigned, override, paths)

    # -- vCPUs and memory -----------------------------------------------------------------------
    def _check_vms(self) -> None:
        host, vms = self.model.host, self.model.vm
        names: dict[str, int] = {}
        for i, vm in enumerate(vms):
            if vm.name in names:
                raise _Problem(("vm", i, "name"),
                               f'"{vm.name}" is already the name of vm[{names[vm.name]}]')
            names[vm.name] = i
        pinned: dict[int, tuple[int, int]] = {}
        for i, vm in enumerate(vms):
            for k, core in enumerate(vm.vcpus):
                path = ("vm", i, "vcpus", k)
                if core >= host.cores:
                    raise _Problem(path, f"core {core} does not exist (host.cores = "
                                         f"{host.cores}: cores 0-{host.cores - 1})")
                if core in pinned and not host.allow_shared_cores:
                    oi, ok = pinned[core]
                    raise _Problem(path, f'core {core} is already pinned to vcpu {ok} of vm '
                                         f'"{vms[oi].name}" (set host.allow_shared_cores = '
                                         "true to share cores)")
                pinned.setdefault(core, (i, k))
        available = host.memory - host.reserved_memory
        total = 0
        for i, vm in enumerate(vms):
            total += vm.memory
            if total > available:
                raise _Problem(("vm", i, "memory"), (
                    f'guests need {format_size(total)} up to vm "{vm.name}" but host.memory '
                    f"{format_size(host.memory)} minus host.reserved_memory "
                    f"{format_size(host.reserved_memory)} leaves {format_size(available)}"))
            width = host.iommu.address_width
            if vm.devices and vm.memory > 1 << width:
                raise _Problem(("vm", i, "memory"), (
                    f"{format_size(vm.memory)} of guest memory cannot be mapped for DMA by a "
                    f"{width}-bit IOMMU (host.iommu.address_width = {width}: "
                    f"{format_size(1 << width)})"))

    # -- the PCI tree ---------------------------------------------------------------------------
    def _build_tree(self) -> None:
        pci = self.model.pci
        root = self.topo.root_bus()
        entries: list[_Entry] = [(("pci", "root_port", i), rp)
                                 for i, rp in enumerate(pci.root_port)]
        entries += [(("pci", "device", i), d) for i, d in enumerate(pci.device)]
        self._add_bus(root, entries, "root")

    def _add_bus(self, parent: PciBus | PciFunction, entries: list[_Entry], where: str) -> None:
        allowed, place = _WHERE[where]
        for path, cfg in entries:
            kind = getattr(cfg, "kind", None)
            if kind is not None and kind not in allowed:
                raise _Problem(path + ("kind",), f'"{kind}" cannot sit {place}; want '
                                                 f"{' or '.join(allowed)}")
        self._check_slots(entries, below_port=where == "port")
        for path, cfg in entries:
            try:
                self._add(parent, path, cfg)
            except PassthruError as exc:  # the builder's own checks, already named above
                raise _Problem(path, str(exc)) from None

    @staticmethod
    def _check_slots(entries: list[_Entry], *, below_port: bool) -> None:
        seen: dict[tuple[int, int], Path] = {}
        for path, cfg in entries:
            slot, fn = cfg.slot, getattr(cfg, "function", 0)
            if below_port and slot != 0:
                raise _Problem(path + ("slot",), (
                    f"{slot}: below a PCIe port only device 0 exists (a link is point to "
                    "point; Linux's only_one_child() scans device 0 only)"))
            if (slot, fn) in seen:
                raise _Problem(path + ("slot",), (
                    f"slot {slot} function {fn} is already taken by "
                    f"{format_path(seen[(slot, fn)])}"))
            seen[(slot, fn)] = path
        for (slot, fn), path in seen.items():
            if fn and (slot, 0) not in seen:
                raise _Problem(path + ("function",), (
                    f"function {fn} at slot {slot} has no function 0 beside it: Linux's "
                    "pci_scan_slot() would never find it"))

    def _record(self, fn: PciFunction, path: Path) -> PciFunction:
        self.paths[id(fn)] = path
        self.created.append(fn)
        return fn

    def _add(self, parent: PciBus | PciFunction, path: Path, cfg: Any) -> None:
        t = self.topo
        if isinstance(cfg, RootPortConfig):
            assert isinstance(parent, PciBus)
            rp = self._record(t.add_root_port(
                cfg.slot, cfg.function, bus=parent, name=cfg.name, vendor_id=cfg.vendor_id,
                device_id=cfg.device_id, acs=cfg.acs.to_spec() if cfg.acs else None), path)
            self._add_bus(rp, [(path + ("device", i), d) for i, d in enumerate(cfg.device)],
                          "port")
        elif isinstance(cfg, SwitchConfig):
            sw = t.add_switch(parent, len(cfg.port), slot=cfg.slot,
                              acs=[p.acs.to_spec() if p.acs else None for p in cfg.port],
                              vendor_id=cfg.vendor_id, device_id=cfg.device_id, name=cfg.name)
            self._record(sw.upstream, path)
            for i, (port, down) in enumerate(zip(cfg.port, sw.downstream, strict=True)):
                ppath = path + ("port", i)
                self._record(down, ppath)
                self._add_bus(down, [(ppath + ("device", j), d)
                                     for j, d in enumerate(port.device)], "port")
        elif isinstance(cfg, PcieToPciBridgeConfig):
            br = self._record(t.add_function(
                parent, cfg.slot, cfg.function, pcie_type=PcieType.PCI_BRIDGE, msi=False,
                name=cfg.name, vendor_id=cfg.vendor_id, device_id=cfg.device_id), path)
            self._add_bus(br, [(path + ("device", i), d) for i, d in enumerate(cfg.device)],
                          "bridge")
        else:
            self._add_function(parent, path, cfg)

    def _add_function(self, parent: PciBus | PciFunction, path: Path,
                      cfg: _FunctionLike) -> None:
        extra: dict[str, Any] = {}
        if isinstance(cfg, EndpointConfig):  # also RcEndpointConfig
            s = cfg.sriov
            extra = dict(acs=cfg.acs.to_spec() if cfg.acs else None, ats=cfg.ats, sriov=(
                SriovSpec(total_vfs=s.total_vfs, num_vfs=s.num_vfs, vf_offset=s.vf_offset,
                          vf_stride=s.vf_stride, vf_device_id=s.vf_device_id,
                          vf_bars=tuple(s.vf_bars)) if s is not None else None))
        bars = [Bar(index=i, size=b.size, is_64=b.bits == 64, prefetchable=b.is_prefetchable)
                for i, b in enumerate(cfg.bars)]
        self._record(self.topo.add_function(
            parent, cfg.slot, cfg.function, pcie_type=_PCIE_TYPE[cfg.kind],
            vendor_id=cfg.vendor_id, device_id=cfg.device_id, class_code=cfg.class_code,
            name=cfg.name, bars=bars, msi=cfg.msi, msix=cfg.msix,
            multifunction=cfg.multifunction or None, **extra), path)

    def _enumerate(self) -> None:
        try:
            self.topo.enumerate()
        except PassthruError as exc:
            # _add_virtfns() runs PF by PF in probe order: the first PF still short of VFs
            # is the one whose VF routing IDs failed.
            error = HostResourcesError if isinstance(exc, OutOfResources) else ConfigError
            for fn in self.topo.functions():
                s = fn.sriov
                if str(exc).startswith("VF ") and s is not None and len(fn.virtfns) < s.num_vfs:
                    raise _Problem(self.paths[id(fn)] + ("sriov",), str(exc),
                                   error=error) from None
            raise _Problem(("pci",), str(exc), error=error) from None

    # -- assignments ----------------------------------------------------------------------------
    def _check_assignments(self, groups: list[IommuGroup]) -> dict[str, list[PciFunction]]:
        iommu, vms = self.model.host.iommu, self.model.vm
        by_bdf = {fn.bdf: fn for fn in self.topo.functions()}
        owner: dict[str, tuple[int, int]] = {}
        assigned: dict[str, list[PciFunction]] = {}
        for i, vm in enumerate(vms):
            fns = assigned.setdefault(vm.name, [])
            for j, bdf in enumerate(vm.devices):
                path = ("vm", i, "devices", j)
                fn = by_bdf.get(bdf)
                if fn is None:
                    raise _Problem(path, f"no PCI function at {bdf} after enumeration",
                                   error=HostAssignmentError)
                if fn.is_bridge:
                    what = _BRIDGE_WORDS.get(fn.pcie_type, "PCI bridge")  # type: ignore[arg-type]
                    raise _Problem(path, (
                        f"{bdf} is a {what}; vfio-pci binds only type 0 (non-bridge) "
                        "functions"), error=HostAssignmentError)
                if bdf in owner:
                    oi, oj = owner[bdf]
                    where = (f"listed already as vm[{oi}].devices[{oj}]" if oi == i else
                             f'already assigned to vm "{vms[oi].name}" '
                             f"(vm[{oi}].devices[{oj}])")
                    raise _Problem(path, f"{bdf} is {where}", error=HostAssignmentError)
                if not iommu.enabled:
                    raise _Problem(path, (
                        f"{bdf}: device assignment (VFIO) needs an IOMMU, but "
                        "host.iommu.enabled = false"), error=HostAssignmentError)
                if not iommu.interrupt_remapping and not iommu.allow_unsafe_interrupts:
                    raise _Problem(path, (
                        f"{bdf}: vfio_iommu_type1 refuses assignment without interrupt "
                        "remapping (host.iommu.interrupt_remapping = false); set "
                        "host.iommu.allow_unsafe_interrupts = true to accept MSI spoofing"),
                        error=HostAssignmentError)
                owner[bdf] = (i, j)
                fns.append(fn)
        group_of = {d.bdf: g for g in groups for d in g.devices}
        for i, vm in enumerate(vms):
            seen: set[int] = set()
            for j, fn in enumerate(assigned[vm.name]):
                group = group_of[fn.bdf]
                if group.id in seen:
                    continue
                seen.add(group.id)
                for other in group.devices:
                    if Vfio.bridge_may_stay(other):
                        continue  # PCIe ports and bridges stay with the host (pcieport)
                    holder = owner.get(other.bdf)
                    if holder is not None and holder[0] == i:
                        continue
                    why = ("it stays with the host" if holder is None else
                           f'it is assigned to vm "{vms[holder[0]].name}"')
                    raise _Problem(("vm", i, "devices", j), (
                        f'vm "{vm.name}": IOMMU group {group.id} is not viable: {other.bdf} '
                        f'is not assigned to vm "{vm.name}" ({why}; VFIO needs every endpoint '
                        "of a group in one VM)"), show_path=False, error=HostAssignmentError)
        return assigned
