"""One GPU per job when a sweep runs on every GPU of one host (`hydra/launcher=gpus`).

The launcher is Hydra's joblib launcher (conf/hydra/launcher/gpus.yaml): `n_jobs` worker processes,
by default one per visible GPU. There is no scheduler here; a worker only needs to know which GPU is
its own. The first time a worker runs a job it leases a *slot*: an exclusive `flock` on
`<lock dir>/slot<i>.lock`, held until the process exits, and pins itself to GPU `ids[slot % len(ids)]`
by setting CUDA_VISIBLE_DEVICES before CUDA starts. Two live workers never hold the same slot, so with
`n_jobs` = number of GPUs each GPU runs one job at a time (`n_jobs` = 2 x GPUs puts two on each). The
operating system drops the lock of a worker that dies, so a crashed or recycled worker frees its GPU.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from mftrnn.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCHER = "gpus"  # the option's name in the hydra/launcher config group
PLACEMENT_NAME = "placement.json"


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's entries when it is set (indices or UUIDs;
    like CUDA, the list ends at the first negative entry), else 0 .. torch.cuda.device_count() - 1."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for token in (t.strip() for t in env.split(",")):
            if not token or token.startswith("-"):
                break
            ids.append(token)
        return ids
    import torch  # deferred; device_count asks NVML first, so it starts no CUDA context here

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_count() -> int:
    """The `mftrnn_gpus` resolver: how many workers `hydra/launcher=gpus` starts (one per GPU)."""
    n = len(visible_gpus())
    if n == 0:
        raise ConfigError("hydra/launcher=gpus runs one job per GPU, but this machine shows none "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); drop "
                          "hydra/launcher=gpus to run the sweep with the default launcher")
    return n


@dataclass
class Lease:
    """This worker's slot and the GPU it is pinned to, for the life of the process."""

    slot: int
    slots: int
    gpu: str
    pid: int
    host: str
    lock_dir: str
    cpu_threads: int


_LEASE: Optional[Lease] = None
_LOCK_FD: Optional[int] = None  # kept open: closing it (or exiting) releases the slot


def lease_slot(slots: int, lock_dir: Path, poll_s: float = 0.1) -> tuple[int, int]:
    """(slot, fd): the lowest free slot in [0, slots), locked with flock on an open fd.

    Waits while every slot is held, which happens only when more workers than slots are alive for a
    moment (a worker being replaced)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(slots):
            fd = os.open(lock_dir / f"slot{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        time.sleep(poll_s)


def pin(slots: int, lock_dir: Path, ids: list[str]) -> Lease:
    """Lease a slot for this process (once; later calls return the same lease) and make
    GPU ids[slot % len(ids)] the only one CUDA will see. Must run before CUDA starts in this process."""
    global _LEASE, _LOCK_FD
    if _LEASE is not None:
        if _LEASE.lock_dir != str(lock_dir):
            raise RuntimeError(f"this worker is pinned by another sweep's lock dir {_LEASE.lock_dir}")
        return _LEASE
    if not ids:
        raise ConfigError("hydra/launcher=gpus: no GPU is visible to the worker")
    import torch

    if torch.cuda.is_initialized():  # CUDA_VISIBLE_DEVICES would be ignored from here on
        raise RuntimeError("CUDA started before the worker was pinned to its GPU")
    slot, _LOCK_FD = lease_slot(slots, lock_dir)
    gpu = ids[slot % len(ids)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    threads = _share_cpus(slots)
    _LEASE = Lease(slot=slot, slots=slots, gpu=gpu, pid=os.getpid(), host=socket.gethostname(), lock_dir=str(lock_dir),
                   cpu_threads=threads)
    log.info("worker %d: slot %d of %d -> GPU %s, %d CPU threads", _LEASE.pid, slot, slots, gpu, threads)
    return _LEASE


def _share_cpus(slots: int) -> int:
    """Each worker's torch gets its share of the CPUs (unless OMP_NUM_THREADS says otherwise): by
    default every process would start one thread per core, and `slots` of them oversubscribe the CPU."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // slots))
    return torch.get_num_threads()


def lock_dir_for(sweep_dir: str) -> Path:
    """Slots are per sweep: a lock dir in the local temp dir (flock is reliable there, unlike on
    network file systems), named after the user and the sweep's absolute dir."""
    key = hashlib.sha1(os.path.abspath(sweep_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mftrnn-gpus-{os.getuid()}-{key}"


def pin_for_hydra_job(run_dir: Optional[Path] = None) -> Optional[Lease]:
    """In a job launched by `hydra/launcher=gpus`: pin this worker to its GPU and, given `run_dir`,
    record where the job ran in run_dir/placement.json. Anywhere else: nothing, None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.runtime.choices.get("hydra/launcher") != LAUNCHER:
        return None
    lock_dir = lock_dir_for(hc.sweep.dir)
    if _LEASE is None:  # this worker's first job: read the GPUs before pinning changes CUDA_VISIBLE_DEVICES
        ids = visible_gpus()
        slots = int(hc.launcher.n_jobs)
        # joblib's -1 means one worker per CPU; one per GPU is what this launcher is for
        lease = pin(slots if slots >= 1 else len(ids), lock_dir, ids)
    else:  # later jobs keep the lease (pin checks that it is this sweep's)
        lease = pin(_LEASE.slots, lock_dir, [])
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PLACEMENT_NAME).write_text(json.dumps({**asdict(lease), "job": int(hc.job.num), "started": time.time()}) + "\n")
    return lease
