"""Errors that end a command with one clear line instead of a traceback."""
import sys
from typing import Any, Callable


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


def run_or_exit(command: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args); an MftrnnError becomes one line on stderr and SystemExit(its exit code), no traceback.
    (Raised inside a Hydra app, SystemExit passes Hydra's error reporting, which would print a traceback.)

    In a sweep (-m) the error is printed the same way and then re-raised as is: Hydra marks that job
    failed, the sweep's other jobs still run (SystemExit would end the whole sweep, or kill a
    launcher's worker), and the sweep exits non-zero at the end, naming the failed job."""
    try:
        return fn(*args)
    except MftrnnError as exc:
        print(f"mftrnn {command}: error: {exc}", file=sys.stderr)
        if _in_sweep():
            raise
        raise SystemExit(exc.exit_code) from None


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
