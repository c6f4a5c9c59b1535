"""passthru: an executable model of a virtualization host doing IOMMU device passthrough."""

from passthru.errors import (
    AssignmentError,
    ConfigError,
    DumpParseError,
    OutOfResources,
    PassthruError,
)

__version__ = "0.1.0"

__all__ = [
    "AssignmentError",
    "ConfigError",
    "DumpParseError",
    "OutOfResources",
    "PassthruError",
    "__version__",
]
