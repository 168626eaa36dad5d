"""`tito module complete` is crash-safe and exclusive: kill -9, SIGTERM, two at once, a looping cell.

Every scenario runs real `python -m tito` processes on a small fixture project
(tests/helpers.py) and checks that tinytorch/ ends byte-identical to either the
state before the command or the full successful export, never anything in between.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import GRAD_NB, TENSOR_NB, tree_bytes, write_project
from tito.export import export
from tito.journal import Journal, exclusive
from tito.learner import Progress
from tito.project import Project

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses POSIX signals")


def _env(root):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(ROOT)])
    env.pop("TITO_LOCK_WAIT", None)
    return env


def _tito(root, *args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "tito", *map(str, args)], cwd=root, env=env or _env(root),
                          capture_output=True, text=True, timeout=timeout)


def _popen(root, *args, env=None):
    return subprocess.Popen([sys.executable, "-m", "tito", *map(str, args)], cwd=root, env=env or _env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ready_project(tmp_path, ws1=TENSOR_NB):
    """Exported fixture project with module 01 started and its solution filled in."""
    root = write_project(tmp_path / "p")
    export(root=root)
    assert _tito(root, "module", "start", 1).returncode == 0
    (root / "workspace" / "01_tensor" / "tensor.py").write_text(
        ws1.replace("return np.add(a, b)", "return np.add(a, b)  # mine"))
    return root


def _state(root):
    return tree_bytes(root / "tinytorch"), Progress(Project(root)).completed(Project(root).module(1))


def _put_back(root, tree, progress_bytes):
    """Make the project exactly `tree` + `progress_bytes` again (between trials)."""
    pkg = root / "tinytorch"
    for p in sorted(pkg.rglob("*"), reverse=True):
        if p.is_file():
            p.unlink()
    for k, v in tree.items():
        (pkg / k).parent.mkdir(parents=True, exist_ok=True)
        (pkg / k).write_bytes(v)
    Project(root).progress_file.write_bytes(progress_bytes)


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_moments_then_next_command_restores_before_or_after(tmp_path, seed):
    root = _ready_project(tmp_path)
    before, progress_before = tree_bytes(root / "tinytorch"), Project(root).progress_file.read_bytes()
    t0 = time.monotonic()
    r = _tito(root, "module", "complete", 1)
    duration = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    after = tree_bytes(root / "tinytorch")
    assert after != before and b"# mine" in after["core/tensor.py"]
    rng = random.Random(seed)
    seen = {"before": 0, "after": 0, "recovered": 0}
    for i in range(10):
        _put_back(root, before, progress_before)
        p = _popen(root, "module", "complete", 1)
        time.sleep(duration * (i + rng.random()) / 10)        # spread over the whole command
        p.kill()
        p.wait()
        r = _tito(root, "module", "status")                    # any tito command recovers
        assert r.returncode == 0, r.stdout + r.stderr
        tree, done = _state(root)
        if tree == before:
            assert not done, "package rolled back but progress says completed"
            seen["before"] += 1
        else:
            assert tree == after, f"trial {i}: tinytorch/ is neither the old nor the new package"
            assert done, "new package but no progress recorded"
            seen["after"] += 1
        if "was interrupted before it finished" in r.stderr:
            assert "restored to what they were before it" in r.stderr
            seen["recovered"] += 1
        assert not Journal(Project(root)).dir.exists()
        ok = subprocess.run([sys.executable, "-c", "import tinytorch.core.tensor"], cwd=root, env=_env(root),
                            timeout=60)
        assert ok.returncode == 0
    assert seen["recovered"] >= 1, seen       # some kills landed while the package was being changed


def test_sigterm_restores_at_once(tmp_path):
    """`timeout` sends SIGTERM: the command itself puts the package back before it exits."""
    root = _ready_project(tmp_path)
    before = tree_bytes(root / "tinytorch")
    ws = root / "workspace" / "01_tensor" / "tensor.py"
    ws.write_text(ws.read_text().replace("def test_add():\n", "def test_add():\n    import time; time.sleep(60)\n"))
    p = _popen(root, "module", "complete", 1)
    deadline = time.monotonic() + 60
    while b"# mine" not in (root / "tinytorch" / "core" / "tensor.py").read_bytes():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "Interrupted; tinytorch/ was restored exactly as it was" in out
    assert tree_bytes(root / "tinytorch") == before           # restored by the command, not by recovery
    assert not Journal(Project(root)).dir.exists()
    assert not Progress(Project(root)).completed(Project(root).module(1))


def test_two_completes_at_once_one_waits(tmp_path):
    root = _ready_project(tmp_path)
    a = _popen(root, "module", "complete", 1)
    lock = Project(root).state_dir / "lock"
    deadline = time.monotonic() + 60
    while not (lock.is_file() and lock.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    b = _popen(root, "module", "complete", 1)
    out_a, _ = a.communicate(timeout=120)
    out_b, _ = b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    assert "Waiting for 'tito module complete 1' (pid " in out_b
    tree, done = _state(root)
    assert done and b"# mine" in tree["core/tensor.py"]


def test_second_command_refuses_while_the_lock_is_held(tmp_path):
    root = _ready_project(tmp_path)
    before = tree_bytes(root / "tinytorch")
    env = _env(root)
    env["TITO_LOCK_WAIT"] = "0"
    with exclusive(Project(root), "tito module complete 2"):
        for cmd in (("module", "complete", 1), ("export",), ("module", "reset", 1)):
            r = _tito(root, *cmd, env=env)
            assert r.returncode == 1, r.stdout
            assert ("Another tito command is changing tinytorch/: 'tito module complete 2' (pid "
                    f"{os.getpid()}") in r.stderr
            assert "Traceback" not in r.stderr
    assert tree_bytes(root / "tinytorch") == before


def test_a_failing_and_a_passing_complete_at_once_leave_no_failing_code(tmp_path):
    root = _ready_project(tmp_path)
    assert _tito(root, "module", "complete", 1).returncode == 0
    assert _tito(root, "module", "start", 2).returncode == 0
    (root / "workspace" / "02_grad" / "grad.py").write_text(GRAD_NB.replace("return add(x, x)", "return x"))
    good = tree_bytes(root / "tinytorch")
    procs = [_popen(root, "module", "complete", 2), _popen(root, "module", "complete", 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert procs[0].returncode == 1 and procs[1].returncode == 0, outs
    assert "tinytorch/ was restored exactly as it was" in outs[0]
    assert tree_bytes(root / "tinytorch") == good
    assert not Progress(Project(root)).completed(Project(root).module(2))


LOOP_AT_IMPORT = TENSOR_NB.replace("import numpy as np\n", "import numpy as np\nwhile True:\n    pass\n", 1)
LOOP_IN_ADD = TENSOR_NB.replace("    return np.add(a, b)\n", "    while True:\n        a = a\n", 1)


@pytest.mark.parametrize("text,doing", [
    (LOOP_AT_IMPORT, "did not finish: stopped after 4 s"),
    (LOOP_IN_ADD, "while running workspace/01_tensor/tensor.py::test_add"),
], ids=["loop-at-import", "loop-in-a-test"])
def test_looping_exported_cell_is_timed_out_named_and_restored(tmp_path, text, doing):
    root = _ready_project(tmp_path)
    before = tree_bytes(root / "tinytorch")
    ws = root / "workspace" / "01_tensor" / "tensor.py"
    ws.write_text(text)
    t0 = time.monotonic()
    r = _tito(root, "module", "complete", 1, "--timeout", 4)
    assert time.monotonic() - t0 < 40
    assert r.returncode == 1, r.stdout
    line = ws.read_text().splitlines().index("        a = a" if "test" in doing else "    pass") + 1
    assert doing in r.stderr, r.stderr
    assert any(f"(stuck at workspace/01_tensor/tensor.py line {n}" in r.stderr for n in (line - 1, line)), r.stderr
    if "test" in doing:
        assert "stopped after 4 s " + doing in r.stderr and "tito module complete 1 --timeout 8" in r.stderr
    else:
        assert "exported to tinytorch/core/tensor.py line" in r.stderr
    assert "tinytorch/ was restored exactly as it was" in r.stderr
    assert tree_bytes(root / "tinytorch") == before
    ok = subprocess.run([sys.executable, "-c", "import tinytorch.core.tensor"], cwd=root, env=_env(root), timeout=60)
    assert ok.returncode == 0
    assert not Progress(Project(root)).completed(Project(root).module(1))


def test_interrupted_journal_is_rolled_back_by_doctor_and_reported(tmp_path, monkeypatch):
    """A journal left by a crash (simulated): `tito doctor` puts everything back and says so."""
    from typer.testing import CliRunner
    from tito.cli import app
    root = _ready_project(tmp_path)
    project = Project(root)
    before, prog = tree_bytes(root / "tinytorch"), project.progress_file.read_bytes()
    j = Journal(project)
    j.begin("tito module complete 1")
    (root / "tinytorch" / "core" / "tensor.py").write_text("half written")
    (root / "tinytorch" / "core" / "new.py").write_text("x = 1\n")
    (root / "tinytorch" / "core" / ".grad.py.tito-tmp-123").write_text("stray")
    data = json.loads(prog)
    data["modules"]["01_tensor"]["completed"] = "now"
    project.progress_file.write_text(json.dumps(data))
    monkeypatch.chdir(root)
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{ROOT}")
    r = CliRunner().invoke(app, ["doctor"])
    assert "note: The last 'tito module complete 1' (pid" in r.output
    assert "was interrupted before it finished; tinytorch/ and your progress were restored" in r.output
    assert tree_bytes(root / "tinytorch") == before and project.progress_file.read_bytes() == prog
    r = CliRunner().invoke(app, ["module", "status"])
    assert "interrupted" not in r.output                      # once only


def test_a_signal_during_the_fork_of_a_test_run_is_not_lost(monkeypatch):
    """SIGTERM arriving while tito forks its pytest child (when Python runs its fork hooks, where an
    exception would be ignored) is deferred until Popen returned, then raises Interrupted and stops the child."""
    from tito import testing
    from tito.journal import Interrupted, _signals_raise
    started = []
    real_popen = subprocess.Popen

    def popen_hit_by_sigterm(*args, **kwargs):             # the signal comes in the middle of the fork
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)                                     # delivered (to any thread) and handled by now
        started.append(real_popen(*args, **kwargs))
        return started[-1]
    monkeypatch.setattr(testing.subprocess, "Popen", popen_hit_by_sigterm)
    kw = dict(stdout=subprocess.PIPE, start_new_session=True)
    with _signals_raise():
        with pytest.raises(Interrupted, match="signal 15"):
            testing._start([sys.executable, "-c", "import time; time.sleep(60)"], kw)
        assert started and started[0].poll() is not None, "the child of an interrupted start was left running"
        with pytest.raises(Interrupted, match="signal 15"):   # outside a fork the handler raises at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
