"""Vendor:device IDs from the names `lspci` prints when a dump was taken without -nn.

Linux applies its device quirks (hw.pci.quirks) by vendor:device ID, so a dump without
``[vvvv:dddd]`` tags would lose them: Intel PCH root ports would look like ports without ACS
and be grouped with their neighbours. lspci takes its names from pci.ids, so the reverse
lookup is exact for the names the bundled table holds: every device of the quirk tables as
pci.ids names it (``data/pci_names_quirked.tsv``, written by ``scripts/make_pci_names.py``),
and the names, old and current, of every vendor that has a quirk.

- A name several IDs share (pci.ids names 8086:8c10 and 8086:8c11 alike) resolves only when
  every candidate gets the same quirks; otherwise the device stays unresolved.
- A quirk vendor's device whose name is not in the table is one no quirk lists (under the
  bundled pci.ids names): its vendor is known, its device ID is not needed.

Left out: names that pci.ids changed since the dump was taken (the dump's lspci may be older
than the table), and vendors without quirks, whose IDs no answer depends on.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from passthru.hw.pci import quirks as Q

# Earlier pci.ids names of quirk vendors, as older lspci builds print them.
_OLD_VENDOR_NAMES = (
    ("Broadcom Corporation", Q.PCI_VENDOR_ID_BROADCOM),  # until 2016
    ("Broadcom Limited", Q.PCI_VENDOR_ID_BROADCOM),  # 2016-2018
    ("Triones Technologies, Inc.", Q.PCI_VENDOR_ID_TTI),
)
_UNKNOWN_DEVICE = re.compile(r"Device ([0-9a-fA-F]{4})")  # lspci: a device pci.ids lacks


@cache
def _table() -> tuple[list[tuple[str, int]], dict[int, dict[str, tuple[int, ...]]]]:
    vendors = list(_OLD_VENDOR_NAMES)  # (name, id); one name may stand for several IDs
    devices: dict[int, dict[str, list[int]]] = {}
    text = resources.files("passthru").joinpath("data/pci_names_quirked.tsv").read_text()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        vid, did, name = line.split("\t", 2)
        if did:
            devices.setdefault(int(vid, 16), {}).setdefault(name, []).append(int(did, 16))
        else:
            vendors.append((name, int(vid, 16)))
    by_length = sorted(vendors, key=lambda kv: -len(kv[0]))  # longest prefix first
    return by_length, {v: {n: tuple(ds) for n, ds in names.items()}
                       for v, names in devices.items()}


def _quirks_of(vid: int, did: int) -> tuple[bool, ...]:
    intel = vid == Q.PCI_VENDOR_ID_INTEL
    return (intel and did in Q.INTEL_PCH_ACS_IDS, intel and did in Q.INTEL_SPT_ACS_IDS,
            (vid, did) in Q.MF_ENDPOINT_ACS_IDS, (vid, did) in Q.DMA_FUNC1_ALIAS_IDS,
            vid == Q.PCI_VENDOR_ID_WANGXUN and did in Q.WANGXUN_ACS_IDS)


def ids_from_name(description: str) -> tuple[int | None, int | None]:
    """(vendor, device) for ``description`` ("VENDOR DEVICE" as lspci prints it, without the
    revision); None where the name does not tell."""
    vendors, devices = _table()
    matched = [(n, v) for n, v in vendors
               if description == n or description.startswith(n + " ")]
    if not matched:
        return None, None
    longest = len(matched[0][0])
    vids = [v for n, v in matched if len(n) == longest]
    rest = description[longest + 1:]
    candidates = [(v, d) for v in vids for d in devices.get(v, {}).get(rest, ())]
    if candidates and len({_quirks_of(v, d) for v, d in candidates}) == 1 and (
            len({v for v, _ in candidates}) == 1):
        return candidates[0]  # any of them: they are quirked alike
    if len(vids) > 1:
        return None, None  # "Emulex Corporation" is two vendor IDs: which one is unknown
    if m := _UNKNOWN_DEVICE.fullmatch(rest):
        return vids[0], int(m[1], 16)
    return vids[0], None
