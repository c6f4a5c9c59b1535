"""The host file models on their own: sizes, IDs, class codes, ACS presets, BARs, paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.config import format_path, format_size, parse_host_text, parse_size
from passthru.config.host_model import AcsConfig, HostFile
from passthru.errors import ConfigError
from passthru.hw.pci.regs import AcsFlags

HOST = '[host]\nname = "h"\ncores = 2\nmemory = "4GiB"\n'


@pytest.mark.parametrize(("text", "size"), [
    ("64GiB", 64 << 30), ("1.5MiB", 3 << 19), ("4096", 4096), ("16 KiB", 16 << 10),
    ("1TiB", 1 << 40), ("7B", 7), (123, 123), ("0.5KiB", 512),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "why"), [
    ("8GB", "decimal units are not accepted"), ("8gib", "did you mean GiB?"),
    ("0.3B", "not a whole number of bytes"), ("-1", "not a size"), (-1, "negative"),
    (True, "want a size"), (1.5, "want a size"), ("", "not a size"), ("1e3", "not a size"),
    ("5 lb", "unknown unit"),
])
def test_parse_size_refuses(text: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_size(text)


@given(st.integers(min_value=0, max_value=1 << 60))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_format_path() -> None:
    assert format_path(("vm", 1, "vcpus", 0)) == "vm[1].vcpus[0]"
    assert format_path(("pci", "root_port", 0, "device", 2, "slot")) == (
        "pci.root_port[0].device[2].slot")
    assert format_path(("host", "a.b")) == 'host."a.b"'


def test_acs_presets_match_the_hardware_specs() -> None:
    def acs_of(value: str) -> AcsConfig | None:
        text = HOST + f"[[pci.root_port]]\nslot = 1\nacs = {value}\n"
        return parse_host_text(text).pci.root_port[0].acs

    full = acs_of('"full"')
    assert full is not None
    spec = full.to_spec()
    assert spec.cap == AcsFlags.SV | AcsFlags.TB | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF | (
        AcsFlags.DT)
    assert spec.ctl == AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF
    off = acs_of('"off"')
    assert off is not None and off.to_spec().ctl == AcsFlags(0)
    assert acs_of('"none"') is None
    egress = acs_of('{ cap = ["EC", "SV"], ctl = ["EC"], egress_vector = 5, ecvs = 8 }')
    assert egress is not None and egress.to_spec().egress_vector == 5
    with pytest.raises(ConfigError, match=r"pci\.root_port\[0\]\.acs: egress_vector and ecvs "
                                          "need EC"):
        acs_of('{ cap = ["SV"], egress_vector = 1 }')


def test_ids_classes_and_bars() -> None:
    text = HOST + ('[[pci.root_port]]\nslot = 1\n[[pci.root_port.device]]\n'
                   'vendor_id = "10DE"\ndevice_id = 0x1b80\nclass = "0302"\n'
                   'bars = ["16MiB", { size = "64KiB", bits = 32 }, "8KiB"]\n')
    dev = parse_host_text(text).pci.root_port[0].device[0]
    assert (dev.vendor_id, dev.device_id, dev.class_code) == (0x10DE, 0x1B80, 0x030200)
    assert [(b.size, b.bits, b.is_prefetchable) for b in dev.bars] == [
        (16 << 20, 64, True), (64 << 10, 32, False), (8 << 10, 64, False)]
    for old, bad, where in (
            ('vendor_id = "10DE"', 'vendor_id = "10de0"',
             "vendor_id: 16-bit ID 0x10de0 does not fit"),
            ('class = "0302"', 'class = "vga!"', "class: 'vga!' is not a class"),
            ('vendor_id = "10DE"', "vendor_id = true", "vendor_id: want a 16-bit ID")):
        with pytest.raises(ConfigError, match=where):
            parse_host_text(text.replace(old, bad))


def test_defaults_are_documented_values() -> None:
    model = parse_host_text(HOST)
    io = model.host.iommu
    assert (io.enabled, io.mode, io.strict, io.interrupt_remapping, io.posted_interrupts,
            io.iotlb_entries, io.address_width) == (True, "translated", True, True, False,
                                                    512, 48)
    assert model.host.reserved_memory == 2 << 30 and not model.host.allow_shared_cores
    assert model.vm == [] and model.pci.root_port == []
    # The model is plain data: it dumps and validates back (useful to build hosts in Python).
    again = HostFile.model_validate(model.model_dump(by_alias=True))
    assert again == model
