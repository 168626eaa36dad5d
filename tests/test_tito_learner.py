"""The learner's journey: start, complete, reset; nothing a learner wrote is lost."""
import ast
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import HEADER, TENSOR_NB, tree_bytes, write_project
from tito.export import export
from tito.learner import LearnerError, Progress, make_stub, sync_paired_ipynb
from tito.project import Module, Project

ROOT = Path(__file__).resolve().parent.parent
REAL = Project(ROOT)
MOD1 = Module(1, "tensor", Path("modules/01_tensor"))


# ------------------------------------------------------------------ stubs ----
def test_stub_replaces_solutions_and_keeps_the_rest():
    stub, n = make_stub(TENSOR_NB, MOD1)
    assert n == 2
    assert "np.add(a, b)" not in stub and "self.value * k" not in stub
    assert "SOLUTION" not in stub
    assert 'def add(a, b):\n    "Elementwise sum of two arrays."\n    raise NotImplementedError(' in stub
    assert ("        # Hint: multiply, do not add\n        raise NotImplementedError("
            "'Module 1 (tensor): implement Box.scale - hint: multiply, do not add - checked by test_scale: "
            "tito module test 1 -k \"test_scale\"')") in stub
    assert ("implement add - hint: read the docstring and the tests of this module - checked by test_add: "
            "tito module test 1 -k \"test_add\"") in stub
    assert "def test_add():\n    assert add(1, 2) == 3" in stub     # the tests stay
    ast.parse(stub)
    # everything outside the solution blocks is unchanged
    strip = lambda s: [l for l in s.splitlines() if "SOLUTION" not in l and "NotImplementedError" not in l
                       and "np.add(a, b)" not in l and "self.value * k" not in l]
    assert strip(stub) == strip(TENSOR_NB)


@pytest.mark.parametrize("text,msg", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", r"line 2: '### BEGIN SOLUTION' is never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", r"line 3: '### END SOLUTION' without"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION\n", r"line 3: .* inside"),
    ("def f():\n    if True:\n### BEGIN SOLUTION\n        return 1\n### END SOLUTION\n", r"would not parse"),
])
def test_bad_solution_markers_are_reported_with_the_line(text, msg):
    with pytest.raises(LearnerError, match=msg):
        make_stub(text, MOD1, "nb.py")


@pytest.mark.parametrize("mod", REAL.modules(), ids=[m.slug for m in REAL.modules()])
def test_every_module_stub_parses_and_exports(mod, tmp_path):
    """The learner copy of every real module parses, exports, and raises where the solutions were."""
    text = mod.notebook.read_text(encoding="utf-8")
    stub, n = make_stub(text, mod, REAL.rel(mod.notebook))
    assert n > 0, f"{REAL.rel(mod.notebook)} has no ### BEGIN SOLUTION blocks for the learner"
    assert stub.count("raise NotImplementedError(") >= n
    root = write_project(tmp_path / "p", {mod.slug: stub}, package_tests=False)
    res = export(root=root)
    target = mod.export_target()
    out = root / "tinytorch" / (target.replace(".", "/") + ".py")
    assert (root / res.outputs[mod.slug][0]) == out
    assert "NotImplementedError" in out.read_text(encoding="utf-8")


# ------------------------------------------------------------ the journey ----
def _reference_filled(project_root, slug, name, edit=None):
    """The learner 'writes' the solution: the reference notebook, optionally edited."""
    text = (project_root / "modules" / slug / f"{name}.py").read_text()
    return edit(text) if edit else text


