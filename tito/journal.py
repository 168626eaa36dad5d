"""Crash safety for the commands that change ``tinytorch/``: one lock and an on-disk journal.

``tito module complete``, ``tito module reset``, ``tito module start`` and
``tito export`` run inside :func:`transaction`:

1. **Lock.** ``.tito/lock`` is locked with ``flock`` (``msvcrt.locking`` on
   Windows). The operating system drops the lock when the process dies, even
   with ``kill -9``, so a crash never leaves a stale lock. A second command
   waits for the first (``TITO_LOCK_WAIT`` seconds, default 60) and then
   refuses with a message naming the command that holds the lock.
2. **Journal.** Before anything is changed, every file of the package and
   ``.tito/progress.json`` are copied to ``.tito/journal/`` and fsynced; then
   ``.tito/journal/manifest.json`` is written atomically. From that moment an
   interruption of any kind (``kill -9``, SIGTERM, a closed terminal, power
   loss) is undone by the next ``tito`` command, which puts the package and the
   progress file back byte for byte from the journal and says so.
3. **Commit.** When the command succeeds, removing the manifest is the commit
   point: before it, recovery restores the old state; after it, the new state
   stands. Never anything in between.

SIGTERM and SIGHUP raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the
command, so the ordinary failure path restores the package at once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from .project import Project

__all__ = ["LockBusy", "Interrupted", "Journal", "exclusive", "transaction", "recover", "lock_holder",
           "DEFAULT_LOCK_WAIT"]

DEFAULT_LOCK_WAIT = 60.0
TMP_MARK = ".tito-tmp"


class LockBusy(Exception):
    """Another tito command holds the lock; the message names it."""


class Interrupted(KeyboardInterrupt):
    """The command received SIGTERM or SIGHUP."""


# ------------------------------------------------------------------ files ----
def _fsync_dir(d: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_files(lib: Path) -> dict[str, Path]:
    out = {}
    if lib.is_dir():
        for dirpath, dirnames, filenames in os.walk(lib):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                if fn.endswith((".pyc", ".pyo")) or TMP_MARK in fn:
                    continue
                p = Path(dirpath) / fn
                out[p.relative_to(lib).as_posix()] = p
    return out


def _remove_strays(top: Path) -> None:
    """Temporary files a killed writer left behind (``.name.tito-tmp-PID``)."""
    if not top.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            if TMP_MARK in fn:
                with contextlib.suppress(OSError):
                    (Path(dirpath) / fn).unlink()


def _prune_dirs(lib: Path) -> None:
    for dirpath, dirnames, filenames in sorted(os.walk(lib, topdown=False), key=lambda t: -len(t[0])):
        d = Path(dirpath)
        if d != lib and not [e for e in d.iterdir() if e.name != "__pycache__"]:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------- lock ----
def _lock_fd(fd: int, blocking: bool) -> bool:
    if os.name == "nt":                                                  # pragma: no cover
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except (BlockingIOError, PermissionError):
        return False


def _unlock_fd(fd: int) -> None:
    if os.name == "nt":                                                  # pragma: no cover
        import msvcrt
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, 0)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl
    fcntl.flock(fd, fcntl.LOCK_UN)


def lock_holder(project: Project) -> str:
    """Who holds (or last held) the lock, in words."""
    try:
        info = json.loads((project.state_dir / "lock").read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another tito command"
    return f"'{info.get('command', 'tito')}' (pid {info.get('pid', '?')}, since {info.get('since', '?')})"


@contextlib.contextmanager
def exclusive(project: Project, command: str, wait: float | None = None,
              on_wait: Callable[[str], None] | None = None):
    """Hold ``.tito/lock`` for the duration; wait up to ``wait`` seconds for another holder."""
    if wait is None:
        try:
            wait = float(os.environ.get("TITO_LOCK_WAIT", DEFAULT_LOCK_WAIT))
        except ValueError:
            wait = DEFAULT_LOCK_WAIT
    project.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(project.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock_fd(fd, blocking=False):
            holder = lock_holder(project)
            if on_wait is not None and wait > 0:
                on_wait(f"Waiting for {holder} to finish (up to {wait:g} s) ...")
            deadline = time.monotonic() + wait
            while True:
                if _lock_fd(fd, blocking=False):
                    break
                if time.monotonic() >= deadline:
                    raise LockBusy(f"Another tito command is changing tinytorch/: {holder}. Wait for it to finish "
                                   "(or stop it), then run this command again.")
                time.sleep(0.1)
        info = json.dumps({"command": command, "pid": os.getpid(), "since": time.strftime("%H:%M:%S")})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, info.encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            _unlock_fd(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- journal ----
class Journal:
    """``.tito/journal/``: a copy of the package and the progress file, and a manifest."""

    def __init__(self, project: Project):
        self.project = project
        self.dir = project.state_dir / "journal"
        self.manifest = self.dir / "manifest.json"

    def active(self) -> bool:
        return self.manifest.is_file()

    def info(self) -> dict:
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def begin(self, command: str) -> None:
        """Copy what the command may change, then write the manifest (the journal is live from here)."""
        if self.dir.exists():
            shutil.rmtree(self.dir)                 # a journal without manifest never went live
        files = {}
        for rel, p in _package_files(self.project.lib_path).items():
            data = p.read_bytes()
            dest = self.dir / "lib" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            files[rel] = _sha(data)
        prog = self.project.progress_file
        progress_sha = None
        if prog.is_file():
            data = prog.read_bytes()
            with open(self.dir / "progress.json", "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            progress_sha = _sha(data)
        for d in {p.parent for p in self.dir.rglob("*")} | {self.dir}:
            _fsync_dir(d)
        write_atomic(self.manifest, json.dumps({
            "command": command, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "lib": files, "progress": progress_sha}, indent=1).encode())

    def rollback(self) -> None:
        """Put the package and the progress file back exactly as they were; then close the journal."""
        info = self.info()
        lib = self.project.lib_path
        files = info.get("lib", {})
        _remove_strays(lib)
        for rel, p in _package_files(lib).items():
            if rel not in files:
                p.unlink()
        for rel, sha in files.items():
            saved = (self.dir / "lib" / rel).read_bytes()
            if _sha(saved) != sha:
                raise OSError(f"the journal copy of {rel} is damaged; run 'tito export' to rebuild tinytorch/")
            p = lib / rel
            if not p.is_file() or p.read_bytes() != saved:
                write_atomic(p, saved)
        _prune_dirs(lib)
        for cache in lib.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)   # a .pyc written from the interrupted state is stale
        prog = self.project.progress_file
        if info.get("progress"):
            saved = (self.dir / "progress.json").read_bytes()
            if prog.is_file() and prog.read_bytes() == saved:
                pass
            else:
                write_atomic(prog, saved)
        elif prog.is_file():
            prog.unlink()
        self.finish()

    def finish(self) -> None:
        """Close the journal: the state on disk now stands (the commit point)."""
        with contextlib.suppress(FileNotFoundError):
            self.manifest.unlink()
        _fsync_dir(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        _remove_strays(self.project.lib_path)


def _recover_locked(project: Project) -> str | None:
    j = Journal(project)
    if not j.active():
        if j.dir.exists():
            shutil.rmtree(j.dir, ignore_errors=True)
        _remove_strays(project.lib_path)
        return None
    info = j.info()
    j.rollback()
    return (f"The last '{info.get('command', 'tito')}' (pid {info.get('pid', '?')}, started "
            f"{info.get('started', '?')}) was interrupted before it finished; tinytorch/ and your progress "
            "were restored to what they were before it.")


def recover(project: Project) -> str | None:
    """Undo an interrupted command, if there is one and no tito command is running now.

    Returns a message for the user (``None`` if there was nothing to do)."""
    if not (project.state_dir / "journal").exists():
        return None
    try:
        with exclusive(project, "recovery", wait=0):
            return _recover_locked(project)
    except LockBusy:
        return None        # the command holding the lock is alive and owns the journal


# ------------------------------------------------------------ transaction ----
class Transaction:
    def __init__(self, journal: Journal, recovered: str | None):
        self.journal = journal
        self.recovered = recovered
        self.committed = False

    def commit(self) -> None:
        self.journal.finish()
        self.committed = True


class _Deferred:
    "While `active`, the handler of `_signals_raise` only notes its signal in `pending`."
    active = False
    pending: int | None = None


@contextlib.contextmanager
def signals_deferred():
    """A block in which SIGTERM and SIGHUP do not raise; one that came raises Interrupted when it ends.

    For forking: Python runs hooks around a fork (logging has some), and an exception raised
    inside them is printed and ignored, so the command would go on as if no signal had come."""
    _Deferred.active, _Deferred.pending = True, None
    try:
        yield
    finally:
        _Deferred.active = False
    if _Deferred.pending is not None:
        raise Interrupted(f"received signal {_Deferred.pending}")


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM and SIGHUP raise Interrupted in the main thread (so ``finally`` blocks restore)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _Deferred.active:
            _Deferred.pending = signum
            return
        raise Interrupted(f"received signal {signum}")

    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def transaction(project: Project, command: str, wait: float | None = None,
                on_wait: Callable[[str], None] | None = None):
    """Lock, recover an earlier interruption, journal; roll back unless ``commit()`` was called."""
    with _signals_raise(), exclusive(project, command, wait, on_wait):
        recovered = _recover_locked(project)
        j = Journal(project)
        j.begin(command)
        txn = Transaction(j, recovered)
        try:
            yield txn
        finally:
            if not txn.committed:
                j.rollback()
