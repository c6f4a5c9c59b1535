"""parse_lspci on real dumps (tests/data/lspci, see SOURCES.md) and on its error cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from passthru.errors import DumpParseError
from passthru.importers.lspci import BarRecord, LspciDevice, SriovRecord, parse_lspci

DATA = Path(__file__).resolve().parent.parent / "data" / "lspci"

# ACS register bits (PCIe r6.0 sec. 7.7.8.2): SV TB RR CR UF EC DT.
SV, TB, RR, CR, UF, EC, DT = (1 << bit for bit in range(7))


def load(name: str) -> str:
    return (DATA / name).read_text()


def by_bdf(name: str) -> dict[str, LspciDevice]:
    return {dev.bdf: dev for dev in parse_lspci(load(name), source=name)}


def parse_error(text: str, source: str = "host.txt") -> str:
    with pytest.raises(DumpParseError) as info:
        parse_lspci(text, source=source)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the Dell dual Xeon E5 v4 server: switch, PCIe-to-PCI bridge, ACS, SR-IOV -----------------

DELL = "dell_xeon_e5v4_2s_tesla_p100.txt"


def test_dell_device_count_and_order():
    devices = parse_lspci(load(DELL), source=DELL)
    assert len(devices) == 201
    assert devices[0].bdf == "0000:00:00.0"
    assert devices[-1].bdf == "0000:ff:1f.2"
    assert [d.line for d in devices] == sorted(d.line for d in devices)
    assert all(d.domain == 0 for d in devices)


def test_dell_cpu_root_port_acs_capable_but_disabled():
    port = by_bdf(DELL)["0000:00:03.0"]
    assert port.class_name == "PCI bridge"
    assert port.express_type == "root-port"
    assert port.acs_cap == SV | TB | RR | CR | UF  # ACSCap: SrcValid+ ... UpstreamFwd+ EgressCtrl-
    assert port.acs_ctl == 0  # IOMMU off: the kernel did not enable ACS
    assert (port.primary_bus, port.secondary_bus, port.subordinate_bus) == (0, 2, 2)
    assert port.kernel_driver == "pcieport"
    assert port.line == 203


def test_dell_acs_only_on_cpu_root_ports():
    devices = by_bdf(DELL)
    with_acs = sorted(bdf for bdf, d in devices.items() if d.acs_cap is not None)
    assert with_acs == [
        "0000:00:01.0", "0000:00:02.0", "0000:00:03.0", "0000:00:03.1", "0000:00:03.2",
        "0000:80:01.0", "0000:80:02.0", "0000:80:03.0", "0000:80:03.2",
    ]  # fmt: skip
    pch_port = devices["0000:00:1c.7"]  # C610 PCH root port: no ACS capability at all
    assert pch_port.express_type == "root-port"
    assert pch_port.acs_cap is None and pch_port.acs_ctl is None


def test_dell_switch_and_pcie_to_pci_bridge():
    devices = by_bdf(DELL)
    pch_port = devices["0000:00:1c.7"]
    assert (pch_port.secondary_bus, pch_port.subordinate_bus) == (0x07, 0x0B)
    upstream = devices["0000:07:00.0"]
    assert upstream.express_type == "upstream"
    assert (upstream.primary_bus, upstream.secondary_bus, upstream.subordinate_bus) == (7, 8, 11)
    downstream = devices["0000:08:00.0"]
    assert downstream.express_type == "downstream"
    assert (downstream.secondary_bus, downstream.subordinate_bus) == (9, 10)
    pci_bridge = devices["0000:09:00.0"]
    assert pci_bridge.express_type == "pcie-to-pci-bridge"
    assert pci_bridge.description == "Renesas Technology Corp. SH7758 PCIe-PCI Bridge [PPB]"
    assert (pci_bridge.secondary_bus, pci_bridge.subordinate_bus) == (10, 10)
    assert pci_bridge.kernel_driver is None
    vga = devices["0000:0a:00.0"]  # conventional PCI behind the bridge
    assert vga.express_type is None
    assert vga.kernel_driver == "mgag200"
    assert vga.mem_window is None and vga.secondary_bus is None


def test_dell_bridge_windows():
    port = by_bdf(DELL)["0000:00:1c.7"]
    assert port.io_window is None  # "I/O behind bridge: 0000f000-00000fff [disabled]"
    assert port.mem_window == (0x92000000, 0x929FFFFF)
    assert port.pref_window == (0x90000000, 0x90FFFFFF)


def test_dell_sriov_physical_functions():
    devices = by_bdf(DELL)
    for bdf in ("0000:83:00.0", "0000:83:00.1"):
        pf = devices[bdf]
        assert pf.sriov == SriovRecord(
            total_vfs=64, initial_vfs=64, num_vfs=0, vf_offset=128, vf_stride=2,
            vf_device_id=0x10ED,
        )  # fmt: skip
        assert pf.kernel_driver == "ixgbe"
        assert pf.kernel_modules == ("ixgbe",)
        assert pf.has_msix and pf.has_msi
        assert pf.is_virtfn is False
    assert not any(d.is_virtfn for d in devices.values())  # NumVFs is 0: no VF exists


def test_dell_bars_of_the_gpu_and_rom_of_the_nic():
    devices = by_bdf(DELL)
    gpu = devices["0000:04:00.0"]
    assert gpu.description == "NVIDIA Corporation GP100GL [Tesla P100 PCIe 12GB]"
    assert gpu.revision == 0xA1
    assert gpu.kernel_driver == "nvidia" and gpu.kernel_modules == ("nouveau",)
    assert gpu.bars[1] == BarRecord(
        index=1, kind="memory", address=0x3B800000000, size=16 << 30, prefetchable=True,
        is_64bit=True, disabled=False, virtual=False,
    )  # fmt: skip
    rom = devices["0000:83:00.0"].bars[-1]
    assert rom.kind == "expansion-rom" and rom.disabled and rom.size == 512 << 10
    raid_rom = devices["0000:03:00.0"].bars[-1]
    assert raid_rom.kind == "expansion-rom" and raid_rom.address is None  # "<ignored>"


def test_dell_dmi_host_bridge_is_not_a_bridge():
    dmi = by_bdf(DELL)["0000:00:00.0"]
    assert dmi.class_name == "Host bridge"
    assert dmi.express_type == "root-port"  # what its Express capability says
    assert dmi.secondary_bus is None  # type-0 header: no Bus: line, and none required


# --- the Acer Aspire 5560: oldest window spelling, multifunction GPU + audio -------------------

ACER = "acer_aspire_5560_llano.txt"


def test_acer_count_and_old_windows():
    devices = by_bdf(ACER)
    assert len(devices) == 29
    port = devices["0000:00:04.0"]
    assert port.io_window is None  # "0000f000-00000fff": base above limit
    assert port.mem_window == (0xF0300000, 0xF03FFFFF)
    assert port.pref_window == (0xF0000000, 0xF00FFFFF)  # "00000000f0000000-00000000f00fffff"
    assert devices["0000:00:06.0"].pref_window is None  # "00000000fff00000-00000000000fffff"


def test_acer_gpu_and_hdmi_audio_are_functions_of_one_device():
    devices = by_bdf(ACER)
    gpu, audio = devices["0000:00:01.0"], devices["0000:00:01.1"]
    assert (gpu.class_name, audio.class_name) == ("VGA compatible controller", "Audio device")
    assert gpu.express_type == audio.express_type == "rc-endpoint"
    assert gpu.prog_if == 0 and gpu.revision is None
    assert gpu.kernel_driver == "fglrx_pci" and audio.kernel_driver == "snd_hda_intel"
    assert gpu.bars[-1] == BarRecord(None, "expansion-rom", None, None, False, False, True, False)
    assert [d.bdf for d in devices.values() if d.bus == 1] == [
        "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3",
    ]  # fmt: skip


def test_acer_conventional_pci_bridge_and_legacy_endpoint():
    devices = by_bdf(ACER)
    bridge = devices["0000:00:14.4"]
    assert bridge.class_name == "PCI bridge"
    assert bridge.express_type is None
    assert bridge.prog_if == 0x01  # subtractive decode
    assert (bridge.secondary_bus, bridge.subordinate_bus) == (3, 3)
    assert bridge.io_window is bridge.mem_window is bridge.pref_window is None
    assert devices["0000:02:00.0"].express_type == "legacy-endpoint"
    assert devices["0000:02:00.0"].kernel_driver == "ath9k"
    assert devices["0000:00:12.0"].class_name == "USB Controller"  # old pci.ids spelling


# --- the Lenovo Z510: Intel 8 Series PCH root ports without ACS --------------------------------

Z510 = "lenovo_z510_haswell.txt"


def test_z510_pch_root_ports():
    devices = by_bdf(Z510)
    assert len(devices) == 15
    for bdf, secondary in (("0000:00:1c.0", 1), ("0000:00:1c.4", 2)):
        port = devices[bdf]
        assert port.express_type == "root-port"
        assert port.revision == 0xD5
        assert (port.secondary_bus, port.subordinate_bus) == (secondary, secondary)
        assert port.acs_cap is None
    assert devices["0000:02:00.0"].kernel_driver == "iwlwifi"
    assert devices["0000:01:00.0"].kernel_driver == "r8169"
    assert devices["0000:00:03.0"].express_type == "rc-endpoint"
    assert devices["0000:00:02.0"].bars[0].is_64bit


# --- the Radxa Orion O6: -nn tags and IOMMU groups ---------------------------------------------

ORION = "radxa_orion_o6_arm.txt"


def test_orion_nn_tags_and_iommu_groups():
    devices = by_bdf(ORION)
    assert list(devices) == [
        "0000:00:00.0", "0000:01:00.0", "0000:30:00.0", "0000:31:00.0", "0000:90:00.0",
        "0000:91:00.0",
    ]  # fmt: skip
    assert {bdf: d.iommu_group for bdf, d in devices.items()} == {
        "0000:00:00.0": 2, "0000:01:00.0": 2, "0000:30:00.0": 1, "0000:31:00.0": 1,
        "0000:90:00.0": 0, "0000:91:00.0": 0,
    }  # fmt: skip
    port = devices["0000:30:00.0"]
    assert (port.class_name, port.class_code) == ("PCI bridge", 0x0604)
    assert (port.vendor_id, port.device_id) == (0x17CD, 0x0100)
    assert port.description == "Cadence Design Systems, Inc. Device"
    assert (port.secondary_bus, port.subordinate_bus) == (0x31, 0x31)
    assert port.acs_cap is None
    assert port.pref_window is None  # "[disabled] [64-bit]"
    nvme = devices["0000:91:00.0"]
    assert (nvme.class_code, nvme.vendor_id, nvme.device_id) == (0x0108, 0x144D, 0xA808)
    assert nvme.prog_if == 0x02
    assert nvme.kernel_driver == "nvme" and nvme.kernel_modules == ("nvme",)
    assert devices["0000:01:00.0"].revision == 0x01


# --- the non-root dump --------------------------------------------------------------------------


def test_non_root_dump_is_refused_at_its_first_access_denied():
    message = parse_error(load("lenovo_kabylake_nonroot.txt"), source="laptop.txt")
    assert message == (
        'laptop.txt:4: capabilities not readable ("<access denied>"): '
        "take the dump as root (sudo lspci -vvv)"
    )


# --- spellings: -D, spaces for tabs, CRLF --------------------------------------------------------

HEADER = re.compile(r"^(?=[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] )", re.MULTILINE)


@pytest.mark.parametrize("name", [DELL, ACER, Z510, ORION])
def test_domain_prefix_spelling_gives_the_same_records(name):
    text = load(name)
    assert parse_lspci(HEADER.sub("0000:", text)) == parse_lspci(text)


@pytest.mark.parametrize("name", [ACER, ORION])
def test_spaces_for_tabs_and_crlf_give_the_same_records(name):
    text = load(name)
    assert parse_lspci(text.expandtabs(8)) == parse_lspci(text)
    assert parse_lspci(text.replace("\n", "\r\n")) == parse_lspci(text)


def test_nonzero_domain_and_numeric_ids():
    text = (
        "10000:e0:06.0 0604: 8086:9a09 (rev 01) (prog-if 00)\n"
        "\tBus: primary=e0, secondary=e1, subordinate=e1, sec-latency=0\n"
        "\tCapabilities: [40] Express (v2) Root Port (Slot-), IntMsgNum 0\n"
        "10000:e1:00.0 Class 0108: Device 144d:a80a\n"
    )
    port, ssd = parse_lspci(text)
    assert (port.domain, port.bus, port.device, port.function) == (0x10000, 0xE0, 6, 0)
    assert (port.class_code, port.vendor_id, port.device_id) == (0x0604, 0x8086, 0x9A09)
    assert port.bdf == "10000:e0:06.0"
    assert (ssd.class_code, ssd.vendor_id, ssd.device_id) == (0x0108, 0x144D, 0xA80A)


def test_enabled_vfs_are_marked():
    text = (
        "3b:00.0 Ethernet controller [0200]: Intel Corporation Ethernet Controller XXV710 "
        "[8086:158b] (rev 02)\n"
        "\tCapabilities: [e0] Express (v2) Endpoint, IntMsgNum 0\n"
        "\tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)\n"
        "\t\tIOVCap:\tMigration- 10BitTagReq- IntMsgNum 0\n"
        "\t\tInitial VFs: 64, Total VFs: 64, Number of VFs: 2, Function Dependency Link: 00\n"
        "\t\tVF offset: 16, stride: 1, Device ID: 154c\n"
        "\t\tRegion 0: Memory at 00000000ab000000 (64-bit, prefetchable)\n"
        "\tKernel driver in use: i40e\n"
        "3b:02.0 Ethernet controller [0200]: Intel Corporation Ethernet Virtual Function 700 "
        "Series [8086:154c] (rev 02)\n"
        "\tKernel driver in use: vfio-pci\n"
        "3b:02.1 Ethernet controller [0200]: Intel Corporation Ethernet Virtual Function 700 "
        "Series [8086:154c] (rev 02)\n"
        "3b:02.2 Ethernet controller [0200]: Intel Corporation Ethernet Virtual Function 700 "
        "Series [8086:154c] (rev 02)\n"
    )
    pf, vf0, vf1, other = parse_lspci(text)
    assert pf.sriov == SriovRecord(64, 64, 2, 16, 1, 0x154C)
    assert pf.bars == ()  # the VF BAR lines belong to the capability, not to the PF
    assert [pf.is_virtfn, vf0.is_virtfn, vf1.is_virtfn, other.is_virtfn] == [
        False, True, True, False,
    ]  # fmt: skip
    assert vf0.kernel_driver == "vfio-pci"


def test_minus_v_summary_line_gives_the_iommu_group():
    text = "00:02.0 VGA compatible controller: X\n\tFlags: bus master, fast devsel, IOMMU group 7\n"
    assert parse_lspci(text)[0].iommu_group == 7


def test_acs_bits_are_decoded_in_register_order():
    text = (
        "00:1c.0 PCI bridge [0604]: Intel Corporation Device [8086:a110] (rev f0)\n"
        "\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0\n"
        "\tCapabilities: [220 v1] Access Control Services\n"
        "\t\tACSCap:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir- UpstreamFwd+ EgressCtrl- "
        "DirectTrans+\n"
        "\t\tACSCtl:\tSrcValid- TransBlk+ ReqRedir- CmpltRedir+ UpstreamFwd- EgressCtrl+ "
        "DirectTrans-\n"
    )
    (port,) = parse_lspci(text)
    assert port.acs_cap == SV | RR | UF | DT
    assert port.acs_ctl == TB | CR | EC


# --- errors: one line, the source and the line number --------------------------------------------

BRIDGE = "00:1c.0 PCI bridge: Intel Corporation Device a110 (rev f0)\n"
BUS = "\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "host.txt:1: empty dump: no lspci output at all"),
        ("\n\n   \n", "host.txt:1: empty dump: no lspci output at all"),
        ("$ sudo lspci -vvv\n" + BRIDGE + BUS, "host.txt:1: expected a device header"),
        ("\tControl: I/O+ Mem+\n", "host.txt:1: indented line before the first device header"),
        ("0:1c.0 PCI bridge: X\n", "host.txt:1: device header with an unparsable address"),
        (BRIDGE + BUS + "00:1g.0 USB controller: X\n", "host.txt:3: device header with an "),
        ("00:1c.8 PCI bridge: X\n" + BUS, "host.txt:1: device header with an unparsable"),
        ("00:1c.0 PCI bridge\n" + BUS, "host.txt:1: device header without a class name"),
        (BRIDGE + "\tControl: I/O+\n", "host.txt:1: bridge 00:1c.0 has no 'Bus: primary=.."),
        (BRIDGE + BUS + BRIDGE + BUS, "host.txt:3: device 0000:00:1c.0 appears twice (first at"),
        (BRIDGE + "\tBus: primary=00, secondary=01\n", "host.txt:2: bridge Bus: line cannot be"),
        (BRIDGE + BUS + BUS, "host.txt:3: second Bus: line"),
        (BRIDGE + BUS + "\tMemory behind bridge: f0000000\n", "host.txt:3: bridge window cannot"),
        (BRIDGE + BUS + "\tMemory behind bridge: 1-2 [huge]\n", "host.txt:3: bridge window with"),
        (BRIDGE + BUS + "garbage at column zero\n", "host.txt:3: unexpected unindented line"),
        (
            BRIDGE + BUS + "\tCapabilities: [100 v1] Access Control Services\n"
            "\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ \n"
            "EgressCtrl- DirectTrans-\n",  # a line wrapped by a mail client
            "host.txt:4: ACSCap line cannot be decoded (expected 7 flags)",
        ),
        (
            BRIDGE + BUS + "\tCapabilities: [100 v1] Access Control Services\n"
            "\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- "
            "DirectTrans?\n",
            "host.txt:4: ACSCap line cannot be decoded at 'DirectTrans?'",
        ),
        (
            BRIDGE + BUS + "\tCapabilities: [100 v1] Access Control Services\n"
            "\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ EgressCtrl- UpstreamFwd+ "
            "DirectTrans-\n",
            "host.txt:4: ACSCap line cannot be decoded at 'EgressCtrl-' (expected UpstreamFwd+/-)",
        ),
        (
            BRIDGE + BUS + "\tCapabilities: [100] Access Control Services\n"
            "\tKernel driver in use: pcieport\n",
            "host.txt:3: ACS capability printed without its ACSCap/ACSCtl registers",
        ),
        (
            BRIDGE + BUS + "\tCapabilities: [100 v1] Access Control Services\n"
            "\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- "
            "DirectTrans-\n",
            "host.txt:3: ACS capability printed without its ACSCap/ACSCtl",
        ),
        (
            BRIDGE + BUS + "\tCapabilities: [100 v1] Access Control Services\n"
            "\t\tACSViol: nonsense\n",
            "host.txt:4: ACS line cannot be decoded",
        ),
        (
            "3b:00.0 Ethernet controller: X\n\tCapabilities: [160] Single Root I/O Virtualization"
            " (SR-IOV)\n",
            "host.txt:2: SR-IOV capability printed without its VF numbers",
        ),
        (
            "3b:00.0 Ethernet controller: X\n\tCapabilities: [160 v1] Single Root I/O "
            "Virtualization (SR-IOV)\n\t\tInitial VFs: 8, Total VFs: many\n",
            "host.txt:3: SR-IOV VF counts cannot be decoded",
        ),
        (
            BRIDGE + BUS + "\tCapabilities: [40] Express (v2) Unknown type 11, IntMsgNum 0\n",
            "host.txt:3: unknown PCI Express device/port type",
        ),
        (BRIDGE + BUS + "\tCapabilities: <access denied>\n", "host.txt:3: capabilities not read"),
        (BRIDGE + BUS + "\tCapabilities: [40] <chain broken>\n", "host.txt:3: capability list"),
        ("02:00.0 CardBus bridge: X\n" + BUS + "\t<access denied to the rest>\n", "host.txt:3: "),
        ("01:00.0 VGA compatible controller: X\n\tIOMMU group: five\n", "host.txt:2: IOMMU group"),
        ("01:00.0 VGA compatible controller: X\n\tRegion 0: Memory at 1000\n", "host.txt:2: memor"),
        (
            "01:00.0 VGA compatible controller: X\n\tRegion 0: Memory at zz\n",
            "host.txt:2: BAR line",
        ),
        (
            "01:00.0 VGA compatible controller: X\n\tRegion 4: I/O ports at e000 [sized=64]\n",
            "host.txt:2: I/O BAR with an unknown flag '[sized=64]'",
        ),
        ("pcilib: sysfs_read_vpd: read failed\n", "host.txt:1: no device header found"),
    ],
)
def test_errors_name_source_and_line(text, expected):
    assert parse_error(text).startswith(expected)


def test_error_is_raised_at_the_first_problem_of_a_real_dump():
    lines = load(ACER).splitlines(keepends=True)
    lines[133] = "\tPrefetchable memory behind bridge: 00000000fff00000-\n"  # line 134
    message = parse_error("".join(lines), source="acer.txt")
    assert message.startswith("acer.txt:134: bridge window cannot be decoded")


def test_stderr_and_hex_dump_lines_are_skipped():
    text = (
        "pcilib: Error reading /sys/bus/pci/devices/0000:00:08.3/label: Operation not permitted\n"
        "00:00.0 Host bridge: Intel Corporation Device 3e30 (rev 0d)\n"
        "\tKernel driver in use: skl_uncore\n"
        "00: 86 80 30 3e 06 00 90 20 0d 00 00 06 00 00 00 00\n"
        "10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
        "\n"
    )
    (host,) = parse_lspci(text)
    assert host.kernel_driver == "skl_uncore"
