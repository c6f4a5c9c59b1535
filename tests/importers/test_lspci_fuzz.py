"""Property tests for parse_lspci.

1. Mutated real dumps (lines dropped, duplicated, swapped, garbled, garbage inserted, the text
   cut anywhere) either parse or raise DumpParseError: never any other exception.
2. Dumps printed from random records by a small writer that follows pciutils' printf formats
   parse back to exactly those records (in every spelling: -D or not, -nn or not, tabs or
   spaces, old or new window and Express formats).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passthru.errors import DumpParseError
from passthru.importers.lspci import (
    ACS_FLAG_NAMES,
    BarRecord,
    LspciDevice,
    SriovRecord,
    parse_lspci,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "lspci"
DUMPS = {
    path.name: path.read_text()
    for path in sorted(DATA.glob("*.txt"))
    if path.stat().st_size < 60_000  # the big server dump adds time, not new line kinds
}

FUZZ = settings(
    max_examples=150,
    deadline=None,  # no timing in tests
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- 1. mutations of real dumps --------------------------------------------------------------

GARBAGE_LINES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "\tCapabilities: <access denied>",
            "\tCapabilities: [100 v1] Access Control Services",
            "\t\tACSCap:\tSrcValid+ TransBlk+",
            "\t\tACSCtl:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- x",
            "\tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)",
            "\t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 99999, Function Dependency Link: 0",
            "\t\tVF offset: 65535, stride: 65535, Device ID: ffff",
            "\tBus: primary=zz, secondary=01, subordinate=01, sec-latency=0",
            "\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0",
            "\tMemory behind bridge: ffffffffffffffffffff-0 [size=99999999999T]",
            "\tRegion 9: Memory at <weird> (64-bit, prefetchable) [size=0]",
            "\tRegion 0: I/O ports at 99999999999999999999 [size=4G]",
            "\tExpansion ROM at [disabled]",
            "\tIOMMU group: 99999999999999999999999",
            "\tCapabilities: [40] Express (v9",
            "\tCapabilities: [40] Express (v2) Unknown type 15, IntMsgNum 0",
            "\tKernel modules: , , ,",
            "ffffffff:ff:1f.7 Class [ffff]: Device [ffff:ffff] (rev ff) (prog-if ff [x])",
            "00:00.0 PCI bridge [0604]: x",
            "00:1c.0 : [8086:a110]",
            "00: 86 80 30 3e",
            "pcilib: warning",
        ]
    ),
)


@st.composite
def mutated_dumps(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(sorted(DUMPS.values())))
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "swap", "garble", "insert", "cut"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "garble":
            line = lines[i]
            k = draw(st.integers(0, max(len(line) - 1, 0)))
            char = draw(st.characters(codec="utf-8"))
            lines[i] = line[:k] + char + line[k + 1 :]
        elif action == "insert":
            lines.insert(i, draw(GARBAGE_LINES) + "\n")
        else:
            cut = "".join(lines)
            lines = [cut[: draw(st.integers(0, len(cut)))]]
    return "".join(lines)


@FUZZ
@given(mutated_dumps())
def test_mutated_real_dumps_parse_or_raise_dump_parse_error(text):
    try:
        devices = parse_lspci(text, source="fuzz.txt")
    except DumpParseError as err:
        message = str(err)
        assert message.startswith("fuzz.txt:") and "\n" not in message
    else:
        assert devices and all(isinstance(d, LspciDevice) for d in devices)
        assert len({(d.domain, d.bus, d.device, d.function) for d in devices}) == len(devices)


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_parses_or_raises_dump_parse_error(text):
    try:
        parse_lspci(text)
    except DumpParseError:
        pass


# --- 2. a writer of valid dumps, after pciutils' printf formats ------------------------------

CLASSES = [
    ("Host bridge", 0x0600),
    ("PCI bridge", 0x0604),
    ("Ethernet controller", 0x0200),
    ("VGA compatible controller", 0x0300),
    ("Audio device", 0x0403),
    ("Non-Volatile memory controller", 0x0108),
    ("USB controller", 0x0C03),
]
EXPRESS_NAMES = {
    "endpoint": "Endpoint",
    "legacy-endpoint": "Legacy Endpoint",
    "root-port": "Root Port (Slot+)",
    "upstream": "Upstream Port",
    "downstream": "Downstream Port (Slot-)",
    "pcie-to-pci-bridge": "PCI-Express to PCI/PCI-X Bridge",
    "pci-to-pcie-bridge": "PCI/PCI-X to PCI-Express Bridge (Slot-)",
    "rc-endpoint": "Root Complex Integrated Endpoint",
    "rc-event-collector": "Root Complex Event Collector",
}
WORD = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/", min_size=1, max_size=9
)


def show_size(size: int) -> str:
    """lspci.c show_size."""
    for unit in ("", "K", "M", "G"):
        if size % 1024:
            return f" [size={size}{unit}]"
        size //= 1024
    return f" [size={size}T]"


@st.composite
def bars(draw: st.DrawFn) -> BarRecord:
    kind = draw(st.sampled_from(["memory", "io", "expansion-rom"]))
    address = draw(st.none() | st.integers(1, 2**48))
    size = draw(st.none() | st.integers(1, 2**40))
    index = None if kind == "expansion-rom" else draw(st.none() | st.integers(0, 5))
    prefetchable = is_64bit = False
    if kind == "memory":
        prefetchable, is_64bit = draw(st.booleans()), draw(st.booleans())
    return BarRecord(index, kind, address, size, prefetchable, is_64bit,
                     draw(st.booleans()), draw(st.booleans()))  # fmt: skip


NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
SLOT = st.from_regex(r"[0-9A-Za-z][0-9A-Za-z -]{0,10}[0-9A-Za-z]", fullmatch=True)
WINDOW = st.none() | st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)).map(sorted).map(tuple)


@st.composite
def devices(draw: st.DrawFn, domains: bool, numeric: bool) -> list[LspciDevice]:
    addresses = draw(
        st.lists(
            st.tuples(
                st.integers(0, 0xFFFF) if domains else st.just(0),
                st.integers(0, 255),
                st.integers(0, 31),
                st.integers(0, 7),
            ),
            min_size=1,
            max_size=8,
            unique=True,
        )
    )
    out = []
    for domain, bus, dev, fn in addresses:
        class_name, class_code = draw(st.sampled_from(CLASSES))
        bridge = class_code == 0x0604
        acs = draw(st.none() | st.tuples(st.integers(0, 127), st.integers(0, 127)))
        sriov = None
        if not bridge and draw(st.booleans()):
            sriov = SriovRecord(
                total_vfs=draw(st.integers(0, 256)),
                initial_vfs=draw(st.integers(0, 256)),
                num_vfs=draw(st.integers(0, 8)),
                vf_offset=draw(st.integers(0, 512)),
                vf_stride=draw(st.integers(0, 4)),
                vf_device_id=draw(st.integers(0, 0xFFFF)),
            )
        bus_numbers = (
            draw(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
            if bridge
            else (None, None, None)
        )
        out.append(
            LspciDevice(
                domain=domain, bus=bus, device=dev, function=fn,
                class_name=class_name,
                description=" ".join(draw(st.lists(WORD, min_size=1, max_size=5))),
                vendor_id=draw(st.integers(0, 0xFFFF)) if numeric else None,
                device_id=draw(st.integers(0, 0xFFFF)) if numeric else None,
                class_code=class_code if numeric else None,
                prog_if=draw(st.none() | st.integers(0, 255)),
                revision=draw(st.none() | st.integers(1, 255)),
                express_type=draw(st.none() | st.sampled_from(sorted(EXPRESS_NAMES))),
                primary_bus=bus_numbers[0],
                secondary_bus=bus_numbers[1],
                subordinate_bus=bus_numbers[2],
                bars=tuple(draw(st.lists(bars(), max_size=4))),
                io_window=draw(WINDOW) if bridge else None,
                mem_window=draw(WINDOW) if bridge else None,
                pref_window=draw(WINDOW) if bridge else None,
                has_msi=draw(st.booleans()), has_msix=draw(st.booleans()),
                has_ats=draw(st.booleans()), has_pri=draw(st.booleans()),
                has_pasid=draw(st.booleans()),
                acs_cap=acs[0] if acs else None,
                acs_ctl=acs[1] if acs else None,
                sriov=sriov,
                is_virtfn=None,  # filled in by virtfn_oracle
                kernel_driver=draw(st.none() | NAME),
                kernel_modules=tuple(draw(st.lists(NAME, max_size=3))),
                iommu_group=draw(st.none() | st.integers(0, 500)),
                physical_slot=draw(st.none() | SLOT),
                line=0,
            )
        )  # fmt: skip
    return out


def virtfn_oracle(devs: list[LspciDevice]) -> list[LspciDevice]:
    """Mark enabled VFs: RID = PF RID + offset + i * stride for i < NumVFs (SR-IOV 3.3.9/10)."""
    vf_rids = set()
    for pf in devs:
        if pf.sriov:
            pf_rid = pf.bus << 8 | pf.device << 3 | pf.function
            for i in range(pf.sriov.num_vfs):
                vf_rids.add((pf.domain, pf_rid + pf.sriov.vf_offset + i * pf.sriov.vf_stride))
    out = []
    for d in devs:
        rid = d.bus << 8 | d.device << 3 | d.function
        out.append(replace(d, is_virtfn=d.sriov is None and (d.domain, rid) in vf_rids))
    return out


def acs_flags(value: int) -> str:
    return " ".join(
        name + ("+" if value >> bit & 1 else "-") for bit, name in enumerate(ACS_FLAG_NAMES)
    )


def bar_line(bar: BarRecord, old: bool) -> str:
    """show_bases / show_rom; `old` puts [virtual] first, as pciutils before 3.6 did."""
    address = "<unassigned>" if bar.address is None else f"{bar.address:08x}"
    pre = "[virtual] " if bar.virtual and old else ""
    post = " [virtual]" if bar.virtual and not old else ""
    size = show_size(bar.size) if bar.size else ""
    if bar.kind == "expansion-rom":
        disabled = " [disabled]" if bar.disabled else ""
        return f"{pre}Expansion ROM at {address}{post}{disabled}{size}"
    region = "" if bar.index is None else f"Region {bar.index}: "
    disabled = " [disabled]" if bar.disabled else ""
    if bar.kind == "io":
        address = "<unassigned>" if bar.address is None else f"{bar.address:04x}"
        return f"{region}{pre}I/O ports at {address}{post}{disabled}{size}"
    bits = "64-bit" if bar.is_64bit else "32-bit"
    pf = "" if bar.prefetchable else "non-"
    return f"{region}{pre}Memory at {address} ({bits}, {pf}prefetchable){post}{disabled}{size}"


def window_line(prefix: str, window: tuple[int, int] | None, style: str) -> str | None:
    """show_range in the spellings of pciutils 3.1 ("old"), 3.5.3 ("none") and 3.8 ("new")."""
    if window is None:
        return {
            "old": f"{prefix}: 0000f000-00000fff",
            "none": f"{prefix}: None",
            "new": f"{prefix}: [disabled] [32-bit]",
            "omit": None,
        }[style]
    base, limit = window
    size = "" if style == "old" else show_size(limit - base + 1)
    bits = " [64-bit]" if style == "new" else ""
    return f"{prefix}: {base:08x}-{limit:08x}{size}{bits}"


def render(devs: list[LspciDevice], *, domains: bool, numeric: bool, indent: str, style: str,
           old_bars: bool) -> tuple[str, list[int]]:  # fmt: skip
    """A `lspci -vvv [-D] [-nn]` dump of the records, and the line of each header."""
    lines: list[str] = []
    starts: list[int] = []
    top, nested = indent, indent * 2
    for d in devs:
        starts.append(len(lines) + 1)
        address = f"{d.bus:02x}:{d.device:02x}.{d.function}"
        if domains:
            address = f"{d.domain:04x}:{address}"
        cls = f"{d.class_name} [{d.class_code:04x}]" if numeric else d.class_name
        desc = (
            f"{d.description} [{d.vendor_id:04x}:{d.device_id:04x}]" if numeric else d.description
        )
        header = f"{address} {cls}: {desc}"
        if d.revision is not None:
            header += f" (rev {d.revision:02x})"
        if d.prog_if is not None:
            header += f" (prog-if {d.prog_if:02x} [Normal decode])"
        lines.append(header)
        lines.append(f"{top}Subsystem: Some Vendor Device [1234:5678]")
        if d.physical_slot is not None:
            lines.append(f"{top}Physical Slot: {d.physical_slot}")
        lines.append(f"{top}Control: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr-")
        lines.append(f"{top}Status: Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast >TAbort-")
        if d.iommu_group is not None:
            lines.append(f"{top}IOMMU group: {d.iommu_group}")
        lines.extend(top + bar_line(bar, old_bars) for bar in d.bars)
        if d.secondary_bus is not None:
            lines.append(
                f"{top}Bus: primary={d.primary_bus:02x}, secondary={d.secondary_bus:02x}, "
                f"subordinate={d.subordinate_bus:02x}, sec-latency=0"
            )
            for prefix, window in (
                ("I/O behind bridge", d.io_window),
                ("Memory behind bridge", d.mem_window),
                ("Prefetchable memory behind bridge", d.pref_window),
            ):
                if (line := window_line(prefix, window, style)) is not None:
                    lines.append(top + line)
            lines.append(f"{top}BridgeCtl: Parity- SERR+ NoISA- VGA- VGA16+ MAbort- >Reset-")
            lines.append(f"{nested}PriDiscTmr- SecDiscTmr- DiscTmrStat- DiscTmrSERREn-")
        lines.append(f"{top}Capabilities: [40] Power Management version 3")
        lines.append(f"{nested}Flags: PMEClk- DSI- D1- D2- AuxCurrent=0mA PME(D0+,D1-,D2-)")
        if d.has_msi:
            lines.append(f"{top}Capabilities: [50] MSI: Enable+ Count=1/1 Maskable- 64bit+")
            lines.append(f"{nested}Address: 00000000fee00000  Data: 0000")
        if d.express_type is not None:
            version = "(v2) " if style != "omit" else ""
            tail = ", IntMsgNum 0" if style == "new" else ", MSI 00"
            lines.append(
                f"{top}Capabilities: [60] Express {version}{EXPRESS_NAMES[d.express_type]}{tail}"
            )
            lines.append(f"{nested}DevCap:\tMaxPayload 256 bytes, PhantFunc 0")
        if d.has_msix:
            lines.append(f"{top}Capabilities: [70] MSI-X: Enable+ Count=64 Masked-")
            lines.append(f"{nested}Vector table: BAR=0 offset=00002000")
        if d.acs_cap is not None:
            lines.append(f"{top}Capabilities: [100 v1] Access Control Services")
            lines.append(f"{nested}ACSCap:\t{acs_flags(d.acs_cap)}")
            lines.append(f"{nested}ACSCtl:\t{acs_flags(d.acs_ctl or 0)}")
        if d.has_ats:
            lines.append(f"{top}Capabilities: [110 v1] Address Translation Service (ATS)")
            lines.append(f"{nested}ATSCap:\tInvalidate Queue Depth: 00")
        if d.has_pri:
            lines.append(f"{top}Capabilities: [120 v1] Page Request Interface (PRI)")
            lines.append(f"{nested}PRICtl: Enable- Reset-")
        if d.has_pasid:
            lines.append(f"{top}Capabilities: [130 v1] Process Address Space ID (PASID)")
            lines.append(f"{nested}PASIDCap: Exec- Priv-, Max PASID Width: 14")
        if d.sriov is not None:
            s = d.sriov
            lines.append(f"{top}Capabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)")
            lines.append(f"{nested}IOVCap:\tMigration- 10BitTagReq- IntMsgNum 0")
            lines.append(
                f"{nested}Initial VFs: {s.initial_vfs}, Total VFs: {s.total_vfs}, "
                f"Number of VFs: {s.num_vfs}, Function Dependency Link: 00"
            )
            lines.append(
                f"{nested}VF offset: {s.vf_offset}, stride: {s.vf_stride}, "
                f"Device ID: {s.vf_device_id:04x}"
            )
            lines.append(f"{nested}Region 0: Memory at 00000000ab000000 (64-bit, prefetchable)")
        if d.kernel_driver is not None:
            lines.append(f"{top}Kernel driver in use: {d.kernel_driver}")
        if d.kernel_modules:
            lines.append(f"{top}Kernel modules: {', '.join(d.kernel_modules)}")
        lines.append("")
    return "\n".join(lines) + "\n", starts


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_generated_dumps_round_trip(data):
    domains = data.draw(st.booleans(), label="domains")
    numeric = data.draw(st.booleans(), label="numeric")
    expected = virtfn_oracle(data.draw(devices(domains, numeric)))
    text, starts = render(
        expected,
        domains=domains,
        numeric=numeric,
        indent=data.draw(st.sampled_from(["\t", "        ", "    "]), label="indent"),
        style=data.draw(st.sampled_from(["old", "none", "new", "omit"]), label="style"),
        old_bars=data.draw(st.booleans(), label="old_bars"),
    )
    expected = [replace(d, line=line) for d, line in zip(expected, starts, strict=True)]
    assert parse_lspci(text, source="generated") == expected
