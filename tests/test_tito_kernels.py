"""A learner's tinytorch runs the learner's own (textbook) functions, not module 18's fused
kernels, until module 18 is completed: ``tito module start`` writes ``tinytorch/_kernels.txt``,
``tinytorch/__init__.py`` reads it, ``tito module complete 18`` removes it."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tree_bytes
from tito.learner import KERNELS_FILE, Progress, accel_module, module_digests
from tito.project import Project

ROOT = Path(__file__).resolve().parent.parent
REAL = Project(ROOT)
PROBE = ("import tinytorch; from tinytorch.core.tensor import KERNELS; from tinytorch.processes import can_fork; "
         "print(tinytorch.accel.enabled(), tinytorch.parallel.enabled(), "
         "(KERNELS.get('data_parallel') is tinytorch.processes.ProcessDataParallel) == can_fork())")


def _clone(tmp_path, tests_of=()):
    """The real course in a fresh folder, as a learner clones it (no workspace, no progress)."""
    root = tmp_path / "real"
    root.mkdir()
    for f in ("settings.ini", "pyproject.toml", "conftest.py", "jupytext.toml"):
        shutil.copy(ROOT / f, root / f)
    ign = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "modules", root / "modules", ignore=ign)
    shutil.copytree(ROOT / "tinytorch", root / "tinytorch", ignore=ign)
    (root / "tests").mkdir()
    for m in tests_of:
        for t in REAL.package_tests(m):
            shutil.copy(t, root / "tests" / t.name)
    return root


def _accel_on(root, **env):
    e = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{ROOT}")
    e.pop("TINYTORCH_KERNELS", None)
    e.update(env)
    p = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    accel, optimizers, processes = ({"True": True, "False": False}[w] for w in p.stdout.split())
    assert accel == optimizers == processes, "the fused kernels, in-place updates and processes switch together"
    return accel


def test_the_course_has_an_acceleration_module():
    accel = accel_module(REAL)
    assert accel is not None and accel.name == "acceleration"
    assert f"/tinytorch/{KERNELS_FILE}" in (ROOT / ".gitignore").read_text().splitlines()   # a learner's file


def test_kernels_file_overrides_default_and_environment_overrides_file(tmp_path):
    root = _clone(tmp_path)
    assert _accel_on(root) is True                               # a developer's clone: fused kernels
    (root / "tinytorch" / KERNELS_FILE).write_text("textbook\n# comment\n")
    assert _accel_on(root) is False
    assert _accel_on(root, TINYTORCH_KERNELS="fast") is True
    (root / "tinytorch" / KERNELS_FILE).write_text("fast\n")
    assert _accel_on(root, TINYTORCH_KERNELS="textbook") is False
    assert _accel_on(root) is True


def test_doctor_says_which_kernels_run(tmp_path, monkeypatch):
    from tito.doctor import KERNEL_SETTINGS, run_checks
    root = _clone(tmp_path)
    monkeypatch.delenv("TINYTORCH_KERNELS", raising=False)
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{ROOT}")
    details = lambda: [c.detail for c in run_checks(Project(root)) if c.name == "kernels"]
    assert details() == [KERNEL_SETTINGS["fast"]]
    (root / "tinytorch" / KERNELS_FILE).write_text("textbook\n")
    assert details() == [KERNEL_SETTINGS["textbook"]]


def test_learner_runs_textbook_functions_until_module_18_is_completed(tmp_path, monkeypatch, cli):
    accel = accel_module(REAL)
    root = _clone(tmp_path, tests_of=[accel])
    kernels = root / "tinytorch" / KERNELS_FILE
    monkeypatch.chdir(root)
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{ROOT}")
    monkeypatch.delenv("TINYTORCH_KERNELS", raising=False)
    project = Project(root)

    r = cli("module", "start", "1")
    assert r.exit_code == 0, r.output
    assert f"tinytorch runs the textbook functions (your code), not the fused kernels of module {accel.label}" in r.output
    assert kernels.read_text().split()[0] == "textbook"
    assert _accel_on(root) is False
    assert "tinytorch runs the textbook functions" in cli("module", "status").output
    # starting another module or resetting one keeps the setting (nothing to say)
    r = cli("module", "reset", "1")
    assert r.exit_code == 0 and "fused kernels" not in r.output and _accel_on(root) is False
    # the file is not part of what a completed module's tests ran against
    digests = module_digests(project)
    kernels.unlink()
    assert module_digests(project) == digests
    kernels.write_text("textbook\n")

    # modules 1..17 completed (the per-module completes are tested elsewhere); now module 18
    progress = Progress(project)
    for m in project.modules():
        if m.number < accel.number:
            progress.mark(m, started="t", completed="t")
    progress.save()
    assert cli("module", "start", str(accel.number)).exit_code == 0
    ws = project.workspace_notebook(accel)
    r = cli("module", "complete", str(accel.number))          # the stubs fail: nothing changes
    assert r.exit_code == 1
    assert kernels.is_file() and _accel_on(root) is False
    shutil.copy(accel.notebook, ws)                            # the learner writes the kernels
    before = tree_bytes(root / "tinytorch")
    r = cli("module", "complete", str(accel.number))
    assert r.exit_code == 0, r.output
    assert f"tinytorch switches the fused kernels of module {accel.label} (acceleration) on again" in r.output
    assert not kernels.exists() and _accel_on(root) is True
    assert set(before) - set(tree_bytes(root / "tinytorch")) == {KERNELS_FILE}
    # un-completing module 18 (reset) goes back to the textbook functions
    r = cli("module", "reset", str(accel.number))
    assert r.exit_code == 0 and "tinytorch runs the textbook functions" in r.output
    assert _accel_on(root) is False
    assert json.loads(project.progress_file.read_text())["modules"][accel.slug].get("completed") is None
