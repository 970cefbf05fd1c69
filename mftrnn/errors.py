"""Errors that end a command with one clear line instead of a traceback."""
import sys
from typing import Any, Callable


class MftrnnError(Exception):
    """Base class: the message is shown to the user as is; exit code 2."""

    exit_code = 2
    label = "error"  # the word after the command in the one line: `mftrnn train: error: ...`
    stops_sweep = False  # True: end the whole sweep too (an interrupt), not only this job


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
        line = f"mftrnn {command}: {exc.label}: {exc}"
        _log_to_files(line)  # the run's log file (train.log) records why it ended
        print(line, file=sys.stderr)
        if _in_sweep() and not exc.stops_sweep:
            raise
        raise SystemExit(exc.exit_code) from None


def _log_to_files(line: str) -> None:
    """Write `line` to the log files of the root logger only (Hydra's <job>.log), not to the console,
    which gets the line from run_or_exit itself."""
    import logging

    record = logging.LogRecord("mftrnn", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# ----------------------------------------------------------------------------- Hydra's own errors
def _choice(argv: list, key: str, default: str) -> str:
    """The last `key=value` (or `+key=value`) on the command line, else `default`."""
    value = default
    for arg in argv:
        name, _, v = arg.lstrip("+~").partition("=")
        if name == key and v:
            value = v
    return value


def explain_config_error(ex: BaseException, argv: list) -> str:
    """One line for a Hydra/OmegaConf composition error: its message without Hydra's advice, the
    full key, and what to do instead (gate overrides: which gates the cell has, and that per-gate
    values need init=meanfield)."""
    lines = [ln.strip() for ln in str(ex).splitlines() if ln.strip()]
    cause = ex.__cause__
    if cause is not None and str(cause).strip() and str(cause).splitlines()[0].strip() not in lines:
        lines += [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
    text = [ln for ln in lines if not ln.startswith(("To append", "full_key:", "reference_type", "object_type",
                                                        "See https://hydra.cc", "Set the environment"))]
    if any(ln.startswith("Available options in") for ln in text):  # "Could not find 'init/nope'" + the list
        i = next(j for j, ln in enumerate(text) if ln.startswith("Available options in"))
        options = []
        for ln in text[i + 1:]:  # the option names, up to Hydra's search-path listing
            if ln.endswith(":") or "=" in ln:
                break
            options.append(ln)
        text = text[:i] + [text[i].rstrip(":") + ": " + ", ".join(options)]
    msg = "; ".join(t.rstrip(".") for t in text) if text else type(ex).__name__
    if full_key and full_key not in msg:
        msg += f" (key {full_key})"
    if "gates" in msg or (full_key or "").startswith("init.gates"):
        from mftrnn.cells import GATES

        cell, init = _choice(argv, "cell", "lstm"), _choice(argv, "init", "standard")
        gates = GATES.get(cell, GATES["lstm"])
        names = ", ".join(gates)
        if init != "meanfield":
            msg += f". Per-gate values need init=meanfield (init={init} has none): e.g. init=meanfield " \
                   f"init.gates.{gates[0]}.mu=3; cell={cell} has gates {names}"
        else:
            msg += f". cell={cell} has gates {names} (keys init.gates.<gate>.<mu|rho|sigma|nu>)"
    return msg


def _reraise(err: BaseException) -> Any:
    raise err


def use_one_line_config_errors(command: str) -> None:
    """Make Hydra report a composition error (unknown key, wrong type, unknown option, bad override
    syntax) or a run dir it cannot create as one line, `mftrnn <command>: error: ...`, exit code 2.
    Hydra prints these through hydra._internal.utils.run_and_report; it is wrapped here, and any other
    exception still goes to Hydra's own report (a bug keeps its traceback; HYDRA_FULL_ERROR=1 too)."""
    import os

    import hydra._internal.utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    original = getattr(hydra_utils.run_and_report, "__wrapped__", hydra_utils.run_and_report)
    users = (MftrnnError, HydraException, OmegaConfBaseException, OSError)

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - sorted below; the rest goes to Hydra's own report
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(exc, users):
                return original(lambda err=exc: _reraise(err))  # a bug keeps its traceback
            if isinstance(exc, MftrnnError):  # a sweep's failed job: run_or_exit has printed it already
                sys.exit(exc.exit_code)
            if isinstance(exc, OSError) and not isinstance(exc, HydraException):  # e.g. the run dir
                where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
                msg = f"cannot create or write{where} ({exc.strerror or exc}); choose another run dir with hydra.run.dir=PATH"
            else:
                msg = explain_config_error(exc, sys.argv[1:])
            print(f"mftrnn {command}: error: {msg}", file=sys.stderr)
            sys.exit(2)

    run_and_report.__wrapped__ = original  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report