def test_simulated_learner(cli, in_project, capfd):
    root = in_project
    pkg = root / "tinytorch"
    assert cli("export").exit_code == 0
    reference = tree_bytes(pkg)
    ws1 = root / "workspace" / "01_tensor" / "tensor.py"
    ws2 = root / "workspace" / "02_grad" / "grad.py"

    # completing before starting, or out of order, is refused with the way forward
    r = cli("module", "complete", "1")
    assert r.exit_code == 1 and "Run 'tito module start 1' first" in r.output
    r = cli("module", "complete", "2")
    assert r.exit_code == 1
    assert "builds on module 01 (tensor)" in r.output and "'tito module complete 1'" in r.output

    # start 01: a stubbed copy; starting twice never destroys work
    r = cli("module", "start", "1")
    assert r.exit_code == 0, r.output
    assert "workspace/01_tensor/tensor.py" in r.output and "tito module complete 1" in r.output
    assert "raise NotImplementedError" in ws1.read_text()
    ws1.write_text(ws1.read_text() + "\n# my notes\n")
    mine = ws1.read_bytes()
    r = cli("module", "start", "1")
    assert r.exit_code == 1 and "already started" in r.output and "--force" in r.output
    assert ws1.read_bytes() == mine
    assert Project(root).progress_file.is_file()

    # complete on the stubs fails: package byte-identical, no progress
    r = cli("module", "complete", "1")
    assert r.exit_code == 1
    assert "NotImplementedError: Module 1 (tensor): implement add" in r.output
    assert "Failing: workspace/01_tensor/tensor.py::test_add" in r.output
    assert tree_bytes(pkg) == reference
    assert not Progress(Project(root)).completed(Project(root).module(1))

    # fill in the solution: complete passes, progress recorded, tinytorch runs the learner's code
    ws1.write_text(_reference_filled(root, "01_tensor", "tensor",
                                     lambda t: t.replace("return np.add(a, b)", "return np.add(a, b)  # mine")))
    r = cli("module", "complete", "1")
    assert r.exit_code == 0, r.output
    assert "Module 01 (tensor) completed" in r.output
    assert "'from tinytorch.core.tensor import ...' now runs your code." in r.output
    assert "Next: tito module start 2" in r.output
    data = json.loads(Project(root).progress_file.read_text())
    assert "completed" in data["modules"]["01_tensor"]
    assert "# mine" in (pkg / "core" / "tensor.py").read_text()
    r = cli("module", "list")
    assert re.search(r"01\s+tensor\s+tinytorch\.core\.tensor\s+completed", r.output)
    # a later plain `tito export` keeps the learner's code
    r = cli("export")
    assert r.exit_code == 0 and "nothing changed" in r.output and "your completed workspace copy" in r.output
    after_01 = tree_bytes(pkg)

    # module 02 with a wrong gradient that passes the notebook's own test but not the package test
    assert cli("module", "start", "2").exit_code == 0
    ws2.write_text(_reference_filled(root, "02_grad", "grad",
                                     lambda t: t.replace("return add(x, x)", "return 6.0 if x == 3.0 else x")))
    r = cli("module", "complete", "2")
    assert r.exit_code == 1
    assert "Failing: tests/test_02_grad_pkg.py::test_square_grad_matches_finite_difference" in r.output
    assert "tinytorch/ was restored exactly as it was; no progress was recorded." in r.output
    assert tree_bytes(pkg) == after_01
    assert not Progress(Project(root)).completed(Project(root).module(2))

    # reset 01: reference code back, learner's file kept and backed up
    r = cli("module", "reset", "1")
    assert r.exit_code == 0, r.output
    assert tree_bytes(pkg) == reference
    backups = list((root / "workspace" / "backups" / "01_tensor").glob("tensor-*.py"))
    assert len(backups) == 1 and b"# mine" in backups[0].read_bytes()
    assert b"# mine" in ws1.read_bytes()
    assert not Progress(Project(root)).completed(Project(root).module(1))
    # reset --workspace: a fresh copy, after another backup
    r = cli("module", "reset", "1", "--workspace")
    assert r.exit_code == 0
    assert "raise NotImplementedError" in ws1.read_text()
    assert len(list((root / "workspace" / "backups" / "01_tensor").glob("tensor-*.py"))) == 2
    # start --force: backup first, then a fresh copy
    ws2_work = ws2.read_bytes()
    r = cli("module", "start", "2", "--force")
    assert r.exit_code == 0 and "Backed up your previous file" in r.output
    saved = list((root / "workspace" / "backups" / "02_grad").glob("grad-*.py"))
    assert [p.read_bytes() for p in saved] == [ws2_work]


def test_progress_file_is_small_json_written_atomically(in_project, cli):
    cli("module", "start", "1")
    pf = Project(in_project).progress_file
    data = json.loads(pf.read_text())
    assert set(data) == {"version", "modules"} and "started" in data["modules"]["01_tensor"]
    assert not [p for p in pf.parent.iterdir() if "tmp" in p.name]


def test_corrupt_progress_file_is_a_clear_error(in_project, cli):
    pf = Project(in_project).progress_file
    pf.parent.mkdir()
    pf.write_text("{not json")
    r = cli("module", "status")
    assert r.exit_code == 1 and ".tito/progress.json is unreadable" in r.output


