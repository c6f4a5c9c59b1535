"""`passthru audit`: exit codes, the --json document, the table, no-IOMMU and the live run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from passthru.analysis.audit import RULES
from passthru.cli.main import cli

DATA = Path(__file__).resolve().parent.parent / "data"
SNAP = DATA / "sysfs"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_table_ranks_findings_with_evidence():
    res = run("audit", "--sysfs", str(SNAP / "x570_amd_identity"))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "sysfs snapshot" in out and "IOMMU: units ivhd0; 41 groups (identity: 41)" in out
    for title in ("Peer-to-peer bypasses the IOMMU", "Identity-mapped (passthrough) groups",
                  "Groups that mix endpoints", "Kernel groups differ from the model"):
        assert title in out
    assert out.index("HIGH") < out.index("MEDIUM") < out.index("LOW")
    assert out.rstrip().endswith(f"{len(RULES)} rules checked.")


def test_json_shape():
    res = run("audit", "--sysfs", str(SNAP / "xps13_9380_tb3_no_ir"), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert set(doc) == {"source", "kind", "iommu", "computed_groups", "counts", "findings",
                        "rules"}
    assert doc["kind"] == "sysfs" and doc["iommu"]["iommu_present"] is True
    assert doc["iommu"]["interrupt_remapping"] is False
    assert [r["id"] for r in doc["rules"]] == [r.id for r in RULES]
    for f in doc["findings"]:
        assert set(f) == {"rule", "severity", "title", "summary", "evidence"}
        assert f["severity"] in ("high", "medium", "low", "info")
    assert {f["rule"] for f in doc["findings"]} == {r["id"] for r in doc["rules"] if r["fired"]}
    assert doc["counts"]["high"] == sum(f["severity"] == "high" for f in doc["findings"])
    assert all(len(b) == 12 for g in doc["computed_groups"] for b in g)


def test_no_iommu_says_so_plainly():
    res = run("audit", "--sysfs", str(SNAP / "xps13_9310_iommu_off"))
    assert res.exit_code == 0
    assert res.output.splitlines()[1].startswith("NO IOMMU: this machine has no active IOMMU")
    doc = json.loads(run("audit", "--sysfs", str(SNAP / "xps13_9310_iommu_off"),
                         "--json").output)
    assert doc["iommu"]["iommu_present"] is False
    assert [f["rule"] for f in doc["findings"]] == ["no-iommu"]


def test_lspci_source():
    res = run("audit", "--lspci", str(DATA / "lspci" / "radxa_orion_o6_arm.txt"), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["kind"] == "lspci" and doc["iommu"]["iommu_present"] is True


def test_fail_on_gives_exit_code_1():
    assert run("audit", "--sysfs", str(SNAP / "x570_amd_identity"),
               "--fail-on", "high").exit_code == 1
    assert run("audit", "--sysfs", str(SNAP / "orion_o6_lazy_acs_override"),
               "--fail-on", "medium").exit_code == 1  # the ACS override is high
    assert run("audit", "--sysfs", str(SNAP / "xps13_9310_intel_dma"),
               "--fail-on", "info").exit_code == 1
    ok = SNAP / "orion_o6_lazy_acs_override"
    assert run("audit", "--sysfs", str(ok), "--json").exit_code == 0


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    broken = tmp_path / "broken"
    (broken / "sys" / "bus" / "pci" / "devices" / "0000:00:00.0").mkdir(parents=True)
    (broken / "sys" / "bus" / "pci" / "devices" / "0000:00:00.0" / "config").write_bytes(b"x")
    for args in (["audit", "--sysfs", str(tmp_path / "missing")],
                 ["audit", "--sysfs", str(tmp_path)],  # no sys/bus/pci/devices
                 ["audit", "--sysfs", str(broken)],
                 ["audit", "--lspci", str(empty)],
                 ["audit", "--lspci", str(tmp_path / "missing.txt")],
                 ["audit", "--sysfs", str(tmp_path), "--lspci", str(empty)]):
        proc = subprocess.run([sys.executable, "-m", "passthru.cli.main", *args],
                              capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("passthru: error: ")
        assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "passthru.cli.main", "audit", "--sysfs",
                           str(broken)], capture_output=True, text=True)
    assert "config" in proc.stderr and str(broken) in proc.stderr


def test_live_run_does_not_crash():
    proc = subprocess.run([sys.executable, "-m", "passthru.cli.main", "audit"],
                          capture_output=True, text=True)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 0:
        assert proc.stdout.startswith("passthru audit of / (live system)")
        doc = json.loads(subprocess.run(
            [sys.executable, "-m", "passthru.cli.main", "audit", "--json"],
            capture_output=True, text=True).stdout)
        if not doc["iommu"]["iommu_present"]:
            assert "NO IOMMU" in proc.stdout
            assert doc["findings"][0]["rule"] == "no-iommu"
    else:
        assert proc.stderr.count("\n") == 1
