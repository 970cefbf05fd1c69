"""`hydra/launcher=packed`: a sweep's runs that share their shapes trained together, K to a module.

    mftrnn train -m hydra/launcher=packed seed=0,1,2,3 init=chrono,critical
    mftrnn train -m hydra/launcher=packed hydra.launcher.pack=4 optim.lr=1e-3,3e-3

Hydra finds launchers only in the hydra_plugins namespace, so this module is the Hydra side alone:
it composes each job's config and run dir as Hydra's own launcher does (the job's .hydra/ files,
callbacks), then hands the jobs to mftrnn.packed_train, which groups and trains them
(docs/usage.md, Packed sweeps). Its import stays light: Hydra imports every plugin at start-up.
"""

import copy
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, _save_config, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.mftrnn_packed_launcher.packed_launcher.PackedLauncher"
    # most runs in one module; null: the size with the most runs/hour measured on an H200, per layout and
    # cell (mftrnn.packed_train.BEST_PACK; docs/performance.md)
    pack: Optional[int] = None
    # GPUs to spread packs over, one worker process each; null: every visible GPU; 0 or 1: this process
    gpus: Optional[int] = None
    # how a pack computes its runs (mftrnn.packed.LAYOUTS): scan (one batched loop over time, CUDA-graphed
    # on a GPU) or blockdiag (one cuDNN module of hidden K x H); auto: scan on a GPU, blockdiag on the CPU;
    # docs/performance.md measures both
    mechanism: str = "auto"


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="mftrnn")


class PackedLauncher(Launcher):
    def __init__(self, pack: Optional[int] = None, gpus: Optional[int] = None, mechanism: str = "auto") -> None:
        from mftrnn.errors import ConfigError
        from mftrnn.packed_train import check_mechanism

        if pack is not None and int(pack) < 1:
            raise ConfigError(f"hydra.launcher.pack={pack} is not allowed: null or an integer >= 1")
        check_mechanism(str(mechanism))
        self.pack, self.gpus, self.mechanism = (None if pack is None else int(pack)), gpus, str(mechanism)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _workers(self, device: str) -> int:
        if device == "cpu":
            return 1
        from mftrnn.gpus import visible_gpus

        n = len(visible_gpus())
        return max(1, min(n, n if self.gpus is None else int(self.gpus)))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mftrnn.errors import ConfigError, MftrnnError
        from mftrnn.packed_train import Job, PackedJobError, run_packs

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if "train" not in self.config or "model" not in self.config:
            raise ConfigError("hydra/launcher=packed packs the runs of `mftrnn train` only")
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Packing %d jobs, at most %s per module, %s layout", len(job_overrides),
                 self.pack if self.pack is not None else "the measured best", self.mechanism)
        jobs, returns, configs = [], [], []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            ret, task_cfg, run_dir = _open_job(sweep_config)
            self.hydra_context.callbacks.on_job_start(config=sweep_config, task_function=self.task_function)
            jobs.append(Job(task_cfg, run_dir, run_dir / f"{sweep_config.hydra.job.name}.log", label=f"#{idx}"))
            returns.append(ret)
            configs.append(sweep_config)
        # console logging for the packs (each run's file log is opened by mftrnn.packed_train)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        device = str(jobs[0].cfg.get("device", "auto")) if jobs else "auto"
        try:
            outcomes = run_packs(jobs, self.pack, self._workers(device), self.mechanism)
        except MftrnnError as exc:  # an interrupt: every run of the pack has its checkpoint
            print(f"mftrnn train: {exc.label}: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
        for ret, out, sweep_config in zip(returns, outcomes, configs):
            if out.kind is None:
                ret.status, ret.return_value = JobStatus.COMPLETED, (out.summary or {}).get("val_acc")
            else:
                err = PackedJobError(out)
                print(f"mftrnn train: {err.label}: {err}", file=sys.stderr, flush=True)
                ret.status, ret.return_value = JobStatus.FAILED, err
            self.hydra_context.callbacks.on_job_end(config=sweep_config, job_return=ret)
        stopped = [o for o in outcomes if o.stops_sweep]
        if stopped:  # an interrupt ends the sweep, as it does under the other launchers
            raise SystemExit(stopped[0].exit_code)
        return returns


def _open_job(config: DictConfig) -> tuple[JobReturn, DictConfig, Path]:
    """What Hydra's run_job does before calling the task: the run dir, hydra.runtime.output_dir, the
    job's config (interpolations resolved while its Hydra config is current) and its .hydra/ files."""
    HydraConfig.instance().set_config(config)
    output_dir = os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")),
                              str(OmegaConf.select(config, "hydra.sweep.subdir")))
    with read_write(config.hydra.runtime):
        with open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    HydraConfig.instance().set_config(config)
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg):
        with open_dict(task_cfg):
            del task_cfg["hydra"]
    ret = JobReturn()
    ret.cfg = task_cfg
    ret.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    ret.overrides = OmegaConf.to_container(config.hydra.overrides.task)
    ret.working_dir = os.getcwd()
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    if config.hydra.output_subdir is not None:
        hydra_output = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
        _save_config(task_cfg, "config.yaml", hydra_output)
        _save_config(ret.hydra_cfg, "hydra.yaml", hydra_output)
        _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
    resolved = copy.deepcopy(task_cfg)
    OmegaConf.resolve(resolved)  # hydra: resolvers read the config current now, this job's
    return ret, resolved, Path(config.hydra.runtime.output_dir)
