"""Every user error in a host file: one ConfigError line naming file, line and field path,
and through the CLI exit code 2 with exactly one stderr line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from passthru.config import (
    HostAssignmentError,
    HostResourcesError,
    load_host,
    load_host_text,
)
from passthru.errors import AssignmentError, ConfigError, OutOfResources

BASE = """\
[host]
name = "t"
cores = 4
memory = "16GiB"

[[pci.root_port]]
slot = 1
acs = "full"

  [[pci.root_port.device]]
  class = "vga"
  vendor_id = 0x10de
  device_id = 0x1b80
  bars = ["16MiB"]

  [[pci.root_port.device]]
  function = 1
  class = "audio"
  vendor_id = 0x10de
  device_id = 0x10f0

[[pci.root_port]]
slot = 2
acs = "full"

  [[pci.root_port.device]]
  class = "nvme"
  vendor_id = 0x144d
  device_id = 0xa808

[[vm]]
name = "web"
memory = "4GiB"
vcpus = [0, 1]
devices = ["0000:01:00.0", "0000:01:00.1"]

[[vm]]
name = "db"
memory = "4GiB"
vcpus = [2, 3]
devices = ["0000:02:00.0"]
"""
# Groups of BASE, in probe order: 0 = 00:01.0, 1 = 00:02.0, 2 = 01:00.0 + 01:00.1, 3 = 02:00.0.


def edit(*pairs: tuple[str, str]) -> str:
    """BASE with each (old, new) replaced once; `old` must occur in BASE."""
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


VM1_VCPUS = 'vcpus = [2, 3]'
VM1_DEVICES = 'devices = ["0000:02:00.0"]'
VM0_DEVICES = 'devices = ["0000:01:00.0", "0000:01:00.1"]'
AUDIO = "  function = 1\n"

# (id, text, the exact field path (or group message) that must appear, line, error class)
CASES = [
    ("unknown-field", edit((VM1_VCPUS, VM1_VCPUS + "\ncpus = 2")),
     'vm[1].cpus: unknown field (did you mean "vcpus"?)', 41, ConfigError),
    ("unknown-device-field", edit((AUDIO, AUDIO + "  vendor = 1\n")),
     'pci.root_port[0].device[1].vendor: unknown field (did you mean "vendor_id"?)', 18,
     ConfigError),
    ("unknown-table", edit(("[host]", "[hosts]\nx = 1\n\n[host]")),
     "hosts: unknown field", 1, ConfigError),
    ("bad-size-unit", edit(('memory = "4GiB"\nvcpus = [2', 'memory = "4GB"\nvcpus = [2')),
     "vm[1].memory: '4GB': unknown unit 'GB'", 39, ConfigError),
    ("bad-size-text", edit(('memory = "16GiB"', 'memory = "lots"')),
     "host.memory: 'lots' is not a size", 4, ConfigError),
    ("bar-not-power-of-two", edit(('bars = ["16MiB"]', 'bars = ["16MiB", "3MiB"]')),
     "pci.root_port[0].device[0].bars[1]: BAR size 3MiB is not a power of two", 14,
     ConfigError),
    ("duplicate-function", edit((AUDIO, "  function = 0\n")),
     "pci.root_port[0].device[1].slot: slot 0 function 0 is already taken by "
     "pci.root_port[0].device[0]", 16, ConfigError),
    ("slot-below-port", edit((AUDIO, "  slot = 2\n")),
     "pci.root_port[0].device[1].slot: 2: below a PCIe port only device 0 exists", 17,
     ConfigError),
    ("duplicate-root-port", edit(("slot = 2\n", "slot = 1\n")),
     "pci.root_port[1].slot: slot 1 function 0 is already taken by pci.root_port[0]", 23,
     ConfigError),
    ("function-without-0", edit(("  class = \"vga\"\n", "  function = 2\n  class = \"vga\"\n"),
                                (AUDIO, "  function = 1\n")),
     "pci.root_port[0].device[0].function: function 2 at slot 0 has no function 0", 11,
     ConfigError),
    ("duplicate-bdf-vf", edit(('bars = ["16MiB"]', 'bars = ["16MiB"]\n  sriov = { total_vfs = 2, '
                               'num_vfs = 2, vf_offset = 1, vf_stride = 1, vf_device_id = 1 }')),
     "pci.root_port[0].device[0].sriov: VF 0 of 0000:01:00.0 collides with an existing "
     "function at 0000:01:00.1", 15, ConfigError),
    ("sriov-num-above-total", edit(('bars = ["16MiB"]', 'bars = ["16MiB"]\n  sriov = { '
                                    'total_vfs = 2, num_vfs = 3, vf_device_id = 1 }')),
     "pci.root_port[0].device[0].sriov.num_vfs: num_vfs 3 is above total_vfs 2", 15,
     ConfigError),
    ("assigned-twice", edit((VM1_DEVICES, 'devices = ["0000:02:00.0", "01:00.1"]')),
     'vm[1].devices[1]: 0000:01:00.1 is already assigned to vm "web" (vm[0].devices[1])', 41,
     HostAssignmentError),
    ("listed-twice", edit((VM1_DEVICES, 'devices = ["0000:02:00.0", "02:00.0"]')),
     "vm[1].devices[1]: 0000:02:00.0 is listed already as vm[1].devices[0]", 41,
     HostAssignmentError),
    ("missing-bdf", edit((VM1_DEVICES, 'devices = ["0000:05:00.0"]')),
     "vm[1].devices[0]: no PCI function at 0000:05:00.0 after enumeration", 41,
     HostAssignmentError),
    ("malformed-bdf", edit((VM1_DEVICES, 'devices = ["02:00"]')),
     "vm[1].devices[0]: not a PCI address (want [dddd:]bb:dd.f): '02:00'", 41, ConfigError),
    ("bridge-assigned", edit((VM1_DEVICES, 'devices = ["0000:00:02.0"]')),
     "vm[1].devices[0]: 0000:00:02.0 is a PCIe root port; vfio-pci binds only type 0", 41,
     HostAssignmentError),
    ("unviable-group", edit((VM0_DEVICES, 'devices = ["0000:01:00.0"]')),
     'vm "web": IOMMU group 2 is not viable: 0000:01:00.1 is not assigned to vm "web" '
     "(it stays with the host;", 35, HostAssignmentError),
    ("unviable-group-other-vm", edit((VM0_DEVICES, 'devices = ["0000:01:00.0"]'),
                                     (VM1_DEVICES, 'devices = ["0000:02:00.0", "01:00.1"]')),
     'vm "web": IOMMU group 2 is not viable: 0000:01:00.1 is not assigned to vm "web" '
     '(it is assigned to vm "db";', 35, HostAssignmentError),
    ("guest-ram-beyond-host", edit(('memory = "4GiB"\nvcpus = [2', 'memory = "12GiB"\nvcpus = [2')),
     'vm[1].memory: guests need 16GiB up to vm "db" but host.memory 16GiB minus '
     "host.reserved_memory 2GiB leaves 14GiB", 39, ConfigError),
    ("reserve-beyond-host", edit(('memory = "16GiB"', 'memory = "16GiB"\nreserved_memory = '
                                  '"17GiB"')),
     "host.reserved_memory: 17GiB is more than host.memory 16GiB", 5, ConfigError),
    ("vcpu-missing-core", edit((VM1_VCPUS, "vcpus = [2, 4]")),
     "vm[1].vcpus[1]: core 4 does not exist (host.cores = 4: cores 0-3)", 40, ConfigError),
    ("vcpu-negative-core", edit((VM1_VCPUS, "vcpus = [-1, 3]")),
     "vm[1].vcpus[0]: input should be greater than or equal to 0, got -1", 40, ConfigError),
    ("vcpu-shared-core", edit((VM1_VCPUS, "vcpus = [1, 3]")),
     'vm[1].vcpus[0]: core 1 is already pinned to vcpu 1 of vm "web" (set '
     "host.allow_shared_cores = true", 40, ConfigError),
    ("wrong-type", edit(("cores = 4", 'cores = "4"')),
     "host.cores: want an integer, got '4'", 3, ConfigError),
    ("missing-field", edit(('memory = "16GiB"\n', "")),
     "host.memory: required field is missing", 1, ConfigError),
    ("unknown-kind", edit(('  class = "vga"', '  kind = "gpu"\n  class = "vga"')),
     "pci.root_port[0].device[0].kind: 'gpu' is not a device kind", 11, ConfigError),
    ("misplaced-kind", edit(('  class = "vga"', '  kind = "rc-endpoint"\n  class = "vga"')),
     'pci.root_port[0].device[0].kind: "rc-endpoint" cannot sit below a PCIe port', 11,
     ConfigError),
    ("acs-ctl-not-in-cap", edit(('acs = "full"', 'acs = { cap = ["SV"], ctl = ["SV", "RR"] }')),
     "pci.root_port[0].acs.ctl: RR enabled but not implemented in cap", 8, ConfigError),
    ("acs-bad-preset", edit(('acs = "full"', 'acs = "fully"')),
     "pci.root_port[0].acs: 'fully' is not an ACS setting", 8, ConfigError),
    ("iommu-off-with-assignment", edit(("[[pci.root_port]]", "[host.iommu]\nenabled = false\n\n"
                                        "[[pci.root_port]]")),
     "vm[0].devices[0]: 0000:01:00.0: device assignment (VFIO) needs an IOMMU", 38,
     HostAssignmentError),
    ("no-interrupt-remapping", edit(("[[pci.root_port]]", "[host.iommu]\ninterrupt_remapping = "
                                     "false\n\n[[pci.root_port]]")),
     "vm[0].devices[0]: 0000:01:00.0: vfio_iommu_type1 refuses assignment without interrupt "
     "remapping", 38, HostAssignmentError),
    ("posted-without-remapping", edit(("[[pci.root_port]]", "[host.iommu]\ninterrupt_remapping "
                                       "= false\nposted_interrupts = true\n\n[[pci.root_port]]")),
     "host.iommu.posted_interrupts: posted interrupts are a mode of interrupt remapping", 8,
     ConfigError),
    ("bad-acs-override", edit(("[[pci.root_port]]", '[host.iommu]\nacs_override = "sideways"\n\n'
                               "[[pci.root_port]]")),
     "host.iommu.acs_override: pcie_acs_override: unknown option 'sideways'", 7, ConfigError),
    ("address-width", edit(('memory = "16GiB"', 'memory = "2TiB"'),
                           ('memory = "4GiB"\nvcpus = [2', 'memory = "1TiB"\nvcpus = [2'),
                           ("[[pci.root_port]]", "[host.iommu]\naddress_width = 39\n\n"
                            "[[pci.root_port]]")),
     "vm[1].memory: 1TiB of guest memory cannot be mapped for DMA by a 39-bit IOMMU", 42,
     ConfigError),
    ("duplicate-vm-name", edit(('name = "db"', 'name = "web"')),
     'vm[1].name: "web" is already the name of vm[0]', 38, ConfigError),
    ("bad-vm-name", edit(('name = "db"', 'name = "d b"')),
     "vm[1].name: 'd b' is not a valid name", 38, ConfigError),
    ("unknown-emulated", edit((VM1_DEVICES, VM1_DEVICES + '\nemulated = ["floppy"]')),
     "vm[1].emulated[0]: input should be 'nvme'", 42, ConfigError),
    ("mmio32-exhausted", edit(('bars = ["16MiB"]', 'bars = [{ size = "2GiB", bits = 32 }]')),
     "pci: 32-bit MMIO window 0xc0000000-0xfebfffff is too small", None, HostResourcesError),
]


@pytest.mark.parametrize(("text", "expected", "line", "error"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_names_the_field_and_line(text: str, expected: str, line: int | None,
                                        error: type[Exception]) -> None:
    with pytest.raises(ConfigError) as info:
        load_host_text(text, "h.toml")
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg
    assert isinstance(info.value, error)
    prefix = f"h.toml:{line}: " if line is not None else "h.toml: "
    assert msg.startswith(prefix), msg


def run_check(path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "passthru.cli.main", "check", str(path)],
                          capture_output=True, text=True)


@pytest.mark.parametrize(("text", "expected"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "host.toml"
    path.write_text(text)
    proc = run_check(path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"passthru: error: {path}:")
    assert expected in proc.stderr


def test_the_base_file_and_the_allowed_variants_load() -> None:
    cfg = load_host_text(BASE)
    assert [[f.bdf for f in fns] for fns in cfg.assigned.values()] == [
        ["0000:01:00.0", "0000:01:00.1"], ["0000:02:00.0"]]
    assert [g.bdfs() for g in cfg.groups] == [
        ["0000:00:01.0"], ["0000:00:02.0"], ["0000:01:00.0", "0000:01:00.1"], ["0000:02:00.0"]]
    shared = edit(("cores = 4", "cores = 4\nallow_shared_cores = true"),
                  (VM1_VCPUS, "vcpus = [1, 1]"))
    assert load_host_text(shared).vms[1].vcpus == [1, 1]
    unsafe = edit(("[[pci.root_port]]", "[host.iommu]\ninterrupt_remapping = false\n"
                   "allow_unsafe_interrupts = true\n\n[[pci.root_port]]"))
    assert load_host_text(unsafe).host.iommu.allow_unsafe_interrupts
    # An ACS-less root port joins the GPU's group; the port may stay with the host.
    no_acs = edit(('acs = "full"\n', ""))
    assert [g.bdfs() for g in load_host_text(no_acs).groups][0] == [
        "0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]


def test_error_classes_are_also_the_specific_project_errors() -> None:
    with pytest.raises(AssignmentError):
        load_host_text(edit((VM0_DEVICES, 'devices = ["0000:01:00.0"]')))
    with pytest.raises(OutOfResources):
        load_host_text(edit(('bars = ["16MiB"]', 'bars = [{ size = "2GiB", bits = 32 }]')))


@pytest.mark.parametrize(("text", "where"), [
    ('[host]\nname = "t"\ncores = 4\nmemory = "16GiB\n', ":4:16: "),
    ("[host]\nname = \"t\"\ncores 4\n", ":3:7: "),
    ("[host]\n[host]\n", ":2:"),
])
def test_toml_syntax_errors_give_file_line_and_column(tmp_path: Path, text: str,
                                                      where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_host_text(text, "h.toml")
    assert str(info.value).startswith("h.toml" + where), str(info.value)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = run_check(path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"passthru: error: {path}{where}")


def test_missing_file_directory_and_binary_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[host]\nname = "\xff"\n')
    for path, expected in ((missing, f"{missing}: cannot read: No such file or directory"),
                           (tmp_path, f"{tmp_path}: cannot read: Is a directory"),
                           (binary, f"{binary}:2: not UTF-8 text (byte 0xff)")):
        with pytest.raises(ConfigError, match="^" + expected.replace(".", r"\.")
                           .replace("(", r"\(").replace(")", r"\)")):
            load_host(path)
        proc = run_check(path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1
        assert proc.stderr == f"passthru: error: {expected}\n"


def test_line_numbers_follow_nested_arrays_of_tables() -> None:
    text = edit(('acs = "full"\n\n  [[pci.root_port.device]]\n  class = "nvme"',
                 'acs = "full"\n\n  [[pci.root_port.device]]\n  kind = "switch"\n\n'
                 '    [[pci.root_port.device.port]]\n    [[pci.root_port.device.port]]\n'
                 '      [[pci.root_port.device.port.device]]\n      class = "nvme"\n'
                 '      bars = ["16KiB", "17KiB"]'))
    with pytest.raises(ConfigError) as info:
        load_host_text(text, "h.toml")
    assert str(info.value).startswith(
        "h.toml:33: pci.root_port[1].device[0].port[1].device[0].bars[1]: "), str(info.value)
