"""The bundled example hosts: they validate (the unviable one fails with the group message),
the workstation file builds the very topology of the Python-built example, and `passthru
check` prints and emits JSON for them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from passthru.analysis.groups import compute_iommu_groups
from passthru.cli.main import cli
from passthru.config import HostAssignmentError, load_host
from passthru.scenarios.example_hosts import workstation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_workstation_validates_with_gpu_and_audio_in_one_vm() -> None:
    cfg = load_host(EXAMPLES / "workstation.toml")
    assert {vm: [f.bdf for f in fns] for vm, fns in cfg.assigned.items()} == {
        "gaming": ["0000:01:00.0", "0000:01:00.1"], "nas": ["0000:07:00.0"]}
    gpu_group = cfg.group_of("0000:01:00.0")
    assert gpu_group is not None and gpu_group.bdfs() == [
        "0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]
    assert cfg.host.reserved_memory == 4 << 30
    assert cfg.paths["0000:04:10.4"] == "pci.root_port[1].device[0].port[0].device[0].sriov"


def test_workstation_round_trip_builds_the_python_example() -> None:
    """Same groups as the Python-built host, and the same functions bit for bit."""
    cfg = load_host(EXAMPLES / "workstation.toml")
    expected = [
        ["0000:00:00.0"], ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"], ["0000:00:02.0"],
        ["0000:00:1c.0"], ["0000:00:1e.0", "0000:08:03.0", "0000:08:04.0"], ["0000:02:00.0"],
        ["0000:03:00.0"], ["0000:03:01.0", "0000:05:00.0"], ["0000:03:02.0"], ["0000:04:00.0"],
        ["0000:06:00.0"], ["0000:07:00.0"], ["0000:04:10.0"], ["0000:04:10.4"]]
    assert [g.bdfs() for g in cfg.groups] == expected
    python_built = workstation()
    assert [g.bdfs() for g in compute_iommu_groups(python_built)] == expected
    ours, theirs = cfg.topology.functions(), python_built.functions()
    assert [f.bdf for f in ours] == [f.bdf for f in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert bytes(a.config.data) == bytes(b.config.data), a.bdf
        assert a.describe() == b.describe()
        assert [(x.index, x.address, x.size, x.is_64, x.prefetchable) for x in a.bars] == [
            (x.index, x.address, x.size, x.is_64, x.prefetchable) for x in b.bars]


def test_server_gives_each_vm_its_own_vf_group() -> None:
    cfg = load_host(EXAMPLES / "server.toml")
    vfs = [f for f in cfg.topology.functions() if f.is_virtfn]
    assert len(vfs) == 8
    assigned = {vm: [f.bdf for f in fns] for vm, fns in cfg.assigned.items()}
    assert assigned == {"web-1": ["0000:03:01.0"], "web-2": ["0000:03:01.1"],
                        "cache": ["0000:03:01.2"], "db": ["0000:03:01.3", "0000:04:00.0"]}
    for fns in cfg.assigned.values():
        for fn in fns:
            group = cfg.group_of(fn)
            assert group is not None and group.bdfs() == [fn.bdf]
    assert cfg.host.iommu.mode == "identity" and not cfg.host.iommu.strict


def test_unviable_example_fails_with_the_group_message() -> None:
    with pytest.raises(HostAssignmentError) as info:
        load_host(EXAMPLES / "unviable.toml")
    msg = str(info.value)
    assert msg.startswith(f"{EXAMPLES / 'unviable.toml'}:49: ")
    assert ('vm "desktop": IOMMU group 1 is not viable: 0000:01:00.1 is not assigned to vm '
            '"desktop"') in msg
    # The comment in the example quotes the same line.
    assert "unviable.toml:49: vm \"desktop\": IOMMU group 1 is not viable:" in (
        EXAMPLES / "unviable.toml").read_text()


def test_check_prints_host_groups_and_vms() -> None:
    res = CliRunner().invoke(cli, ["check", str(EXAMPLES / "workstation.toml")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == ('host "workstation": 8 cores, 64GiB memory (4GiB reserved for the '
                        "host, 60GiB for guests)")
    assert lines[1].startswith("IOMMU: translated default domains, strict invalidation, "
                               "interrupt remapping on, posted interrupts on, IOTLB 512")
    assert "IOMMU Group 1:" in lines
    assert 'vm "gaming": 16GiB memory, 4 vCPUs' in lines
    assert ("  vCPU pinning: vcpu0 -> core 2, vcpu1 -> core 3, vcpu2 -> core 4, "
            "vcpu3 -> core 5") in lines
    assert any(line.startswith("    01:00.1 Audio device [0403]: NVIDIA") and
               line.endswith("IOMMU group 1  OK") for line in lines)
    assert lines[-1].endswith("workstation.toml: OK (2 VMs, 3 assigned devices, "
                              "14 IOMMU groups)")


def test_check_json() -> None:
    res = CliRunner().invoke(cli, ["check", "--json", str(EXAMPLES / "server.toml")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["valid"] is True
    assert doc["host"]["memory"] == 256 << 30 and doc["host"]["iommu"]["iotlb_entries"] == 1024
    assert ["0000:03:01.3"] in doc["groups"]
    db = next(vm for vm in doc["vms"] if vm["name"] == "db")
    assert db["vcpus"][0] == {"vcpu": 0, "core": 16}
    assert [(d["bdf"], d["group"], d["viable"]) for d in db["devices"]] == [
        ("0000:03:01.3", 14, True), ("0000:04:00.0", 9, True)]


def test_check_subprocess_exit_codes() -> None:
    ok = subprocess.run([sys.executable, "-m", "passthru.cli.main", "check",
                         str(EXAMPLES / "server.toml")], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == ""
    bad = subprocess.run([sys.executable, "-m", "passthru.cli.main", "check", "--json",
                          str(EXAMPLES / "unviable.toml")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "IOMMU group 1 is not viable" in bad.stderr