def test_start_ipynb_pairs_and_edits_in_ipynb_are_picked_up(in_project, cli):
    import jupytext
    r = cli("module", "start", "1", "--ipynb")
    assert r.exit_code == 0, r.output
    project = Project(in_project)
    mod = project.module(1)
    py = project.workspace_notebook(mod)
    ipynb = py.with_suffix(".ipynb")
    nb = jupytext.read(ipynb)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    # the learner edits the .ipynb only (e.g. Jupyter without jupytext)
    for cell in nb.cells:
        cell.source = cell.source.replace("raise NotImplementedError('Module 1 (tensor): implement add",
                                          "return a + b  # from ipynb\n    raise NotImplementedError('x")
    jupytext.write(nb, ipynb)
    os.utime(ipynb, (py.stat().st_mtime + 10, py.stat().st_mtime + 10))
    old = py.read_bytes()
    note = sync_paired_ipynb(project, mod)
    assert note and "updated the .py" in note
    assert "# from ipynb" in py.read_text()
    assert [b.read_bytes() for b in (project.backups_dir / mod.slug).glob("*.py")] == [old]


def test_module_test_runs_the_learner_copy(in_project, cli, capfd):
    cli("export")
    assert cli("module", "test", "1").exit_code == 0  # not started: the reference passes
    cli("module", "start", "1")
    r = cli("module", "test", "1")
    assert r.exit_code == 1 and "Testing workspace/01_tensor/tensor.py" in r.output
    assert "2 failed" in capfd.readouterr().out


