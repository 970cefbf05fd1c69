"""Run tracking: metrics.jsonl in the run dir (always) and Weights & Biases (offline by default).

W&B is optional at every point: it is imported lazily, `wandb.mode=disabled` never loads it, and if
it cannot start or log (no network in online mode, no API key, a broken install) the run goes on
with a warning; metrics.jsonl and summary.json hold everything regardless.
"""
from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any, Optional

from mftrnn.schema import WandbConfig, WandbMode

log = logging.getLogger(__name__)
METRICS_NAME = "metrics.jsonl"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def truncate_metrics(path: Path, step: int) -> int:
    """Drop records logged after `step` (a crashed run wrote them; the resumed run logs them again) and
    lines that are not whole JSON records (cut mid-write); returns how many of the latter were dropped."""
    if not path.exists():
        return 0
    keep, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):  # a line cut short by a crash
            damaged += 1
    path.write_text("".join(k + "\n" for k in keep))
    return damaged


class Tracker:
    """Appends one JSON object per logged step to metrics.jsonl and mirrors it to W&B.

    Records logged for the same step (training window, validation, final test) are merged into
    one object, written when the next step is logged or at `flush`/`finish`.
    """

    def __init__(self, cfg: WandbConfig, run_dir: Path, run_id: str, name: str, group: str,
                 tags: list[str], config: dict) -> None:
        self.metrics_path = run_dir / METRICS_NAME
        self.run = None
        self._pending: Optional[dict] = None
        if cfg.mode is WandbMode.disabled:
            return
        try:
            import wandb  # deferred on purpose: slow to import, and optional

            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, mode=cfg.mode.value, dir=str(run_dir),
                id=run_id, resume="allow", name=name, group=group, job_type="train",
                tags=tags + list(cfg.tags), config=config,
                settings=wandb.Settings(console="off", init_timeout=60))
            self.run.define_metric("val/acc", summary="max")
        except Exception as exc:  # noqa: BLE001 - any W&B failure must not end the run
            log.warning("W&B is unavailable (%s: %s); continuing without it. metrics.jsonl and "
                        "summary.json in %s hold every metric.", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "", run_dir)
            self.run = None

    def log(self, record: dict, step: int) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        if self._pending is not None and self._pending["step"] == step:
            self._pending.update(record)
            return
        self.flush()
        self._pending = {"step": step, **record}

    def flush(self) -> None:
        if self._pending is None:
            return
        record, step, self._pending = self._pending, self._pending["step"], None
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.run is not None:
            try:
                self.run.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=step)
            except Exception as exc:  # noqa: BLE001
                log.warning("W&B log failed (%s); continuing without W&B", exc)
                self.run = None

    def summary(self, summary: dict) -> None:
        if self.run is not None:
            try:
                for k, v in summary.items():
                    if k != "config":  # W&B has the config already
                        self.run.summary[k] = _clean(v)
            except Exception as exc:  # noqa: BLE001
                log.warning("W&B summary failed (%s)", exc)

    def finish(self, exit_code: int = 0) -> None:
        self.flush()
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001
                log.warning("W&B finish failed (%s)", exc)
            self.run = None


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
