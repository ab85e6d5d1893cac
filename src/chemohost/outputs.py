"""Result folders that survive faults: one writer for every command that writes a folder or a file.

A result folder ``OUT`` goes through three steps:

1. **Checked before compute** (:func:`open_output` / :class:`OutputFolder`): ``--out`` must not be
   empty, the current folder, or an existing file; its parent must exist or be creatable and be
   writable (tested by creating a probe folder: mode bits do not stop root, read-only mounts do);
   the free space must cover the expected size.  ``OUT`` is created and **locked** (``flock`` on
   ``OUT/.chemohost.lock``): a second run on the same ``OUT`` fails at once, naming the holder's pid.
   Staging folders left by a killed run (``OUT/.staging-<pid>-*``, pid no longer alive) are removed
   and reported.
2. **Staged inside OUT**: files are written to ``OUT/.staging-<pid>-<random>/`` -- the same file
   system as ``OUT`` even when ``OUT`` is a mount point, so every move is a rename.
3. **Published** with a completion marker: the old marker ``OUT/COMPLETE.json`` is removed first,
   files of the previous result that the new one does not replace are removed, the new files are
   renamed into ``OUT``, and the marker is written last (atomically) with the sha256 of every file it
   vouches for.  A reader -- :func:`verify_output`, or ``chemohost trial --posterior`` -- trusts a
   folder only with a marker whose hashes match; a kill at any point leaves either the old complete
   result, or a folder without a marker (incomplete, and said so), never a silent mix.

If the run fails, the staging folder is removed, and ``OUT`` too when this run created it and it
holds nothing else.  Single files (SBML, SVG) are written with :func:`write_file_atomically`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ScenarioError

MARKER = "COMPLETE.json"
LOCK = ".chemohost.lock"
STAGING = ".staging-"
PARTIAL = ".partial"  # checkpoints of a resumable run (see studies.checkpoint)
_HELD: dict[str, "OutputFolder"] = {}  # resolved OUT -> the open folder of this process


def json_safe(x):
    """``x`` with numpy scalars as Python numbers, non-finite floats as None and keys as strings
    (what ``json.dumps`` can write as standard JSON)."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return json_safe(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _err(msg: str) -> ScenarioError:
    err = ScenarioError(msg)  # the message names --out itself
    err.field = "--out"
    return err


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists():
        if q.parent == q:
            break
        q = q.parent
    return q


def check_out_path(out: str | Path, expected_bytes: int = 0, kind: str = "folder") -> Path:
    """Checks of an output path before anything is computed; returns it absolute."""
    if out is None or str(out).strip() == "":
        raise _err("--out is empty; give a folder for the results, e.g. --out out/run1")
    text = str(out)
    if "\x00" in text:
        raise _err("--out contains a NUL character; give a plain path")
    long_part = next((p for p in Path(text).parts if len(os.fsencode(p)) > 255), None)
    if long_part is not None or len(os.fsencode(text)) > 4000:
        raise _err(f"--out {_clip(text)}: a path component is longer than 255 bytes or the path longer than 4000; "
                   "give a shorter path")
    try:
        return _check_out_path(out, expected_bytes, kind)
    except OSError as exc:  # anything the file system refuses that the checks above did not foresee
        raise _err(f"--out {_clip(text)}: {exc.strerror or exc}") from None


