"""The module notebooks: they run top to bottom as plain scripts, export cleanly,
and their test_* functions are collected by plain pytest."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TENSOR_NB, write_project
from tito.export import check_notebook, read_notebook
from tito.project import Project
from tito.testing import project_env

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Project(ROOT)
MODULES = PROJECT.modules()
IDS = [m.slug for m in MODULES]


@pytest.mark.parametrize("mod", MODULES, ids=IDS)
def test_notebook_runs_as_a_script(mod):
    p = subprocess.run([sys.executable, str(mod.notebook.relative_to(ROOT))], cwd=ROOT, env=project_env(PROJECT),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert p.returncode == 0, f"python {PROJECT.rel(mod.notebook)} failed:\n{p.stdout[-5000:]}"


@pytest.mark.parametrize("mod", MODULES, ids=IDS)
def test_notebook_passes_the_export_checks(mod):
    target, problems = check_notebook(read_notebook(mod.notebook), PROJECT.rel(mod.notebook))
    assert not problems, "\n".join(problems)
    assert target and target == mod.export_target()


@pytest.mark.parametrize("mod", MODULES, ids=IDS)
def test_notebook_has_tests(mod):
    text = mod.notebook.read_text(encoding="utf-8")
    assert "\ndef test_" in text, f"{PROJECT.rel(mod.notebook)} defines no test_* function"


def test_fixture_notebook_runs_as_a_script(exported):
    nb = exported / "modules" / "02_grad" / "grad.py"
    p = subprocess.run([sys.executable, str(nb)], cwd=exported, env=project_env(Project(exported)),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    nb.write_text(nb.read_text() + "\nraise SystemExit(3)\n")
    p = subprocess.run([sys.executable, str(nb)], cwd=exported, env=project_env(Project(exported)))
    assert p.returncode == 3


def _collect(root, *args):
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args], cwd=root,
                       env=project_env(Project(root)), capture_output=True, text=True)
    return p.returncode, [l for l in p.stdout.splitlines() if "::" in l]


def test_plain_pytest_collects_notebook_tests_once(exported):
    rc, ids = _collect(exported)
    assert rc == 0
    assert "modules/01_tensor/tensor.py::test_add" in ids
    assert "modules/02_grad/grad.py::test_square_grad" in ids
    assert "tests/test_01_tensor_pkg.py::test_add_package" in ids
    assert len(ids) == len(set(ids)) == 6
    # a notebook named on the command line is collected exactly once too
    rc, ids = _collect(exported, "modules/01_tensor/tensor.py")
    assert ids == ["modules/01_tensor/tensor.py::test_add", "modules/01_tensor/tensor.py::test_scale"]


def test_notebook_named_like_a_library_does_not_shadow_it(tmp_path):
    # a module called "json" must not replace the standard library's json for other tests
    nb = TENSOR_NB.replace("core.tensor", "core.json").replace("import numpy as np",
                                                                "import numpy as np\nimport json")
    root = write_project(tmp_path / "p", {"01_json": nb}, package_tests=False)
    (root / "tests" / "test_uses_json.py").write_text("import json\n\ndef test_json():\n    assert json.dumps(1) == '1'\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=root, env=project_env(Project(root)),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 passed" in p.stdout
