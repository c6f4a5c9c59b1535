"""Line decoders for :mod:`passthru.importers.lspci`: BARs, bridge windows, capabilities.

Each decoder reads one line body (indentation stripped) in the exact ``printf`` format of
pciutils 3.x: ``show_bases``/``show_rom``/``show_range`` (lspci.c), ``show_caps`` and
``cap_express`` (ls-caps.c), ``cap_acs``, ``cap_sriov`` and the ATS/PRI/PASID headers
(ls-ecaps.c). Decoders return plain tuples and values; :mod:`lspci` builds the records.
Anything that looks like one of these lines but does not decode raises DumpParseError through
the :class:`Fail` helper, so the message names the source and the line.

Left out: every capability other than Express, MSI, MSI-X, ACS, SR-IOV, ATS, PRI and PASID
(their lines are ignored), the SR-IOV VF BARs and migration fields, the ACS egress vector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from passthru.errors import DumpParseError

# ACS Capability / Control register bits in the order lspci prints them (ls-ecaps.c
# cap_acs; PCIe r6.0 sec. 7.7.8.2/3): bit0 SV, bit1 TB, bit2 RR, bit3 CR, bit4 UF, bit5 EC,
# bit6 DT.
ACS_FLAG_NAMES: tuple[str, ...] = (
    "SrcValid",
    "TransBlk",
    "ReqRedir",
    "CmpltRedir",
    "UpstreamFwd",
    "EgressCtrl",
    "DirectTrans",
)

# cap_express: the Device/Port Type names, longest first, to the normalised names.
EXPRESS_TYPES: tuple[tuple[str, str], ...] = (
    ("Root Complex Integrated Endpoint", "rc-endpoint"),
    ("Root Complex Event Collector", "rc-event-collector"),
    ("PCI-Express to PCI/PCI-X Bridge", "pcie-to-pci-bridge"),
    ("PCI/PCI-X to PCI-Express Bridge", "pci-to-pcie-bridge"),
    ("Legacy Endpoint", "legacy-endpoint"),
    ("Downstream Port", "downstream"),
    ("Upstream Port", "upstream"),
    ("Root Port", "root-port"),
    ("Endpoint", "endpoint"),
)

ROOT_HINT = "take the dump as root (sudo lspci -vvv)"
_VVV_HINT = "take the dump with sudo lspci -vvv"

_RANGE = re.compile(r"^(?P<base>[0-9a-fA-F]+)-(?P<limit>[0-9a-fA-F]+)(?P<tail>.*)$")
# Before pciutils 3.6 "[virtual] " / "[enhanced] " came before the address, later after it.
_BAR = re.compile(
    r"^(?:Region (?P<index>\d+): )?(?P<pre>\[(?:virtual|enhanced)\] )?"
    r"(?P<kind>Memory at|I/O ports at) (?P<addr><[a-z0-9-]+>|[0-9a-fA-F]+)(?P<tail>.*)$"
)
_MEM_TYPE = re.compile(r"^ \((?P<type>32-bit|64-bit|low-1M|type 3), (?P<non>non-)?prefetchable\)")
_ROM = re.compile(
    r"^(?P<pre>\[(?:virtual|enhanced)\] )?Expansion ROM at "
    r"(?P<addr><[a-z0-9-]+>|[0-9a-fA-F]+)(?P<tail>.*)$"
)
_BAR_WORDS = ("Memory at ", "I/O ports at ", "Expansion ROM at ")
_SIZE = re.compile(r"\[size=(?P<n>\d+)(?P<unit>[KMGT]?)\]")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BAR_FLAGS = {"[disabled]", "[disabled by cmd]", "[virtual]", "[enhanced]"}
_WINDOW_FLAG = re.compile(r"\[(?:size=\d+[KMGT]?|\d+-bit|disabled|empty)\]")
_BRACKETED = re.compile(r"\[[^\]]*\]")
_CAP = re.compile(r"^Capabilities: (?:\[(?P<pos>[0-9a-fA-F]+)(?: v\d+)?\] )?(?P<body>.*)$")
_SRIOV_COUNTS = re.compile(
    r"^Initial VFs: (?P<i>\d+), Total VFs: (?P<t>\d+), Number of VFs: (?P<n>\d+), "
    r"Function Dependency Link: [0-9a-fA-F]{2}$"
)
_SRIOV_OFFSET = re.compile(
    r"^VF offset: (?P<o>\d+), stride: (?P<s>\d+), Device ID: (?P<d>[0-9a-fA-F]{4})$"
)

# (index, kind, address, size, prefetchable, is_64bit, disabled, virtual): BarRecord's fields.
BarFields = tuple[int | None, str, int | None, int | None, bool, bool, bool, bool]


class Fail:
    """Builds the one-line DumpParseError messages: ``source:line: what``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, line: int, message: str) -> DumpParseError:
        return DumpParseError(f"{self.source}:{line}: {message}")


