"""polybus.common: the contracts and plumbing every polybus service shares.

Events, subjects, fixed-point money, configuration, the bus, the service runtime, embedded
infrastructure launchers and the operator CLI. Libraries are imported; services run.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polybus-common")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
