"""tito.notebook: the in-notebook test runner and assert_close."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import HEADER, write_project
from tito.notebook import Report, assert_close, run_tests
from tito.project import Project
from tito.testing import project_env

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------ assert_close ----
def test_assert_close_passes_within_tolerance_and_fails_outside():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    assert_close(x * (1 + 1e-7), x)                         # within rtol 1e-5
    assert_close(x + 1e-3, x, atol=1e-2)
    with pytest.raises(AssertionError):
        assert_close(x + 1e-3, x)


def test_assert_close_message_names_worst_index_values_error_tolerance_inputs():
    a = np.arange(6.0).reshape(2, 3)
    actual = a.copy()
    actual[1, 2] += 0.5
    actual[0, 1] += 0.01
    with pytest.raises(AssertionError) as e:
        assert_close(actual, a, rtol=1e-5, atol=1e-8, inputs={"a": a, "k": 3}, name="add(a, b)")
    lines = str(e.value).splitlines()
    assert lines[0] == ("add(a, b): 2 of 6 values differ; worst at index (1, 2): actual 5.5, expected 5 "
                        "(error 0.5 > tolerance 5.001e-05)")
    assert "shape (2, 3)" in lines[1] and "atol 1e-08 + rtol 1e-05 * |expected|" in lines[1]
    assert lines[2] == "inputs: a = ndarray shape (2, 3) float64: [0., 1., 2., 3., 4., 5.]"
    assert lines[3] == "inputs: k = 3"


def test_assert_close_shapes_must_match_nothing_is_broadcast():
    with pytest.raises(AssertionError, match=r"^value: shape \(3,\), expected shape \(1, 3\)"):
        assert_close(np.ones(3), np.ones((1, 3)))


def test_assert_close_nan_and_inf():
    assert_close([np.nan, np.inf, 1.0], [np.nan, np.inf, 1.0])
    with pytest.raises(AssertionError, match=r"worst at index \(0,\): actual nan, expected 1"):
        assert_close([np.nan, 1.0], [1.0, 1.0])
    with pytest.raises(AssertionError, match=r"actual inf, expected -inf"):
        assert_close([np.inf], [-np.inf])


def test_assert_close_reads_tinytorch_and_torch_tensors():
    from tinytorch.core.tensor import Tensor
    t = Tensor([1.0, 2.0])
    assert_close(t, [1.0, 2.0])
    with pytest.raises(AssertionError, match=r"actual 2, expected 3"):
        assert_close(t, np.array([1.0, 3.0]), inputs={"t": t})
    torch = pytest.importorskip("torch")
    assert_close(t, torch.tensor([1.0, 2.0], dtype=torch.float64))


# --------------------------------------------------------------- run_tests ----
NOTEBOOK_CELLS = '''import numpy as np
import pytest
from tito.notebook import run_tests, assert_close

def add(a, b):
    raise NotImplementedError("Module 1 (tensor): implement add - checked by test_add")

def test_add():
    assert_close(add(np.ones(2), np.ones(2)), [2.0, 2.0])

def test_sum_ok():
    assert_close(np.ones(3).sum(), 3.0)

def test_bare_assert():
    got = 1 + 1
    assert got == 3

def test_close():
    x = np.array([1.0, 2.0, 3.0])
    assert_close(x ** 2, [1.0, 4.0, 9.5], inputs={"x": x})

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1

def test_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TITO_NB_TEST", "1")
    (tmp_path / "f.txt").write_text("hi")
    assert (tmp_path / "f.txt").read_text() == "hi" and os.environ["TITO_NB_TEST"] == "1"

def test_needs_capsys(capsys):
    pass

import os
report = run_tests(test_add, test_sum_ok, test_bare_assert, "test_clo*", test_param, test_files, test_needs_capsys)
after = "the next cell ran"
'''

EXPECTED_LINES = [
    "TODO  test_add: not implemented yet: Module 1 (tensor): implement add - checked by test_add",
    "PASS  test_sum_ok",
    "FAIL  test_bare_assert: assertion failed at line N: assert got == 3",
    "      got = 2",
    "FAIL  test_close: value: 1 of 3 values differ; worst at index (2,): actual 9, expected 9.5 "
    "(error 0.5 > tolerance 9.501e-05)",
    "PASS  test_param[1]",
    "FAIL  test_param[2]: assertion failed at line N: assert n == 1",
    "PASS  test_files",
    "SKIP  test_needs_capsys: needs the pytest fixture capsys; run it with pytest (tito module test 1 -k "
    "test_needs_capsys)",
    "8 tests: 3 passed, 3 failed, 1 not implemented yet, 1 skipped.",
]


def _lines(text, first_line=1):
    """Output lines, with 'line 12' made 'line N' once checked against the cell's source."""
    src = NOTEBOOK_CELLS.splitlines()
    out = []
    for l in text.splitlines():
        m = re.search(r"line (\d+): (.*)$", l)
        if m:
            assert src[int(m.group(1)) - first_line].strip() == m.group(2), l
            l = l.replace(f"line {m.group(1)}:", "line N:")
        out.append(l)
    return out