def show(text: str, limit: int = 60) -> str:
    """A short, quoted rendering of an offending line for an error message."""
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# --- BARs and bridge windows -----------------------------------------------------------------


def _size(tail: str) -> int | None:
    m = _SIZE.search(tail)
    return int(m["n"]) * _SIZE_UNITS[m["unit"]] if m else None


def _check_tail(tail: str, lineno: int, fail: Fail, what: str) -> None:
    """Every bracketed word after an address must be one that show_bases/show_rom prints."""
    for word in _BRACKETED.findall(tail):
        if word not in _BAR_FLAGS and not _SIZE.fullmatch(word):
            raise fail(lineno, f"{what} with an unknown flag {word!r}")
    if _BRACKETED.sub("", tail).strip():
        raise fail(lineno, f"{what} cannot be decoded: {show(tail)}")


def parse_bar(text: str, lineno: int, fail: Fail) -> BarFields | None:
    """``Region 0: Memory at f7e00000 (64-bit, prefetchable) [size=16M]``, ``I/O ports at``,
    ``Expansion ROM at``; None when the line is none of these."""
    if m := _BAR.match(text):
        tail = m["tail"]
        virtual = "[virtual]" in tail or m["pre"] == "[virtual] "
        address = None if m["addr"].startswith("<") else int(m["addr"], 16)
        index = int(m["index"]) if m["index"] is not None else None
        if m["kind"] == "I/O ports at":
            _check_tail(tail, lineno, fail, "I/O BAR")
            disabled = "[disabled]" in tail
            return (index, "io", address, _size(tail), False, False, disabled, virtual)
        t = _MEM_TYPE.match(tail)
        if t is None:
            raise fail(lineno, f"memory BAR without its type: {show(text)}")
        _check_tail(tail[t.end() :], lineno, fail, "memory BAR")
        prefetchable, is_64bit = t["non"] is None, t["type"] == "64-bit"
        disabled = "[disabled]" in tail
        return (index, "memory", address, _size(tail), prefetchable, is_64bit, disabled, virtual)
    if m := _ROM.match(text):
        tail = m["tail"]
        _check_tail(tail, lineno, fail, "expansion ROM")
        address = None if m["addr"].startswith("<") else int(m["addr"], 16)
        disabled = "[disabled" in tail
        virtual = "[virtual]" in tail or m["pre"] == "[virtual] "
        return (None, "expansion-rom", address, _size(tail), False, False, disabled, virtual)
    if any(word in text for word in _BAR_WORDS):
        raise fail(lineno, f"BAR line cannot be decoded: {show(text)}")
    return None


def parse_window(value: str, lineno: int, fail: Fail) -> tuple[int, int] | None:
    """show_range in its historic spellings; None for a disabled (empty) window.

    ``0000f000-00000fff`` (base above limit, before 3.5.3), ``None`` and ``... [empty]``
    (3.5.3 to 3.6.2), ``[disabled]`` with or without a range and ``[16-bit]`` (3.6.3 on).
    """
    value = value.strip()
    if value == "None" or value.startswith("[disabled]"):
        return None
    m = _RANGE.match(value)
    if m is None:
        raise fail(lineno, f"bridge window cannot be decoded: {show(value)}")
    tail = m["tail"]
    for word in _BRACKETED.findall(tail):
        if not _WINDOW_FLAG.fullmatch(word):
            raise fail(lineno, f"bridge window with an unknown flag {word!r}")
    if _BRACKETED.sub("", tail).strip():
        raise fail(lineno, f"bridge window cannot be decoded: {show(value)}")
    base, limit = int(m["base"], 16), int(m["limit"], 16)
    if base > limit or "[disabled]" in tail or "[empty]" in tail:
        return None
    return (base, limit)


# --- capabilities ----------------------------------------------------------------------------


def parse_acs_flags(text: str, lineno: int, fail: Fail, name: str) -> int:
    """``SrcValid+ TransBlk- ...`` (seven flags) -> the 16-bit register value (bits 0..6)."""
    words = text.split()
    if len(words) != len(ACS_FLAG_NAMES):
        raise fail(lineno, f"{name} line cannot be decoded (expected 7 flags): {show(text)}")
    value = 0
    for bit, (word, flag) in enumerate(zip(words, ACS_FLAG_NAMES, strict=True)):
        if word[:-1] != flag or word[-1] not in "+-":
            raise fail(lineno, f"{name} line cannot be decoded at {word!r} (expected {flag}+/-)")
        if word[-1] == "+":
            value |= 1 << bit
    return value


