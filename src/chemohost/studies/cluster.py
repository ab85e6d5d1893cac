"""Chunks of a batch study, run in this process or as tasks on a Dask cluster (``dask.distributed``).

A trial (paired or posterior-predictive) is a list of independent *chunk tasks*: one arm, a block of
virtual patients (their parameter rows, ids, scan days and OS streams, all drawn in the main process).
:func:`run_chunk` is the one place a task becomes endpoint rows, wherever it runs, so a cluster run
gives the same rows as an in-process run for the same seed.

* :class:`InProcess` runs the tasks one after the other here (the default).
* :class:`DaskExecutor` submits them to a ``dask.distributed`` client: ``--workers N`` starts a
  ``LocalCluster`` of N worker processes on this machine, ``--scheduler ADDRESS`` joins a running cluster
  (dask-jobqueue on SLURM/PBS, a Kubernetes Dask cluster, ``dask scheduler`` + ``dask worker``).  Workers
  rebuild the trial from its validated specification (shipped with each task, so a worker needs no
  access to the trial file) and load the compiled model from the cache once per process (a cache
  directory every worker sees, ``CHEMOHOST_CACHE_DIR``, or each worker compiles once).  A worker that
  dies mid-task is replaced and its tasks are rescheduled by Dask; results arrive keyed by task, and the
  main process writes each finished chunk to the checkpoint, so ``--resume`` works across cluster runs.

One task runs per worker process at a time (start workers with ``--nthreads 1``); the engine's threads
work inside the task (``CHEMOHOST_WORKER_THREADS``, default: the machine's cores / workers for a
LocalCluster, 1 otherwise).
"""

from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ChemohostError, ScenarioError


@dataclass
class ChunkTask:
    key: str  # checkpoint key (unique within the run)
    arm: int  # index into trial.arms
    P: np.ndarray  # (n, p) parameter rows
    ids: np.ndarray  # (n,) patient ids (per-patient random streams)
    scan_days: np.ndarray  # (n, k)
    e_os: np.ndarray  # (n,)
    keep: int = 0  # leading rows whose time courses come back


def run_chunk(trial, st, task: ChunkTask, names: list[str], twins: dict):
    """``(endpoint rows, arrays)`` of one chunk: arrays hold ``k_re`` (patients re-simulated after
    progression) and ``kept_<output>`` time courses of the first ``task.keep`` rows."""
    from .trial_runner import simulate_arm_chunk, simulate_twin_guided_chunk
    from .trial_spec import OUTPUTS

    arm = list(trial.arms)[task.arm]
    regs = trial.arms[arm]
    if arm in trial.twin_guided:
        from .twin_guided import base_twin

        if arm not in twins:
            twins[arm] = base_twin(trial, arm, trial.twin_guided[arm])
        res, ep, k_re = simulate_twin_guided_chunk(st, twins[arm], task.P, names, regs, task.ids, task.scan_days,
                                                   task.e_os, trial.twin_guided[arm])
    else:
        res, ep, k_re = simulate_arm_chunk(st, task.P, regs, task.ids, task.scan_days, task.e_os)
    arrays = {"k_re": np.array([k_re])}
    if task.keep:
        arrays.update({f"kept_{o}": res.output(o)[:task.keep] for o in OUTPUTS})
    return ep, arrays


