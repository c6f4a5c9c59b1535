"""`passthru groups`: output formats, the what-if override and user errors."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from passthru.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_groups_prints_the_shell_loop_format_for_the_example_host():
    res = run("groups")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0] == "IOMMU Group 0:"
    assert ("\t01:00.1 Audio device [0403]: NVIDIA Corporation GP104 High Definition Audio "
            "Controller [10de:10f0]") in lines
    # The GPU and its audio function share the ACS-less root port's group.
    gpu_group = lines[lines.index("\t01:00.0 VGA compatible controller [0300]: NVIDIA "
                                  "Corporation GP104 [GeForce GTX 1080] [10de:1b80]") - 2]
    assert gpu_group == "IOMMU Group 1:"


def test_groups_json_uses_full_addresses():
    doc = json.loads(run("groups", "--json").output)
    assert ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"] in doc["groups"]
    assert all(len(b) == 12 for g in doc["groups"] for b in g)


def test_acs_override_splits_groups_and_warns_about_p2p():
    res = run("groups", "--acs-override", "downstream,multifunction")
    assert res.exit_code == 0
    assert "understate" in res.output
    doc = json.loads(run("groups", "--json", "--acs-override", "downstream,multifunction").output)
    assert ["0000:01:00.0"] in doc["groups"] and ["0000:01:00.1"] in doc["groups"]
    assert any(p["source"] == "0000:01:00.0" and p["target"] == "0000:01:00.1"
               for p in doc["p2p_understated"])


def test_p2p_mode_reports_the_acsless_switch_port():
    doc = json.loads(run("groups", "--json", "--p2p").output)
    srcs = {(p["source"], p["target"]) for p in doc["p2p_understated"]}
    assert ("0000:05:00.0", "0000:04:00.0") in srcs  # below 03:01.0 (no ACS) into 03:00.0's NIC


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for args in (["groups", "--acs-override", "sideways"], ["groups", "--lspci", str(empty)],
                 ["groups", "--lspci", str(tmp_path / "missing.txt")],
                 ["groups", "--example", "mainframe"], ["groups", "--acs-override", ""],
                 ["groups", "--lspci", str(tmp_path)]):
        proc = subprocess.run([sys.executable, "-m", "passthru.cli.main", *args],
                              capture_output=True, text=True)
        assert proc.returncode == 2, args
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("passthru: error: ")
        assert "Traceback" not in proc.stderr
