"""Every tito command's output and exit code, on a fixture project."""
import re
import subprocess
import sys

from tests.helpers import TENSOR_NB, tree_bytes, write_project


def test_help_lists_the_commands(cli, in_project):
    r = cli("--help")
    assert r.exit_code == 0
    for cmd in ("export", "test", "doctor", "module"):
        assert cmd in r.output
    r = cli("module", "--help")
    assert r.exit_code == 0
    for cmd in ("list", "status", "start", "complete", "reset", "test"):
        assert cmd in r.output


def test_console_script_runs(in_project):
    p = subprocess.run([sys.executable, "-m", "tito", "module", "list"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "tinytorch.core.tensor" in p.stdout


def test_module_list_shows_number_name_target_state(cli, in_project):
    r = cli("module", "list")
    assert r.exit_code == 0, r.output
    assert re.search(r"01\s+tensor\s+tinytorch\.core\.tensor\s+not started", r.output)
    assert re.search(r"02\s+grad\s+tinytorch\.core\.grad\s+not started", r.output)
    assert r.output.index("tensor") < r.output.index("grad")


def test_module_status_says_what_is_next(cli, in_project):
    r = cli("module", "status")
    assert r.exit_code == 0, r.output
    assert "Completed 0 of 2 modules." in r.output
    assert "Next: tito module start 1" in r.output


def test_unknown_module_is_an_error_listing_the_modules(cli, in_project):
    r = cli("module", "start", "99")
    assert r.exit_code == 1
    assert "No module '99'. Available modules: 01 tensor, 02 grad." in r.output


def test_export_prints_what_changed_then_nothing(cli, in_project):
    r = cli("export")
    assert r.exit_code == 0, r.output
    assert "01_tensor: modules/01_tensor/tensor.py -> tinytorch/core/tensor.py" in r.output
    assert "updated tinytorch/core/grad.py" in r.output
    r = cli("export")
    assert r.exit_code == 0
    assert "nothing changed" in r.output
    r = cli("export", "2")
    assert r.exit_code == 0
    assert "02_grad" in r.output and "01_tensor" not in r.output


def test_export_check(cli, in_project):
    r = cli("export", "--check")
    assert r.exit_code == 1
    assert "out of date: tinytorch/core/tensor.py" in r.output and "Run: tito export" in r.output
    assert not (in_project / "tinytorch" / "core").exists()
    cli("export")
    r = cli("export", "--check")
    assert r.exit_code == 0 and "in sync" in r.output


def test_broken_export_exits_nonzero_naming_notebook_and_cell(cli, in_project):
    cli("export")
    before = tree_bytes(in_project / "tinytorch")
    (in_project / "modules" / "01_tensor" / "tensor.py").write_text(
        TENSOR_NB.replace("import numpy as np\n", "from .x import y\n"))
    r = cli("export")
    assert r.exit_code == 1
    assert "Export stopped; tinytorch/ was not changed." in r.output
    assert re.search(r"modules/01_tensor/tensor\.py, cell \d+ \(line \d+, first line: '#\| export'\): relative import",
                     r.output)
    assert tree_bytes(in_project / "tinytorch") == before


def test_test_one_module_passes(cli, in_project):
    cli("export")
    r = cli("test", "1")
    assert r.exit_code == 0
    assert "Testing module 01 (tensor): modules/01_tensor/tensor.py, tests/test_01_tensor_pkg.py" in r.output


def test_test_all_and_failures(cli, in_project, capfd):
    cli("export")
    assert cli("test").exit_code == 0
    out = capfd.readouterr().out
    assert "6 passed" in out   # 3 notebook tests + 3 package tests
    (in_project / "modules" / "01_tensor" / "tensor.py").write_text(TENSOR_NB.replace("== 3", "== 4"))
    assert cli("test", "1").exit_code == 1
    assert "1 failed" in capfd.readouterr().out


def test_test_counts_nothing_collected_as_failure(cli, tmp_path, monkeypatch):
    root = write_project(tmp_path / "p", {"01_tensor": TENSOR_NB.replace("def test_", "def check_")},
                         package_tests=False)
    monkeypatch.chdir(root)
    r = cli("test", "1")
    assert r.exit_code == 1
    assert "No tests ran" in r.output


def test_doctor_reports_problem_and_fix_then_ok(cli, in_project):
    r = cli("doctor")
    assert r.exit_code == 1
    assert re.search(r"PROBLEM export\s+tinytorch/ is out of date", r.output)
    assert "fix: tito export" in r.output
    assert re.search(r"ok\s+nbdev\s+2\.4\.14", r.output)
    assert before_after_untouched(in_project)
    cli("export")
    r = cli("doctor")
    assert r.exit_code == 0, r.output
    assert "No problems found." in r.output
    for name in ("Python", "NumPy", "nbdev", "jupytext", "import tinytorch", "export"):
        assert re.search(rf"ok\s+{re.escape(name)}\s", r.output), name


def before_after_untouched(root):
    """doctor must not export: the package still has only its hand-written file."""
    return sorted(p.name for p in (root / "tinytorch").rglob("*.py")) == ["__init__.py"]


def test_doctor_names_a_broken_package(cli, in_project):
    cli("export")
    (in_project / "tinytorch" / "__init__.py").write_text("import nonexistent_module_xyz\n")
    r = cli("doctor")
    assert r.exit_code == 1
    assert re.search(r"PROBLEM import tinytorch\s+fails: ModuleNotFoundError", r.output)


# --------------------------------------------------------------------- lab ----
def test_lab_server_loads_the_jupytext_viewer_for_py_files(tmp_path):
    """Start JupyterLab exactly as `tito lab` does and ask the server for its settings: `.py` files
    open with jupytext's 'Jupytext Notebook' viewer, not the text editor."""
    import json
    import os
    import socket
    import time
    import urllib.request
    from pathlib import Path

    import pytest
    pytest.importorskip("jupyterlab")
    pytest.importorskip("jupytext")
    from tito.cli import lab_command
    from tito.project import Project

    root = Path(__file__).resolve().parent.parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd, env = lab_command(Project(root), [], ["--no-browser", f"--port={port}", "--ServerApp.token=t0k",
                                                "--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False"]
                            + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []))
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "user-config")    # a fresh install: no user settings
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "user-settings")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    p = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/docmanager-extension:plugin?token=t0k"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    data = json.load(r)
                break
            except OSError:
                assert p.poll() is None, "jupyter lab exited"
                assert time.monotonic() < deadline, "jupyter lab did not answer within 60 s"
                time.sleep(0.3)
        assert data["schema"]["properties"]["defaultViewers"]["default"] == {"python": "Jupytext Notebook"}
        # and the viewer exists: jupytext's JupyterLab extension is installed and loaded
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab/api/settings/jupyterlab-jupytext:plugin"
                                    "?token=t0k", timeout=5) as r:
            assert r.status == 200
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_lab_without_jupyterlab_is_a_one_line_error(cli, in_project, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jupyterlab" else real(name, *a))
    r = cli("lab")
    assert r.exit_code == 1
    assert r.output.strip() == 'jupyterlab is not installed. Install it with: pip install -e ".[lab]"'
