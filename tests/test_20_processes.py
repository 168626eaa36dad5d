"""Module 20 across modules: a whole training run over worker processes, and no worker outlives its parent.

The runner's own numbers (equal to one stream and to the threads, determinism, errors, dead workers) are
tested in the notebook; here the processes are started from a fresh Python and stopped every way a run
can end: an exception, Ctrl-C, `kill -9` of the parent, and the end of `tito train`.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinytorch.processes import ProcessDataParallel, can_fork
from tinytorch.parallel import DataParallel, data_parallel

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need fork")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import tinytorch
    from tinytorch.models.transformer import GPT
    from tinytorch.processes import ProcessDataParallel
    tinytorch.manual_seed(0)
    model = GPT(vocab_size=11, embed_dim=16, num_layers=2, num_heads=2, max_seq_len=8)
    runner = ProcessDataParallel(model, workers=3)
    x = np.random.default_rng(0).integers(0, 11, size=(6, 8))
    runner.forward_backward(x, np.roll(x, -1, 1))
    print(" ".join(str(p.pid) for p in runner._procs), flush=True)
    if sys.argv[1] == "raise": raise RuntimeError("the run failed")
    if sys.argv[1] == "end": sys.exit(0)
    while True:                                         # "interrupt" and "kill": keep the workers busy
        runner.forward_backward(x, np.roll(x, -1, 1))
""")


def _gone(pid):
    "True once `pid` has ended (a zombie waiting for its new parent to reap it counts as ended)."
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True
    except OSError:
        return not _exists(pid)


def _exists(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _wait_gone(pids, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


def _start(mode):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)       # its own process group, as in a terminal
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=60)
        pytest.fail(f"the script ended before starting its workers: {proc.stderr.read()}")
    pids = [int(p) for p in line.split()]              # workers that have just answered a step
    assert len(pids) == 2
    return proc, pids


@pytest.mark.parametrize("mode", ["end", "raise"])
def test_workers_end_with_their_parent(mode):
    proc, pids = _start(mode)
    assert proc.wait(timeout=60) == (0 if mode == "end" else 1)
    if mode == "raise": assert "the run failed" in proc.stderr.read()
    assert _wait_gone(pids) == [], "worker processes outlived their parent"


def test_ctrl_c_stops_the_parent_and_its_workers():
    proc, pids = _start("interrupt")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)                  # Ctrl-C in a terminal: every process of the group
    proc.wait(timeout=60)
    assert "KeyboardInterrupt" in proc.stderr.read()   # the parent got it; the workers ignored it
    assert _wait_gone(pids) == []


def test_workers_leave_when_the_parent_is_killed():
    proc, pids = _start("kill")
    time.sleep(0.3)
    proc.kill()                                        # kill -9: no cleanup code runs in the parent
    proc.wait(timeout=60)
    assert _wait_gone(pids) == [], "orphaned workers kept running after their parent was killed"


def test_a_training_run_over_processes_is_the_run_over_threads(tmp_path):
    from tinytorch.checkpoints import run
    from tinytorch.data import python_stdlib_corpus
    from tinytorch.training import get_preset
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(python_stdlib_corpus(("textwrap", "bisect")))
    config = get_preset("tiny", data=str(corpus), max_iters=6, lr_decay_iters=6, warmup_iters=1, eval_interval=3,
                        eval_iters=2, dropout=0.1, batch_size=5)
    quiet = dict(log=lambda *a: None, progress="none")
    runners = []
    def on_processes(model):
        runners.append(ProcessDataParallel(model, 2))
        return runners[-1]
    processes, _ = run(config, tmp_path / "processes", runner=on_processes, **quiet)
    threads, _ = run(config, tmp_path / "threads", runner=lambda model: DataParallel(model, 2), **quiet)
    assert processes.history == threads.history         # every loss and evaluation, bit for bit (dropout included)
    assert runners[0]._procs == [], "the run stopped its workers when it ended"
    config = config.replace(dropout=0.0)                 # without dropout: one stream's run, to float32 round-off
    processes, _ = run(config, tmp_path / "processes-0", runner=on_processes, **quiet)
    single, _ = run(config, tmp_path / "single", **quiet)
    for key in ("loss", "eval_train", "eval_val"):
        assert np.allclose(processes.history[key], single.history[key], rtol=2e-5, atol=0), key


def test_the_package_registers_processes():
    import tinytorch
    model = __import__("tinytorch.models.transformer", fromlist=["GPT"]).GPT(11, 16, 1, 2, max_seq_len=8)
    expected = ProcessDataParallel if tinytorch._kernels_setting() != "textbook" else DataParallel
    runner = data_parallel(model, 2)
    try:
        assert type(runner) is expected
    finally:
        runner.close()