def test_real_module_01_round_trip(tmp_path, monkeypatch, cli):
    """With the real reference notebook of module 01: stubs fail, the reference solution completes."""
    if not (ROOT / "modules" / "01_tensor" / "tensor.py").is_file():
        pytest.skip("modules/01_tensor is not there yet")
    root = tmp_path / "real"
    root.mkdir()
    for f in ("settings.ini", "pyproject.toml", "conftest.py", "jupytext.toml"):
        shutil.copy(ROOT / f, root / f)
    shutil.copytree(ROOT / "modules", root / "modules")
    shutil.copytree(ROOT / "tinytorch", root / "tinytorch", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tests").mkdir()
    for t in REAL.package_tests(REAL.module(1)):
        shutil.copy(t, root / "tests" / t.name)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{ROOT}")   # the notebooks import tito.notebook
    assert cli("module", "start", "1").exit_code == 0     # writes tinytorch/_kernels.txt (textbook functions)
    before = tree_bytes(root / "tinytorch")
    r = cli("module", "complete", "1")
    assert r.exit_code == 1 and "NotImplementedError: Module 1 (tensor)" in r.output
    assert tree_bytes(root / "tinytorch") == before
    shutil.copy(root / "modules" / "01_tensor" / "tensor.py", root / "workspace" / "01_tensor" / "tensor.py")
    r = cli("module", "complete", "1")
    assert r.exit_code == 0, r.output
    text = (root / "tinytorch" / "core" / "tensor.py").read_text()
    assert "File to edit: ../../workspace/01_tensor/tensor.py." in text
    # apart from the header paths, the learner's export equals the reference export
    norm = lambda b: b.decode().replace("../../workspace/", "../../modules/")
    assert norm((root / "tinytorch" / "core" / "tensor.py").read_bytes()) == before["core/tensor.py"].decode()


# ------------------------------------------- stubs name the tests that check them ----
def test_stub_names_package_tests_when_no_notebook_test_mentions_it():
    nb = TENSOR_NB.replace("def test_scale():\n    assert Box(2).scale(3).value == 6\n", "")
    stub, _ = make_stub(nb, MOD1, tests={"tests/test_01_pkg.py": "def test_box_scales():\n"
                                                                  "    assert Box(2).scale(3).value == 6\n"})
    assert ("implement Box.scale - hint: multiply, do not add - checked by tests/test_01_pkg.py::test_box_scales: "
            "tito test 1") in stub
    assert "implement add - hint: read the docstring and the tests of this module - checked by test_add:" in stub


def test_real_stubs_name_their_tests():
    for mod in REAL.modules():
        stub, n = make_stub(mod.notebook.read_text(encoding="utf-8"), mod, REAL.rel(mod.notebook),
                            {REAL.rel(t): t.read_text(encoding="utf-8") for t in REAL.package_tests(mod)})
        msgs = re.findall(r"raise NotImplementedError\((['\"].*implement.*)\)", stub)
        assert len(msgs) == n
        named = [m for m in msgs if re.search(r"checked by (test_|tests/)", m)]
        assert len(named) >= 0.4 * n, f"{mod.slug}: only {len(named)} of {n} stubs name a test"
        assert all(f"tito module test {mod.number}" in m or f"tito test {mod.number}" in m for m in msgs)


RULES_NB = HEADER + '''
# %%
#| export
import numpy as np
RULES = {}

def rule(op):
    def register(f):
        RULES[op] = f
        return f
    return register

@rule("mul")
def _times(g, a, b):
    "mul: g * b and g * a."
    ### BEGIN SOLUTION
    return g * b, g * a
    ### END SOLUTION

def _cat_rows(parts):
    ### BEGIN SOLUTION
    return np.concatenate(parts)
    ### END SOLUTION

# %%
import pytest
CASES = {"add": 1, "mul": 2}

@pytest.mark.parametrize("name", sorted(CASES))
def test_every_rule(name):
    assert name in RULES

def test_gradcheck_catches_nothing():
    assert True

def test_cat_joins():
    assert RULES
'''


def test_stub_of_a_registered_rule_names_its_case_and_stems_match_whole_words():
    stub, n = make_stub(RULES_NB, MOD1)
    assert n == 2
    assert ("implement _times - hint: read the docstring and the tests of this module - checked by "
            "test_every_rule[mul]: tito module test 1 -k \"test_every_rule[mul]\"") in stub
    assert "implement _cat_rows - hint: read the docstring and the tests of this module - checked by test_cat_joins:" in stub
    assert "catches" not in stub.split("implement _cat_rows")[1].split("\n")[0]


@pytest.mark.parametrize("mod", REAL.modules(), ids=lambda m: m.slug)
def test_every_stub_has_a_docstring_and_names_its_tests(mod):
    stub, n = make_stub(mod.notebook.read_text(encoding="utf-8"), mod, REAL.rel(mod.notebook),
                        {REAL.rel(t): t.read_text(encoding="utf-8") for t in REAL.package_tests(mod)})
    msgs = re.findall(r"raise NotImplementedError\((['\"].*implement.*)\)", stub)
    assert len(msgs) == n >= 1
    vague = [m for m in msgs if "checked by the tests of this module" in m]
    assert not vague, vague
    text = mod.notebook.read_text(encoding="utf-8")
    lines = [i + 1 for i, l in enumerate(text.splitlines()) if "### BEGIN SOLUTION" in l]
    funcs = [f for f in ast.walk(ast.parse(text)) if isinstance(f, ast.FunctionDef)
             and any(f.lineno < n <= f.end_lineno for n in lines)]
    assert len(funcs) == n and all(ast.get_docstring(f) for f in funcs), \
        [f.name for f in funcs if not ast.get_docstring(f)]


# ----------------------------- re-completing a module re-checks what builds on it ----
BREAKS_GRAD = "return np.add(a, b) if isinstance(a, int) else np.multiply(a, b)"


def test_recompleting_module_1_rechecks_completed_module_2(cli, in_project):
    root = in_project
    pkg = root / "tinytorch"
    ws1 = root / "workspace" / "01_tensor" / "tensor.py"
    ws2 = root / "workspace" / "02_grad" / "grad.py"
    cli("export")
    for n, ws, slug, name in ((1, ws1, "01_tensor", "tensor"), (2, ws2, "02_grad", "grad")):
        assert cli("module", "start", n).exit_code == 0
        ws.write_text(_reference_filled(root, slug, name))
        r = cli("module", "complete", n)
        assert r.exit_code == 0, r.output
    assert "All modules completed" in r.output
    good = tree_bytes(pkg)

    # a change to module 1 that passes module 1's own tests but breaks module 2
    ws1.write_text(_reference_filled(root, "01_tensor", "tensor", lambda t: t.replace("return np.add(a, b)", BREAKS_GRAD)))
    r = cli("module", "complete", 1)
    assert r.exit_code == 1
    assert ("Failing: workspace/02_grad/grad.py::test_square_grad, "
            "tests/test_02_grad_pkg.py::test_square_grad_matches_finite_difference") in r.output
    assert ("Your module 01 passes its own tests, but completed module(s) 02 (grad), which build on it, now fail. "
            "Nothing was changed") in r.output
    assert "tinytorch/ was restored exactly as it was; no progress was recorded." in r.output
    assert tree_bytes(pkg) == good
    r = cli("module", "status")
    assert "Completed 2 of 2 modules." in r.output and "All modules completed" in r.output

    # a harmless change re-checks module 2 and passes; Next is right (no 'tito module start 2')
    ws1.write_text(_reference_filled(root, "01_tensor", "tensor",
                                     lambda t: t.replace("return np.add(a, b)", "return np.add(a, b)  # v2")))
    r = cli("module", "complete", 1)
    assert r.exit_code == 0, r.output
    assert "Re-checked the completed modules that build on it: 02 (grad)" in r.output
    assert "tests/test_02_grad_pkg.py" in r.output
    assert "Next: tito module start 2" not in r.output and "All modules completed" in r.output


def test_status_never_counts_a_module_whose_package_code_changed_untested(cli, in_project):
    root = in_project
    ws1 = root / "workspace" / "01_tensor" / "tensor.py"
    ws2 = root / "workspace" / "02_grad" / "grad.py"
    cli("export")
    for n, ws, slug, name in ((1, ws1, "01_tensor", "tensor"), (2, ws2, "02_grad", "grad")):
        cli("module", "start", n)
        ws.write_text(_reference_filled(root, slug, name))
        assert cli("module", "complete", n).exit_code == 0
    # the learner breaks module 2 in the workspace and runs plain `tito export`: untested code in tinytorch/
    ws2.write_text(_reference_filled(root, "02_grad", "grad", lambda t: t.replace("return add(x, x)", "return x")))
    assert cli("export").exit_code == 0
    r = cli("module", "status")
    assert re.search(r"01\s+tensor\s+tinytorch\.core\.tensor\s+completed\s*$", r.output, re.M), r.output
    assert re.search(r"02\s+grad\s+tinytorch\.core\.grad\s+completed, not re-checked", r.output), r.output
    assert "Completed 1 of 2 modules." in r.output
    assert "Not counted: 02 (grad)." in r.output
    assert "Next: tito module complete 2 (tinytorch/ changed since the tests of module 02 last passed)" in r.output
    r = cli("module", "complete", 2)
    assert r.exit_code == 1
    r = cli("module", "status")
    assert "Completed 1 of 2 modules." in r.output
    ws2.write_text(_reference_filled(root, "02_grad", "grad"))
    assert cli("module", "complete", 2).exit_code == 0
    r = cli("module", "status")
    assert "Completed 2 of 2 modules." in r.output and "not re-checked" not in r.output
    # reset puts the reference code back: module 2 built on module 1's reference still counts
    assert cli("module", "reset", 1).exit_code == 0
    r = cli("module", "status")
    assert "Completed 1 of 2 modules." in r.output and "not re-checked" not in r.output
    assert "Next: finish workspace/01_tensor/tensor.py, then tito module complete 1" in r.output


# ------------------------------- module 1's tests check the contract module 2 relies on ----
NATURAL_MUL = 'return record("mul", _binary("mul", np.multiply, a, b), (a, b))'
CONTRACT_MUL = 'return record("mul", _binary("mul", np.multiply, a, b), (a, b), (a.data, b.data))'


def test_wrong_saved_values_fail_in_module_1(tmp_path, monkeypatch, cli, capfd):
    """A learner's `record("mul", data, (a, b))` without the saved arrays fails module 1's own tests,
    naming the op and what module 2's rule needs; the reference solution passes them."""
    root = tmp_path / "real"
    (root / "modules").mkdir(parents=True)
    for f in ("settings.ini", "pyproject.toml", "conftest.py", "jupytext.toml"):
        shutil.copy(ROOT / f, root / f)
    shutil.copytree(ROOT / "modules" / "01_tensor", root / "modules" / "01_tensor")
    shutil.copytree(ROOT / "tinytorch", root / "tinytorch", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{ROOT}")   # the notebooks import tito.notebook
    reference = (root / "modules" / "01_tensor" / "tensor.py").read_text()
    assert reference.count(CONTRACT_MUL) == 1
    assert cli("module", "start", "1").exit_code == 0
    ws = root / "workspace" / "01_tensor" / "tensor.py"
    ws.write_text(reference.replace(CONTRACT_MUL, NATURAL_MUL))
    capfd.readouterr()
    r = cli("module", "test", "1", "-k", "records")
    out = capfd.readouterr().out
    assert r.exit_code == 1
    assert "FAILED workspace/01_tensor/tensor.py::test_arithmetic_records" in out
    assert "mul: saved (); module 03's rule needs (a, b)" in out
    assert re.search(r"1 failed, \d+ passed", out)
    ws.write_text(reference)
    assert cli("module", "test", "1", "-k", "records").exit_code == 0