class InProcess:
    """Run the tasks here, in order."""

    name = "in-process"

    def run(self, trial, st, names, tasks):
        twins: dict = {}
        for t in tasks:
            yield t, run_chunk(trial, st, t, names, twins)

    def map(self, fn, items):
        """``(key, fn(*args))`` for each ``(key, args)`` of ``items``, in order."""
        for key, args in items:
            yield key, fn(*args)

    def map_trial(self, trial, st, fn, items):
        """``(key, fn(trial, st, *args))`` for each ``(key, args)`` of ``items``, in order."""
        for key, args in items:
            yield key, fn(trial, st, *args)


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of at most ``size`` of ``n`` patients (a study's tasks)."""
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def arm_chunk(trial, st, regs, P, ids, scan_days, e_os):
    """``(SimulationResult, endpoint rows)`` of regimens ``regs`` (any, not only a trial arm) on a block of the
    trial's virtual patients: an optimisation candidate's chunk, wherever it runs."""
    from .trial_runner import simulate_arm_chunk

    res, ep, _ = simulate_arm_chunk(st, P, regs, ids, scan_days, e_os)
    return res, ep


def simulate_remote(model_name: str, closed_form: bool, P, regs, times, outputs, opts):
    """One engine call wherever it runs (a study's chunk): the registered model by name, compiled or
    loaded from the cache (compile_model keeps each compiled declaration per process and looks the model up
    by its declaration, ~1 ms, so a model registered again under the same name is not served stale);
    returns the SimulationResult."""
    from ..engine.codegen import compile_model
    from ..engine.simulate import simulate
    from ..model.registry import get_model

    cm = compile_model(get_model(model_name), closed_form)
    if _in_worker():
        opts = replace(opts, threads=max(1, int(os.environ.get("CHEMOHOST_WORKER_THREADS", "1"))))
    return simulate(cm, P, regs, times, outputs, options=opts)


def _in_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


# -- Dask ------------------------------------------------------------------------------------------------
_WORKER_STATE: dict = {}  # per worker process: (trial sha, seed) -> (trial, setup, twins)


def _remote_chunk(ref: tuple, seed: int, names: list[str], task: ChunkTask):
    """A chunk task on a Dask worker: rebuild (once per process) the trial and its compiled model."""
    trial, st, twins = _worker_trial(ref, seed)
    return run_chunk(trial, st, task, names, twins)


def _remote_with_trial(ref: tuple, seed: int, fn, args: tuple):
    """``fn(trial, setup, *args)`` on a Dask worker, the trial rebuilt (once per process) from its spec."""
    trial, st, _ = _worker_trial(ref, seed)
    return fn(trial, st, *args)


def _worker_trial(ref: tuple, seed: int):
    """This worker process's ``(trial, setup, twins)`` for a shipped trial spec and seed (one trial at a time)."""
    from distributed import get_worker

    from .trial_runner import setup_trial
    from .trial_spec import Trial

    w = get_worker()
    if w.state.nthreads > 1:
        raise ChemohostError(f"Dask worker {w.address} runs {w.state.nthreads} tasks at once; chemohost needs one "
                             f"task per worker process (start workers with --nthreads 1; the engine's threads "
                             f"work inside each task, CHEMOHOST_WORKER_THREADS)")
    data, source, sha, spec_hash = ref
    k = (spec_hash, seed)
    if k not in _WORKER_STATE:
        for old in [x for x in _WORKER_STATE if x and x[0] != "model"]:
            del _WORKER_STATE[old]  # one trial at a time per worker process
        trial = Trial.from_dict(data, source, sha)
        st = setup_trial(trial, seed)
        threads = int(os.environ.get("CHEMOHOST_WORKER_THREADS", "1"))
        st = replace(st, opts=replace(st.opts, threads=max(1, threads)))
        _WORKER_STATE[k] = (trial, st, {})
    return _WORKER_STATE[k]


class DaskExecutor:
    """Submit the tasks to a ``dask.distributed`` client; results come back as tasks finish."""

    def __init__(self, client, description: str):
        self.client = client
        self.name = description
        self._refs: dict = {}
        self._n = itertools.count()

    def _trial_ref(self, trial):
        """The trial's validated spec, scattered to every worker once per executor."""
        import hashlib
        import json

        data = trial.spec.model_dump(mode="json")
        spec_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        if spec_hash not in self._refs or self._refs[spec_hash].status != "finished":  # (lost with its workers)
            ref = (data, trial.source, trial.sha256, spec_hash)
            [self._refs[spec_hash]] = self.client.scatter([ref], broadcast=True)
        return self._refs[spec_hash]

    def run(self, trial, st, names, tasks):
        ref_f = self._trial_ref(trial)
        yield from self.map(_remote_chunk, [(t, (ref_f, st.seed, names, t)) for t in tasks])

    def map_trial(self, trial, st, fn, items):
        """``(key, fn(trial, st, *args))`` for each ``(key, args)`` of ``items``, as they finish on the cluster (the
        workers rebuild ``trial`` and its setup for ``st.seed`` from the shipped spec)."""
        ref_f = self._trial_ref(trial)
        yield from self.map(_remote_with_trial, [(key, (ref_f, st.seed, fn, args)) for key, args in items])

    def map(self, fn, items):
        """``(key, fn(*args))`` for each ``(key, args)`` of ``items``, as the tasks finish on the cluster (a lost
        worker's tasks are rescheduled by Dask; up to 2 retries of a task that raised)."""
        from distributed import as_completed

        # task keys unique over every map call of this executor: a key reused by a later call could be cancelled
        # along with the earlier call's finished future
        futs = {self.client.submit(fn, *args, key=f"chemohost-{fn.__name__}-{os.getpid()}-{id(self)}-{next(self._n)}",
                                   pure=False, retries=2): key for key, args in items}
        try:
            for f in as_completed(futs):
                yield futs[f], f.result()
        finally:
            for f in futs:
                f.cancel()


@contextmanager
def executor(workers: int | None = None, scheduler: str | None = None):
    """The executor for ``--workers N`` / ``--scheduler ADDRESS`` (neither: in-process)."""
    if workers is None and scheduler is None:
        yield InProcess()
        return
    if workers is not None and scheduler is not None:
        raise ScenarioError("give --workers N (a cluster on this machine) or --scheduler ADDRESS (join one), not both")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ScenarioError("cluster execution needs Dask: pip install 'chemohost[cluster]' "
                            "(dask[distributed])") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ScenarioError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({exc})") from None
        try:
            yield DaskExecutor(client, f"Dask cluster at {scheduler}")
        finally:
            client.close()
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise ScenarioError(f"--workers must be a whole number from 1 to 1024, got {workers!r}")
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {"CHEMOHOST_WORKER_THREADS": str(threads)}
    if os.environ.get("CHEMOHOST_CACHE_DIR"):
        env["CHEMOHOST_CACHE_DIR"] = os.environ["CHEMOHOST_CACHE_DIR"]
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           env=env, silence_logs=40)
    client = Client(cluster)
    try:
        yield DaskExecutor(client, f"Dask LocalCluster, {workers} worker process(es) x {threads} engine thread(s)")
    finally:
        client.close()
        cluster.close()
