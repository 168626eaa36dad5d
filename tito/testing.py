"""Running pytest for the project (``tito test``, ``tito module complete``).

Test convention: a module's tests are the ``test_*`` functions in its notebook
``modules/NN_name/name.py`` plus the files ``tests/test_NN_*.py``. Everything
else under ``tests/`` (CLI, export, integration tests) runs with ``tito test``.
pytest's exit code 5 ("no tests collected") counts as a failure.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .project import Module, Project

__all__ = ["PytestRun", "project_env", "run_pytest", "module_test_paths", "NO_TESTS"]

NO_TESTS = 5  # pytest: no tests were collected


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
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def module_test_paths(project: Project, mod: Module, notebook: Path | None = None) -> list[Path]:
    """The notebook (or ``notebook`` instead) and ``tests/test_NN_*.py`` of ``mod``."""
    return [notebook or mod.notebook, *project.package_tests(mod)]


def xdist_available() -> bool:
    return importlib.util.find_spec("xdist") is not None


def run_pytest(project: Project, args: Sequence[str] = (), *, capture: bool = False,
               workers: int | None = None, timeout: float | None = None) -> PytestRun:
    """Run ``python -m pytest`` in the project root with ``args``.

    ``workers`` > 1 runs tests in parallel with pytest-xdist when installed."""
    cmd = [sys.executable, "-m", "pytest", *args]
    if workers and workers > 1 and xdist_available():
        cmd += ["-n", str(workers)]
    kw = dict(cwd=project.root, env=project_env(project), timeout=timeout)
    if capture:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           encoding="utf-8", errors="replace", **kw)
        return PytestRun(p.returncode, p.stdout)
    p = subprocess.run(cmd, **kw)
    return PytestRun(p.returncode)
