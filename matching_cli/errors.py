"""The project's exceptions. Only `cli.py` turns them into exit codes and messages."""

from __future__ import annotations


class MatchingError(Exception):
    """A problem the user can act on; the message says what and how."""

    exit_code = 1


class ConfigError(MatchingError):
    """Bad settings: a file, key, type or value."""


class DataError(MatchingError):
    """Raw or prepared data that is missing or not in the expected shape."""


class DownloadError(MatchingError):
    """Getting the raw data failed."""


class DeviceError(MatchingError):
    """An explicitly requested device is not available."""


class ModelError(MatchingError):
    """A saved model or training run that cannot be used."""


class OutputError(MatchingError):
    """A result that cannot be written where it should go: a folder, a full disk, a link loop."""