def _check_out_path(out, expected_bytes: int, kind: str) -> Path:
    out = Path(out).expanduser()
    absolute = Path(os.path.abspath(out))
    if kind == "folder" and absolute == Path.cwd().resolve():
        raise _err(f"--out {out} is the current folder; give a new folder for the results (e.g. {out}/run1) so they "
                   "are not mixed with other files")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise _err(f"--out {out} exists and is a file, not a folder; choose a folder path")
    if kind == "file" and out.is_dir():
        raise _err(f"--out {out} is a folder; give a file name, e.g. {out}/model.xml")
    base = _nearest_existing(absolute.parent)
    if not base.is_dir():
        raise _err(f"--out {out}: {base} is a file, so no folder can be made below it; choose another path")
    try:  # the only reliable writability test (root ignores mode bits; read-only mounts do not)
        probe = Path(tempfile.mkdtemp(prefix=".chemohost-probe-", dir=base))
        probe.rmdir()
    except OSError as exc:
        raise _err(f"--out {out}: cannot write in {base} ({exc.strerror or exc}); choose a writable location") from None
    if expected_bytes > 0:
        free = shutil.disk_usage(base).free
        if free < 1.2 * expected_bytes:
            raise _err(f"--out {out}: about {expected_bytes / 2 ** 20:,.0f} MiB are needed and only "
                       f"{free / 2 ** 20:,.0f} MiB are free on {base}; free space or choose another location")
    return absolute


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolder:
    """A locked result folder (see the module docstring).  Use :func:`open_output` as a context."""

    def __init__(self, out: str | Path, expected_bytes: int = 0, quiet: bool = False):
        self.path = check_out_path(out, expected_bytes)
        self.created = False
        self.quiet = quiet
        self._fd: int | None = None
        self.notes: list[str] = []

    # -- lock -------------------------------------------------------------------------------------
    def open(self) -> "OutputFolder":
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise _err(f"--out {self.path}: cannot create the folder ({exc.strerror or exc})") from None
            self.created = True
        lock = self.path / LOCK
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._cleanup_created()
            raise _err(f"--out {self.path}: cannot create its lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise _err(f"--out {self.path} is in use by another chemohost run (pid {holder}); wait for it to "
                           "finish or choose another folder") from None
            raise _err(f"--out {self.path}: cannot lock ({exc.strerror or exc})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD[str(self.path)] = self
        self._remove_orphans()
        return self

    def close(self, ok: bool = True) -> None:
        if self._fd is None:
            return
        _HELD.pop(str(self.path), None)
        for p in self.path.glob(f"{STAGING}{os.getpid()}-*"):
            shutil.rmtree(p, ignore_errors=True)
        try:
            (self.path / LOCK).unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if not ok:
            self._cleanup_created()

    def _cleanup_created(self) -> None:
        if self.created and self.path.is_dir():
            left = [p for p in self.path.iterdir() if p.name != LOCK]
            if not left:
                shutil.rmtree(self.path, ignore_errors=True)

    def _remove_orphans(self) -> None:
        for p in self.path.glob(f"{STAGING}*"):
            try:
                pid = int(p.name[len(STAGING):].split("-", 1)[0])
            except ValueError:
                pid = -1
            if pid == os.getpid() or (pid > 0 and _pid_alive(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)
            self._say(f"removed the staging folder {p.name} of an interrupted run (pid {pid})")

    def _say(self, msg: str) -> None:
        self.notes.append(msg)
        if not self.quiet:
            print(f"chemohost: note: {msg}", file=sys.stderr)

    # -- publish ------------------------------------------------------------------------------------
    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=self.path))

    def publish(self, write: Callable[[Path], None], info: dict | None = None) -> dict[str, Path]:
        """``write(staging)``, then move its entries into OUT and write the completion marker last."""
        if self._fd is None:
            raise RuntimeError("publish() needs an open OutputFolder")
        tmp = self.staging()
        try:
            write(tmp)
            entries = sorted(tmp.iterdir())
            hashes = {}
            for e in entries:
                for f in ([e] if e.is_file() else sorted(x for x in e.rglob("*") if x.is_file())):
                    hashes[str(f.relative_to(tmp))] = _sha256(f)
            marker = self.path / MARKER
            previous = read_marker(self.path)
            if previous:
                self._say(f"replacing the previous result in {self.path} (written {previous.get('written_utc', '?')})")
            marker.unlink(missing_ok=True)  # from here until the new marker: visibly incomplete
            new_top = {e.name for e in entries}
            if previous:
                for name in {Path(f).parts[0] for f in previous.get("files", {})} - new_top:
                    target = self.path / name
                    if target.is_dir():
                        shutil.rmtree(target, ignore_errors=True)
                    elif target.exists():
                        target.unlink()
            written = {}
            for e in entries:
                target = self.path / e.name
                if target.is_dir() and not target.is_symlink():
                    trash = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-old-", dir=self.path))
                    os.replace(target, trash / e.name)
                os.replace(e, target)
                written[e.name] = target
            doc = {"complete": True, "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "pid": os.getpid(), "files": hashes, **(info or {})}
            tmp_marker = tmp / MARKER
            tmp_marker.write_text(json.dumps(json_safe(doc), indent=2, default=str))
            os.replace(tmp_marker, marker)
            return written
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            for p in self.path.glob(f"{STAGING}{os.getpid()}-old-*"):
                shutil.rmtree(p, ignore_errors=True)

    def __enter__(self) -> "OutputFolder":
        return self.open()

    def __exit__(self, et, ev, tb) -> bool:
        self.close(ok=et is None)
        return False


def open_output(out: str | Path, expected_bytes: int = 0, quiet: bool = False) -> OutputFolder:
    """``with open_output(args.out) as folder: ... folder.publish(write)`` (checks, lock, cleanup)."""
    return OutputFolder(out, expected_bytes, quiet)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_marker(out: str | Path) -> dict | None:
    p = Path(out) / MARKER
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def verify_output(out: str | Path, need: tuple[str, ...] = ()) -> dict:
    """The completion marker of a result folder, after checking every file it lists against its
    sha256; a missing marker (an interrupted run, or a folder not written by chemohost), a changed
    or missing file, or a missing ``need`` file is a ScenarioError."""
    out = Path(out)
    doc = read_marker(out)
    if doc is None or not doc.get("complete"):
        raise ScenarioError(f"{out} has no completion marker ({MARKER}): the run that wrote it was interrupted or it "
                            "was not written by chemohost; run it again")
    for rel, digest in (doc.get("files") or {}).items():
        f = out / rel
        if not f.is_file():
            raise ScenarioError(f"{out}: {rel} is listed in {MARKER} but missing: the folder was changed after it was "
                                "written; run it again")
        if _sha256(f) != digest:
            raise ScenarioError(f"{out}: {rel} differs from the file the run wrote (sha256 mismatch); run it again")
    missing = [n for n in need if n not in (doc.get("files") or {})]
    if missing:
        raise ScenarioError(f"{out} does not hold {', '.join(missing)}; give the folder of the right command")
    return doc


def write_atomically(out: str | Path, write: Callable[[Path], None], info: dict | None = None) -> dict[str, Path]:
    """``write(tmp_dir)``, published into ``out`` with its completion marker (see the module docstring).

    Inside an ``open_output(out)`` context of this process the open folder is used; otherwise the
    folder is checked, locked, published and released here."""
    key = str(Path(os.path.abspath(Path(out).expanduser()))) if str(out).strip() else ""
    held = _HELD.get(key)
    if held is not None:
        return held.publish(write, info)
    with open_output(out, quiet=True) as folder:
        return folder.publish(write, info)


def write_file_atomically(path: str | Path, text: str) -> Path:
    """Write one text file: checked path, a temporary file beside it, then a rename."""
    path = check_out_path(path, kind="file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".chemohost.tmp-", dir=path.parent)
    except OSError as exc:
        raise _err(f"--out {_clip(path)}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _err(f"--out {_clip(path)}: cannot write ({exc.strerror or exc})") from None
    return path


def _clip(p, n: int = 120) -> str:
    s = str(p)
    return s if len(s) <= n else s[:60] + f"...<{len(s):,} characters>"
