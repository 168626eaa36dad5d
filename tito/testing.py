"""Running pytest for the project (``tito test``, ``tito module complete``).

Test convention: a module's tests are the ``test_*`` functions in its notebook
``modules/NN_name/name.py`` plus the files ``tests/test_NN_*.py``. Everything
else under ``tests/`` (CLI, export, integration tests) runs with ``tito test``.
pytest's exit code 5 ("no tests collected") counts as a failure.

Tests marked ``@pytest.mark.slow`` (registered in pyproject.toml) are the slow
integration tests: ``tito test`` runs them, ``tito module complete`` leaves them
out (``FAST``) so that completing a module stays quick; ``tito module complete
N --all-tests`` includes them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .journal import signals_deferred
from .project import Module, Project

__all__ = ["PytestRun", "project_env", "run_pytest", "run_command", "module_test_paths", "NO_TESTS", "TimedOut",
           "FAST", "SLOW_MARKER"]

NO_TESTS = 5  # pytest: no tests were collected
#: tests marked ``@pytest.mark.slow`` (integration tests) run with ``tito test``, not ``tito module complete``
SLOW_MARKER = "slow"
FAST = ["-m", f"not {SLOW_MARKER}"]


@dataclass
class PytestRun:
    returncode: int
    output: str = ""      # captured output (empty when streamed to the terminal)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def project_env(project: Project) -> dict[str, str]:
    """Environment for subprocesses: the project's own ``tinytorch`` and ``tito`` come first."""
    env = dict(os.environ)
    parts = [str(project.root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent.parent          # where this tito lives (its pytest plugin)
    if not (project.root / "tito").is_dir() and (here / "tito").is_dir():
        parts.append(str(here))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def module_test_paths(project: Project, mod: Module, notebook: Path | None = None) -> list[Path]:
    """The notebook (or ``notebook`` instead) and ``tests/test_NN_*.py`` of ``mod``."""
    return [notebook or mod.notebook, *project.package_tests(mod)]


def xdist_available() -> bool:
    return importlib.util.find_spec("xdist") is not None


WATCH_SNIPPET = ("import faulthandler as _f, os as _o, signal as _s\n"
                 "if hasattr(_s, 'SIGUSR1'): _f.register(_s.SIGUSR1, file=open(_o.environ['TITO_WATCH'] + '.' "
                 "+ str(_o.getpid()) + '.stack', 'w'), all_threads=False)")


class TimedOut(Exception):
    """A test run went over its time limit; the message says which test (and line) hung."""


def _child_setup():  # pragma: no cover - runs in the child
    """Die with tito: on Linux the child gets SIGKILL when its parent dies (even by kill -9).
    Ctrl-C works in the tests even when tito runs as a background job (which ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except Exception:
            pass


def _hung_where(watch: str, project: Project) -> str:
    """'while running X (at file line N, in f)' from the watch plugin's notes and stack dumps."""
    d, prefix = os.path.split(watch)
    doing, where = "", ""
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return ""
    for fn in names:
        if not fn.startswith(prefix + "."):
            continue
        p = os.path.join(d, fn)
        try:
            text = open(p, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        if fn.endswith(".stack"):
            frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', text)
            mine = [f for f in frames if "site-packages" not in f[0] and "/_pytest/" not in f[0]
                    and "/pluggy/" not in f[0] and not f[0].startswith("<")]
            if mine:
                f = mine[0]          # faulthandler prints the innermost frame first
                where = f"{project.rel(f[0])} line {f[1]}, in {f[2]}"
                from .export import notebook_location
                loc = notebook_location(Path(f[0]), int(f[1]), project)
                if loc and loc[0] != project.rel(f[0]):
                    where = f"{loc[0]} line {loc[1]}, exported to {project.rel(f[0])} line {f[1]}"
        elif text and not text.startswith("finished"):
            doing = text
    parts = ([f"while {doing}"] if doing else []) + ([f"(stuck at {where})"] if where else [])
    return " ".join(parts)


def run_command(project: Project, cmd: Sequence[str], *, capture: bool = True,
                timeout: float | None = None, watch: bool = False) -> PytestRun:
    """Run ``cmd`` in the project root in its own process group, with a time limit.

    On timeout the whole group is stopped (after a stack dump, when ``watch``) and
    TimedOut is raised naming what was running. The child dies with tito."""
    env = project_env(project)
    tmpdir = None
    if watch:
        tmpdir = tempfile.mkdtemp(prefix="tito-watch-")
        env["TITO_WATCH"] = os.path.join(tmpdir, "w")
        if list(cmd[1:2]) == ["-c"]:     # a python -c snippet: dump its stack on SIGUSR1 too
            cmd = [cmd[0], "-c", WATCH_SNIPPET + "\n" + cmd[2], *cmd[3:]]
    kw = dict(cwd=project.root, env=env)
    if os.name == "posix":
        kw.update(start_new_session=True, preexec_fn=_child_setup)
    if capture:
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace")
    try:
        with _start(list(cmd), kw) as p:
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                if os.name == "posix" and watch:
                    with contextlib.suppress(OSError):
                        os.killpg(p.pid, signal.SIGUSR1)
                    time.sleep(0.5)
                _kill(p)
                where = _hung_where(env["TITO_WATCH"], project) if watch else ""
                raise TimedOut(f"stopped after {timeout:g} s{' ' + where if where else ''}") from None
            except BaseException:
                _kill(p)
                raise
        return PytestRun(p.returncode, out or "")
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _start(cmd: list[str], kw: dict) -> subprocess.Popen:
    """Popen, with SIGTERM and SIGHUP deferred while it forks (see journal.signals_deferred); if one
    came, the child is stopped before Interrupted goes on."""
    p = None
    try:
        with signals_deferred():
            p = subprocess.Popen(cmd, **kw)
    except BaseException:
        if p is not None: _kill(p)
        raise
    return p


def _kill(p: subprocess.Popen) -> None:
    if os.name == "posix":
        with contextlib.suppress(OSError):
            os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        p.kill()
    with contextlib.suppress(Exception):
        p.communicate(timeout=5)


def run_pytest(project: Project, args: Sequence[str] = (), *, capture: bool = False,
               workers: int | None = None, timeout: float | None = None) -> PytestRun:
    """Run ``python -m pytest`` in the project root with ``args``.

    ``workers`` > 1 runs tests in parallel with pytest-xdist when installed.
    With ``timeout`` the run is stopped after that many seconds and TimedOut
    names the test that was running (and the line it was stuck on)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "tito._pytest_watch", *args]
    if workers and workers > 1 and xdist_available():
        cmd += ["-n", str(workers)]
    return run_command(project, cmd, capture=capture, timeout=timeout, watch=timeout is not None)
