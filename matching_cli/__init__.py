"""matching: learn whether two marketplace listings are the same product."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("matching-cli")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
