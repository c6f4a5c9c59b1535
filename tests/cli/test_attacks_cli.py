"""`passthru attacks` and `passthru containers`: tables, JSON, exit codes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from passthru.cli.main import cli


def test_attacks_table_shows_both_configurations_with_evidence():
    res = CliRunner().invoke(cli, ["attacks"])
    assert res.exit_code == 0, res.output
    out = res.output
    for name in ("dma-to-host-memory", "p2p-bar-write", "msi-injection", "stale-iotlb",
                 "rid-spoofing", "unviable-group"):
        assert name in out
    assert out.count("SUCCEEDED") == 6 and out.count("BLOCKED") == 6
    assert "IR_SID_ERR" in out and "ACS violation SV" in out
    assert "12 runs, all as expected" in out


def test_attacks_json_is_one_document_and_deterministic():
    runner = CliRunner()
    first = runner.invoke(cli, ["attacks", "--json", "--seed", "4"])
    second = runner.invoke(cli, ["attacks", "--json", "--seed", "4"])
    assert first.exit_code == 0 and first.output == second.output
    doc = json.loads(first.output)
    assert doc["all_as_expected"] is True and len(doc["attacks"]) == 6
    msi = next(a for a in doc["attacks"] if a["name"] == "msi-injection")
    assert [f["reason"] for f in msi["blocked"]["faults"]] == ["IR_REQ_COMPAT", "IR_SID_ERR"]
    assert msi["open"]["interrupts"][0]["vector"] == "0x31"
    host = next(a for a in doc["attacks"] if a["name"] == "dma-to-host-memory")
    assert host["blocked"]["faults"][0] == {"reason": "WRITE", "code": 5,
                                            "source_id": "0x0300", "address": "0x1000000"}


def test_containers_table_and_json():
    runner = CliRunner()
    res = runner.invoke(cli, ["containers"])
    assert res.exit_code == 0, res.output
    assert "NVME_IOCTL_ADMIN_CMD" in res.output and "VFIO" in res.output
    assert "all as expected" in res.output
    res = runner.invoke(cli, ["containers", "--json", "--device", "nic"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert [m["model"] for m in doc["models"]] == ["container-pt", "container-dma", "vm"]
    assert [m["host_kernel_reachable"] for m in doc["models"]] == [True, False, False]
    assert doc["models"][2]["reach_bytes"] == 4 << 20


def test_bad_device_class_is_a_usage_error():
    res = CliRunner().invoke(cli, ["containers", "--device", "gpu"])
    assert res.exit_code == 2
