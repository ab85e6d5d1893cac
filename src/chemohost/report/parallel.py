"""A report's figures drawn side by side in forked worker processes.

matplotlib draws on one core (its Agg renderer and text layout hold the GIL), and a trial report's five figures
take ~2 s of a 300-patient run: forked workers draw them at once on the machine's cores.  A fork inherits the
imported matplotlib, fonts and data, so a worker starts in milliseconds (a spawned one would import matplotlib
again, ~0.5 s).  Each figure is a pure function of its arguments returning picklable values (the embedded PNG and
its alt text), so the figures are the same bytes as when drawn in this process (tested).

Where fork is not the platform's way (not Linux), with one core, one figure, or ``CHEMOHOST_REPORT_WORKERS=1``,
figures are drawn here, one after the other.  A figure whose worker fails or dies is drawn again here, so an error
is raised from this process as it would be without workers.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from ..errors import ChemohostError

#: most worker processes for a report's figures (and the environment variable that sets it)
MAX_WORKERS = 4
ENV = "CHEMOHOST_REPORT_WORKERS"
#: seconds a worker may take for one figure before the rest are drawn in this process (a figure takes < 1 s)
TIMEOUT_S = 300.0


def requested_workers() -> int | None:
    """``CHEMOHOST_REPORT_WORKERS`` as a number (None: not set); a value that is not a whole number >= 1 is a
    :class:`ChemohostError` (the CLI checks it before any work)."""
    text = os.environ.get(ENV)
    if text is None:
        return None
    try:
        want = int(text)
    except ValueError:
        want = 0
    if want < 1:
        raise ChemohostError(f"environment variable {ENV}: must be a whole number >= 1 (1: figures drawn in this "
                             f"process), got {text!r}")
    return want


def figure_workers(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` figures: ``CHEMOHOST_REPORT_WORKERS`` if set (1: none), else up to
    :data:`MAX_WORKERS` and the cores this process may use; 1 where fork is not available or not Linux's."""
    want = requested_workers()
    if want is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        want = min(MAX_WORKERS, cores)
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(want, n_jobs))


def render_figures(jobs: dict[str, tuple[Callable[..., Any], tuple]], workers: int | None = None) -> dict[str, Any]:
    """``{name: fn(*args)}`` for ``jobs = {name: (fn, args)}`` (module-level functions, picklable results), drawn
    in up to ``workers`` forked processes (default :func:`figure_workers`); in ``jobs``' order."""
    n = figure_workers(len(jobs)) if workers is None else max(1, min(workers, len(jobs)))
    out: dict[str, Any] = {}
    if n > 1:
        _warm_up()
        sys.stdout.flush()
        sys.stderr.flush()
        pool = None
        try:
            pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
            futures = {name: pool.submit(fn, *args) for name, (fn, args) in jobs.items()}
            for name, fut in futures.items():
                try:
                    out[name] = fut.result(timeout=TIMEOUT_S)
                except TimeoutError:  # a stuck worker: the pool is abandoned, the rest drawn here
                    break
                except Exception:  # (drawn again below, in this process, where its error is raised)
                    pass
        except Exception:  # the pool itself failed (fork refused, a worker killed): the rest drawn here
            pass
        finally:
            if pool is not None:
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    if len(out) < len(jobs) and proc.is_alive():
                        proc.terminate()
                pool.shutdown(wait=True, cancel_futures=True)
    return {name: out[name] if name in out else fn(*args) for name, (fn, args) in jobs.items()}


@functools.cache
def _warm_up() -> None:
    """What the first figure of a process pays once (~0.2-0.4 s: the Agg backend's import, the font, the text
    layout), paid here before the workers fork so that each does not pay it again; once per process."""
    import io

    import matplotlib.pyplot as plt  # (the reports select the Agg backend when imported)

    fig, ax = plt.subplots(figsize=(1.5, 1.2))
    ax.plot([0, 1], [0, 1], label="a")
    ax.fill_between([0, 1], [0, 0], [1, 1], alpha=0.2)
    ax.set_title("t")
    ax.set_xlabel("x")
    ax.legend()
    fig.tight_layout()
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    plt.close(fig)
