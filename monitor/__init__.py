"""har-monitor: real-time camera compliance monitor for regulated manufacturing floors.

The package is laid out by lane (see README.md, "How it works"): site/, model/, pipeline/, rules/,
record/, evidence/, ops/, training/, demo/ and cli/, above the shared base modules here (errors,
messages, fileio, yamlfile, durations). Imports point down only.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("har-monitor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
