"""Host description files: TOML validated into typed models, then built into a topology.

`load_host(path)` / `load_host_text(text, source)` return a `HostConfig`: the validated
`HostFile` model, the enumerated `Topology`, its IOMMU groups and each VM's assigned
functions. Every user error is one `ConfigError` line naming the file, line and field path.
"""

from passthru.config.host_model import (
    AcsConfig,
    BarConfig,
    EndpointConfig,
    HostFile,
    IommuConfig,
    MachineConfig,
    PciConfig,
    PciDeviceConfig,
    PcieToPciBridgeConfig,
    RcEndpointConfig,
    RootPortConfig,
    SriovConfig,
    SwitchConfig,
    SwitchPortConfig,
    VmConfig,
    format_size,
    parse_size,
)
from passthru.config.load import (
    HostAssignmentError,
    HostConfig,
    HostResourcesError,
    build_host,
    format_path,
    load_host,
    load_host_text,
    parse_host_text,
)

__all__ = [
    "AcsConfig",
    "BarConfig",
    "EndpointConfig",
    "HostAssignmentError",
    "HostConfig",
    "HostFile",
    "HostResourcesError",
    "IommuConfig",
    "MachineConfig",
    "PciConfig",
    "PciDeviceConfig",
    "PcieToPciBridgeConfig",
    "RcEndpointConfig",
    "RootPortConfig",
    "SriovConfig",
    "SwitchConfig",
    "SwitchPortConfig",
    "VmConfig",
    "build_host",
    "format_path",
    "format_size",
    "load_host",
    "load_host_text",
    "parse_host_text",
    "parse_size",
]