def _env(root):
    env = project_env(Project(root))
    env["PYTHONPATH"] += os.pathsep + str(ROOT)      # this checkout's tito
    env.pop("TITO_RUN_TESTS", None)
    return env


def test_run_tests_in_an_ipython_shell_prints_summary_and_never_raises(tmp_path, monkeypatch):
    from execnb.shell import CaptureShell
    (tmp_path / "01_runner").mkdir()
    monkeypatch.chdir(tmp_path / "01_runner")       # Jupyter runs a kernel in its notebook's folder
    shell = CaptureShell()
    outputs = shell.run(NOTEBOOK_CELLS)
    text = "".join(t for o in outputs if o.get("name") == "stdout" for t in o["text"])
    assert not [o for o in outputs if o.get("output_type") == "error"], outputs
    lines = _lines(text)
    for want in EXPECTED_LINES:
        assert want in lines, f"{want!r} not in:\n{text}"
    assert "inputs: x = ndarray shape (3,) float64: [1., 2., 3.]" in text
    assert shell.user_ns["after"] == "the next cell ran"
    rep = shell.user_ns["report"]
    assert isinstance(rep, Report) and not rep and (rep.passed, rep.failed, rep.not_implemented) == (3, 3, 1)
    assert "TITO_NB_TEST" not in os.environ                      # monkeypatch was undone


def _script_project(tmp_path):
    nb = HEADER + "\n# %%\n" + NOTEBOOK_CELLS.replace(
        "assert_close(np.ones(3).sum(), 3.0)", "assert_close(np.ones(3).sum(), 3.0); open('ran.txt', 'w').write('x')")
    root = write_project(tmp_path / "p", {"01_runner": nb}, package_tests=False)
    return root, root / "modules" / "01_runner" / "runner.py"


def _first_line(nb):
    """The line of the script where NOTEBOOK_CELLS begins."""
    return nb.read_text().splitlines().index("import numpy as np") + 1


def test_run_tests_in_a_plain_script_only_names_the_tests(tmp_path):
    root, nb = _script_project(tmp_path)
    env = _env(root)
    p = subprocess.run([sys.executable, str(nb)], cwd=root, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("run_tests: not run outside a notebook (test_add, test_sum_ok, test_bare_assert, "
                               "test_close, test_param, test_files, test_needs_capsys); pytest runs them: "
                               "tito module test 1 (or set TITO_RUN_TESTS=1)")
    assert not (root / "ran.txt").exists()
    env["TITO_RUN_TESTS"] = "1"
    p = subprocess.run([sys.executable, str(nb)], cwd=root, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = _lines(p.stdout, first_line=_first_line(nb))
    for want in EXPECTED_LINES:
        assert want in lines, p.stdout
    assert (root / "ran.txt").exists()


def test_run_tests_does_nothing_under_pytest_collection(tmp_path):
    root, nb = _script_project(tmp_path)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(nb)],
                       cwd=root, env=_env(root), capture_output=True, text=True)
    assert "run_tests" not in p.stdout and "PASS  " not in p.stdout, p.stdout
    assert "4 failed, 4 passed" in p.stdout, p.stdout     # pytest runs the same tests itself


def test_run_tests_disabled_and_imported_modes():
    calls = []

    def test_x():
        calls.append(1)
    assert run_tests(test_x, _globals={"__name__": "tensor"}).ran is False
    os.environ["TITO_RUN_TESTS"] = "0"
    try:
        assert run_tests(test_x, _globals={"__name__": "__main__"}).ran is False
    finally:
        del os.environ["TITO_RUN_TESTS"]
    os.environ["TITO_RUN_TESTS"] = "1"
    try:
        rep = run_tests(test_x, quiet=True, _globals={"__name__": "__main__"})
    finally:
        del os.environ["TITO_RUN_TESTS"]
    assert rep.ran and rep.ok and calls == [1]


def test_run_tests_in_a_jupyter_kernel(tmp_path):
    """The real thing: a notebook executed top to bottom by a Jupyter kernel."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELLS),
                                         nbformat.v4.new_code_cell("print(after)")])
    d = tmp_path / "01_runner"
    d.mkdir()
    env_pp = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env_pp] if env_pp else []))
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(d)}}
                                ).execute()
    finally:
        if env_pp is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_pp
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    for want in EXPECTED_LINES:
        assert want in _lines(text), text
    assert nb.cells[1].outputs[0]["text"] == "the next cell ran\n"