def express_type(body: str, lineno: int, fail: Fail) -> str:
    """``Express (v2) Root Port (Slot+), MSI 00`` -> ``"root-port"``."""
    rest = body[len("Express") :].lstrip()
    if rest.startswith("(v"):
        rest = rest.partition(") ")[2]
    for printed, normalised in EXPRESS_TYPES:
        if rest.startswith(printed):
            return normalised
    raise fail(lineno, f"unknown PCI Express device/port type: {show(body)}")


@dataclass
class CapState:
    """What one device's capability lines said, filled in while its block is read."""

    express_type: str | None = None
    has_msi: bool = False
    has_msix: bool = False
    has_ats: bool = False
    has_pri: bool = False
    has_pasid: bool = False
    acs_line: int | None = None
    acs_cap: int | None = None
    acs_ctl: int | None = None
    sriov_line: int | None = None
    sriov_counts: tuple[int, int, int] | None = None  # initial, total, number of VFs
    sriov_offset: tuple[int, int, int] | None = None  # offset, stride, VF device ID
    current: str | None = None  # the capability whose nested lines follow ("acs", "sriov")

    def header(self, text: str, lineno: int, fail: Fail) -> None:
        """A ``Capabilities: [pos] Name...`` line at the device's own indentation."""
        self.close(fail)
        m = _CAP.match(text)
        body = m["body"].strip() if m else ""
        if body.startswith("<access denied"):
            raise fail(lineno, f'capabilities not readable ("<access denied>"): {ROOT_HINT}')
        if body.startswith(("<chain broken>", "<chain looped>")):
            raise fail(
                lineno,
                f"capability list could not be walked ({body}): the device may be powered "
                "down; wake it and take the dump again",
            )
        if m is None or m["pos"] is None:
            raise fail(lineno, f"capability line cannot be decoded: {show(text)}")
        if body.startswith("Express"):
            if self.express_type is None:
                self.express_type = express_type(body, lineno, fail)
        elif body.startswith("MSI-X:"):
            self.has_msix = True
        elif body.startswith(("MSI:", "Message Signalled Interrupts")):
            self.has_msi = True
        elif body.startswith("Address Translation Service"):
            self.has_ats = True
        elif body.startswith("Page Request Interface"):
            self.has_pri = True
        elif body.startswith("Process Address Space ID"):
            self.has_pasid = True
        elif body.startswith(("Access Control Services", "Access Controls")):
            if self.acs_line is not None:
                raise fail(lineno, f"second ACS capability (first at line {self.acs_line})")
            self.acs_line, self.current = lineno, "acs"
        elif body.startswith("Single Root I/O Virtualization"):
            if self.sriov_line is not None:
                raise fail(lineno, f"second SR-IOV capability (first at line {self.sriov_line})")
            self.sriov_line, self.current = lineno, "sriov"

    def nested(self, text: str, lineno: int, fail: Fail) -> None:
        """A line indented below a capability header; only ACS and SR-IOV ones matter."""
        if self.current == "acs":
            for name in ("ACSCap", "ACSCtl"):
                if text.startswith(name + ":"):
                    value = parse_acs_flags(text[len(name) + 1 :], lineno, fail, name)
                    attr = "acs_cap" if name == "ACSCap" else "acs_ctl"
                    if getattr(self, attr) is not None:
                        raise fail(lineno, f"second {name} line in one ACS capability")
                    setattr(self, attr, value)
                    return
            if text.startswith("ACS"):
                raise fail(lineno, f"ACS line cannot be decoded: {show(text)}")
        elif self.current == "sriov":
            if text.startswith("Initial VFs"):
                m = _SRIOV_COUNTS.match(text)
                if m is None:
                    raise fail(lineno, f"SR-IOV VF counts cannot be decoded: {show(text)}")
                self.sriov_counts = (int(m["i"]), int(m["t"]), int(m["n"]))
            elif text.startswith("VF offset"):
                m = _SRIOV_OFFSET.match(text)
                if m is None:
                    raise fail(lineno, f"SR-IOV VF offset line cannot be decoded: {show(text)}")
                self.sriov_offset = (int(m["o"]), int(m["s"]), int(m["d"], 16))

    def close(self, fail: Fail) -> None:
        """End of a capability: ACS and SR-IOV must have shown their registers."""
        if self.current == "acs" and (self.acs_cap is None or self.acs_ctl is None):
            assert self.acs_line is not None
            raise fail(
                self.acs_line,
                f"ACS capability printed without its ACSCap/ACSCtl registers: {_VVV_HINT}",
            )
        if self.current == "sriov" and (self.sriov_counts is None or self.sriov_offset is None):
            assert self.sriov_line is not None
            raise fail(
                self.sriov_line,
                f"SR-IOV capability printed without its VF numbers: {_VVV_HINT}",
            )
        self.current = None
