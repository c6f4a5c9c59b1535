"""The one root exception for mistakes a user can make.

Guest-visible hardware outcomes (a DMA fault, an ACS violation, a blocked MSI) are
*records*, never exceptions. Only user errors (bad config, malformed dump, impossible
assignment) raise, and the CLI prints them as one line with exit code 2.
"""

from __future__ import annotations


class PassthruError(Exception):
    """A user error. The message names the offending field, line or address (in hex)."""


class ConfigError(PassthruError):
    """A host or scenario description is invalid."""


class DumpParseError(PassthruError):
    """An outside format (lspci dump, sysfs tree) cannot be read faithfully."""


class AssignmentError(PassthruError):
    """A device cannot be assigned as asked (for example, its IOMMU group is not viable)."""


class OutOfResources(PassthruError):
    """Host memory, bus numbers or MMIO space ran out for the requested configuration."""
