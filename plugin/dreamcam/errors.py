"""Errors a user can meet. Each message says what is wrong and how to fix it."""


class DreamcamError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = 2


class ConfigError(DreamcamError, ValueError):
    """A bad argument or setting (wrong size, range, type or name)."""


class ModelLoadError(DreamcamError):
    """A model could not be found or read."""


class DeviceError(DreamcamError):
    """A capture device, display or output backend is missing or failed to open."""
