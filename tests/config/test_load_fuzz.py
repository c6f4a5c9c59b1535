"""Mutated example host files (lines dropped, duplicated, swapped, garbage inserted, values
replaced) either load or raise ConfigError with a one-line message: never another exception."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from text_mutations import mutated_lines

from passthru.config import HostConfig, load_host_text
from passthru.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXTS = {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.toml"))}

FUZZ = settings(
    max_examples=200,
    deadline=None,  # no timing in tests
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALUES = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.integers(min_value=-2, max_value=70).map(str),
    st.sampled_from([
        '"16GiB"', '"0GiB"', '"1.5KiB"', '"9999999TiB"', '"3MiB"', '"GiB"', '"full"', '"off"',
        '"none"', '"switch"', '"pci"', '"rc-endpoint"', '"pcie-to-pci-bridge"', '"endpoint"',
        '"0000:01:00.0"', '"01:00.1"', '"ff:1f.7"', "[]", "{}", "true", "false", "1.5", "nan",
        "inf", "1979-05-27", "0x10de", '"10de"', "[0, 0, 0]", "[99]", '["0000:00:01.0"]',
        '{ cap = ["SV"], ctl = ["RR"] }', '{ total_vfs = 2048, num_vfs = 2048, vf_offset = 1, '
        'vf_stride = 1, vf_device_id = 1 }', '[{ size = "4GiB", bits = 32 }]', '"identity"',
        '"downstream,multifunction"', '"id:zz"', '"x\\ny"', "'''a'''", '"\\u0000"',
    ]),
    st.text(max_size=12).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
)

GARBAGE = st.one_of(
    st.text(max_size=60),
    st.sampled_from([
        "[[vm]]", "[[pci.root_port]]", "[[pci.root_port.device]]", "[[pci.device]]",
        "[[pci.root_port.device.port]]", "[[pci.root_port.device.port.device]]", "[host.iommu]",
        "[pci]", 'kind = "switch"', 'kind = "pci"', "slot = 0", "slot = 31", "function = 7",
        'acs = "off"', 'devices = ["0000:01:00.0"]', "vcpus = [0]", 'memory = "1TiB"',
        "allow_shared_cores = true", "enabled = false", "interrupt_remapping = false",
        'sriov = { total_vfs = 8, num_vfs = 8, vf_offset = 1, vf_stride = 1, vf_device_id = 1 }',
        'name = "gaming"', "[[pci.device.device]]", 'bars = ["2GiB", "1TiB"]',
    ]),
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = TEXTS[draw(st.sampled_from(sorted(TEXTS)))]
    return draw(mutated_lines(text, VALUES, GARBAGE))


@FUZZ
@given(mutated())
def test_mutated_examples_load_or_raise_one_config_error(text: str) -> None:
    try:
        cfg = load_host_text(text, "fuzz.toml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.toml")
        assert "\n" not in msg and "\r" not in msg
    else:
        assert isinstance(cfg, HostConfig)
        for fns in cfg.assigned.values():
            for fn in fns:
                assert cfg.group_of(fn) is not None


@FUZZ
@given(st.sampled_from(sorted(TEXTS)), st.integers(min_value=0), st.data())
def test_truncated_examples_load_or_raise_config_error(name: str, cut: int,
                                                      data: st.DataObject) -> None:
    text = TEXTS[name]
    text = text[: cut % (len(text) + 1)]
    try:
        load_host_text(text, "cut.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
