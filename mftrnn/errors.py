"""Errors that end a command with one clear line instead of a traceback."""


class MftrnnError(Exception):
    """Base class: the message is shown to the user as is; exit code 2."""

    exit_code = 2


class ConfigError(MftrnnError, ValueError):
    """A config value is out of range or inconsistent; the message names the key."""


class DataError(MftrnnError):
    """A dataset is missing or corrupt; the message names the path, MFTRNN_DATA and the fix."""


class DivergedError(MftrnnError):
    """The loss became non-finite and train.fail_on_divergence=true."""

    exit_code = 3
