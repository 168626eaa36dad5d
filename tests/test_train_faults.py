"""Training, generation and the CLI under bad input and faults (issue 17): every case ends in a one-line
error that names the flag, file or key, a non-zero exit code and no traceback, and nothing saved earlier
is lost. Every subprocess is bounded by a timeout; the tests that start real tito processes are marked slow."""
import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tinytorch
from tinytorch import training
from tinytorch.generation import generate
from tinytorch.models.transformer import GPT
from tinytorch.training import TrainConfig, Trainer, TrainingDiverged, python_stdlib_corpus

try:                                             # runs and checkpoint files: module 17 when it exists, else 16
    from tinytorch import checkpoints as runs
except ImportError:
    runs = training

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120                                   # seconds for one tito process; a hang fails instead of blocking
FAST = ["--preset", "tiny", "--eval-iters", "1", "--no-progress", "--sample-tokens", "0"]


@pytest.fixture(scope="module")
def corpus_text():
    return python_stdlib_corpus(("textwrap", "heapq", "bisect"))


@pytest.fixture
def corpus(tmp_path, corpus_text):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text)
    return path


def _env():
    env = dict(os.environ)
    pkg = str(Path(tinytorch.__file__).resolve().parent.parent)              # the tinytorch these tests import
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([pkg, str(ROOT)] + env.get("PYTHONPATH", "").split(os.pathsep)))
    return env


def tito(cwd, *args):
    "Run `python -m tito args` in cwd; (exit code, stdout + stderr)."
    r = subprocess.run([sys.executable, "-m", "tito", *map(str, args)], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=TIMEOUT)
    return r.returncode, r.stdout + r.stderr


def one_line_error(code, output, *needles):
    "Exit code 1, no traceback, and the error is one line that holds every needle."
    assert code == 1, output
    assert "Traceback" not in output and "RuntimeWarning" not in output, output
    last = output.strip().splitlines()[-1]
    for n in needles:
        assert n in last, f"{n!r} not in the last line:\n{output}"
    return last


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    "tito in-process from tmp_path (fast, for errors raised before training starts); (exit code, output)."
    from typer.testing import CliRunner
    from tito.cli import app
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args])
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return r.exit_code, r.output
    return run


# ------------------------------------------------------------------------------ flags ----
BAD_FLAGS = [
    (["--grad-clip", "nan"], ["--grad-clip must be a finite number, got nan"]),
    (["--lr", "inf"], ["--learning-rate (--lr) must be a finite number, got inf"]),
    (["--seed", "-1"], ["--seed must be an integer >= 0, got -1"]),
    (["--max-iters", "0"], ["--max-iters must be at least 1", "got 0"]),
    (["--batch-size", "0"], ["--batch-size must be a positive integer"]),
    (["--sample-tokens", "-1"], ["--sample-tokens must be >= 0"]),
    (["--threads", "100000"], ["--threads 100000 is far more than this machine's", "(0: one per core)"]),
]


@pytest.mark.parametrize("flags, needles", BAD_FLAGS)
def test_bad_training_flags(run_cli, corpus, flags, needles):
    last = one_line_error(*run_cli("train", "--data", corpus, "--out", "run", *FAST, *flags), *needles)
    assert "lr_decay_iters" not in last and "warmup_iters" not in last         # never blame what the user did not set
    assert not Path("run", "ckpt.npz").exists()


@pytest.mark.slow                                # real tito processes: a few seconds each
def test_bad_training_flags_in_real_processes(tmp_path, corpus):
    "The same cases through the console script's process: exit code 1, one line on stderr, no traceback."
    for flags, needles in BAD_FLAGS:
        one_line_error(*tito(tmp_path, "train", "--data", corpus, "--out", "run", *FAST, *flags), *needles)
    assert not (tmp_path / "run" / "ckpt.npz").exists()


@pytest.mark.parametrize("flags, needles", [
    (["--max-new-tokens", "-1"], ["--max-new-tokens must be >= 0, got -1"]),
    (["--num-samples", "0"], ["--num-samples must be at least 1, got 0"]),
    (["--seed", "-1"], ["--seed must be an integer >= 0, got -1"]),
    (["--top-p", "nan"], ["--top-p must be a finite number, got nan"]),
    (["--temperature", "inf"], ["--temperature must be a finite number, got inf"]),
])
def test_bad_generation_flags(run_cli, flags, needles):
    one_line_error(*run_cli("generate", *flags), *needles)


def test_memory_estimates_refuse_before_allocating(run_cli, corpus, monkeypatch):
    from tito import main_job
    monkeypatch.setattr(main_job, "available_memory", lambda: (2 * main_job.GiB, "the test's limit"))
    last = one_line_error(*run_cli("train", "--data", corpus, "--out", "run", *FAST, "--batch-size", "100000"),
                          "activations for batch 100000 x context 32", "the test's limit allows 2.0 GiB",
                          "Lower --batch-size", "--no-memory-check")
    assert re.search(r"needs about (\d[\d,.]*) GiB", last) and float(re.search(r"about ([\d,.]+) GiB", last)
                                                                       .group(1).replace(",", "")) > 2
    one_line_error(*run_cli("train", "--data", corpus, "--out", "run", *FAST, "--n-embd", "8192"),
                   "parameters and AdamW state", "--no-memory-check")
    one_line_error(*run_cli("train", "--data", corpus, "--out", "run", *FAST, "--sample-tokens", "1000000000"),
                   "--sample-tokens 1,000,000,000", "Ask for fewer tokens")
    one_line_error(*run_cli("generate", "-n", "1000000000"), "--max-new-tokens 1,000,000,000", "--no-memory-check")


@pytest.mark.slow                                # real tito processes: a few seconds each
def test_generation_flags_in_a_real_process(tmp_path, corpus):
    code, out = tito(tmp_path, "train", "--data", corpus, "--out-dir", "run", *FAST, "--max-iters", "2")   # nanoGPT's name
    assert code == 0 and (tmp_path / "run" / "ckpt.npz").is_file(), out
    one_line_error(*tito(tmp_path, "generate", "-c", "run", "-n", 10 ** 12), "--max-new-tokens 1,000,000,000,000",
                   "--no-memory-check")
    one_line_error(*tito(tmp_path, "generate", "-c", "run", "--temperature", "nan"), "--temperature must be a finite")
    code, out = tito(tmp_path, "train", "--resume", "run")
    assert code == 0 and "is a finished run" in out and "--max-iters" in out and "nan" not in out, out


# ---------------------------------------------------------------------- a diverging run ----
@pytest.mark.slow                                # real tito processes: a few seconds each
def test_diverging_run_never_saves_nan_and_says_so_in_one_line(tmp_path, corpus):
    code, out = tito(tmp_path, "train", "--data", corpus, "--out", "run", *FAST, "--max-iters", "4",
                     "--eval-interval", "1", "--lr", "1e30", "--warmup-iters", "0")
    last = one_line_error(code, out, "training diverged")          # NaN after the update: never a NumPy warning flood
    ckpt = tmp_path / "run" / "ckpt.npz"
    if ckpt.exists():                                # what was saved as good is finite and generates
        assert re.search(r"the last good checkpoint \(step \d+\) is run/ckpt.npz", last), last
        model, _, _ = runs.model_from_checkpoint(runs.load_checkpoint(ckpt))
        assert all(np.isfinite(p.data).all() for p in model.parameters())
        code, text = tito(tmp_path, "generate", "-c", "run", "-n", "5", "--seed", "0")
        assert code == 0, text
    else:
        assert "no checkpoint had been written" in last
    json.loads((tmp_path / "run" / "history.json").read_text())


def _tiny_config(**kw):
    return TrainConfig(**{**dict(data="corpus.txt", context_length=16, batch_size=4, num_layers=1, num_heads=2,
                                 embed_dim=16, max_iters=4, lr_decay_iters=4, warmup_iters=0, eval_interval=2,
                                 eval_iters=1), **kw})


def test_non_finite_optimizer_state_after_the_update_is_never_saved(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def poison(trainer, loss):                       # the loss stays finite; only the AdamW moments break
        if trainer.step == 4:
            state = next(iter(trainer.optimizer.state.values()))
            next(v for v in state.values() if isinstance(v, np.ndarray))[...] = np.nan
    with pytest.raises(TrainingDiverged, match=r"after the update of step 3 the optimizer state .* holds NaN or inf, "
                                               r"so it was not saved; the last good checkpoint \(step 2\)"):
        runs.run(_tiny_config(), tmp_path / "run", log=lambda *a: None, progress="none", callbacks=[poison])
    assert runs.load_checkpoint(tmp_path / "run")["step"] == 2


# ------------------------------------------------------------------------ file hygiene ----
def test_stale_temporaries_go_and_history_never_follows_a_symlink(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    for stale in (run / ".ckpt.npz.4242.tmp", run / ".history.json.4242.tmp", run / "data" / ".train.bin.1.tmp"):
        stale.write_bytes(b"\0" * 1000)             # what a kill -9 in the middle of a write leaves behind
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (run / "history.json").symlink_to(outside)
    logged = []
    runs.run(_tiny_config(), run, log=logged.append, progress="none")
    assert sorted(p.name for p in run.rglob("*.tmp")) == []
    assert sum("left by a run that was killed while writing it" in line for line in logged) == 3
    assert outside.read_text() == "not yours"
    assert not (run / "history.json").is_symlink()
    assert json.loads((run / "history.json").read_text())["eval_step"] == [0, 2, 4]


def test_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saving, writing = Trainer.save_checkpoint.__globals__, runs._write_run_files.__globals__
    real_save, calls, logged = saving["save"], [], []

    def save_fills_the_disk(obj, path):
        calls.append(path)
        if len(calls) == 2: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, path)

    def read_only(path, write):                     # history.json and the plot then fail too: a later error
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setitem(saving, "save", save_fills_the_disk)
    monkeypatch.setitem(writing, "write_atomic", read_only)
    with pytest.raises(training.RunFolderError) as e:
        runs.run(_tiny_config(), tmp_path / "run", log=logged.append, progress="none")
    assert str(e.value) == (f"could not write the checkpoint {tmp_path / 'run' / 'ckpt.npz'} at step 4: No space left "
                            "on device; the previous checkpoint (step 2) is intact")
    assert any("could not write" in line and "history.json either" in line for line in logged), logged
    assert runs.load_checkpoint(tmp_path / "run")["step"] == 2


@pytest.mark.slow                                # real tito processes: a few seconds each
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_file_size_limit_in_a_real_run_keeps_every_file_whole(tmp_path, corpus):
    code, out = tito(tmp_path, "train", "--data", corpus, "--out", "run", *FAST, "--max-iters", "2", "--eval-interval", "2")
    assert code == 0, out
    run = tmp_path / "run"
    assert (run / "ckpt.npz").stat().st_size > 200_000 > (run / "data" / "train.bin").stat().st_size

    def limit():                                    # writes past 200 kB fail with EFBIG, as on a full disk
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    r = subprocess.run([sys.executable, "-m", "tito", "train", "--resume", "run", "--max-iters", "4", "--no-progress",
                        "--sample-tokens", "0"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=TIMEOUT, preexec_fn=limit)
    assert one_line_error(r.returncode, r.stdout + r.stderr) == ("could not write the checkpoint run/ckpt.npz at "
                                                                 "step 4: File too large; the previous checkpoint "
                                                                 "(step 2) is intact")
    assert runs.load_checkpoint(run)["step"] == 2
    json.loads((run / "history.json").read_text())
    assert sorted(p.name for p in run.rglob("*.tmp")) == []


def test_foreign_files_named_as_checkpoints(tmp_path):
    from tinytorch.core.layers import CheckpointError, load
    np.save(tmp_path / "array.npy", np.arange(5.0))
    (tmp_path / "array.npy").rename(tmp_path / "ckpt.npz")
    (tmp_path / "notes.npz").write_text("hello, I am a text file\n")
    for read in (load, runs.load_checkpoint):
        with pytest.raises(CheckpointError, match=r"ckpt.npz is a single NumPy array \(.npy\), not a tinytorch checkpoint"):
            read(tmp_path / "ckpt.npz")
        with pytest.raises(CheckpointError, match="notes.npz is not a tinytorch checkpoint: it is a text file"):
            read(tmp_path / "notes.npz")


@pytest.mark.slow                                # real tito processes: a few seconds each
def test_two_trainers_never_share_a_folder(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs.run(_tiny_config(max_iters=2, lr_decay_iters=2), tmp_path / "run", log=lambda *a: None, progress="none")
    before = (tmp_path / "run" / "ckpt.npz").read_bytes()
    with runs.run_folder_lock(tmp_path / "run"):             # a run is writing the folder
        busy = f"run is in use by another training run (process {os.getpid()})"
        one_line_error(*tito(tmp_path, "train", "--data", corpus, "--out", "run", "--overwrite", *FAST,
                             "--max-iters", "2"), busy)
        one_line_error(*tito(tmp_path, "train", "--resume", "run", "--max-iters", "3", "--no-progress"), busy)
    assert (tmp_path / "run" / "ckpt.npz").read_bytes() == before


# ------------------------------------------------------------------------ Ctrl-C, install ----
def test_ctrl_c_while_the_flags_are_parsed_says_interrupted(monkeypatch, capsys):
    "typer turns a KeyboardInterrupt during parsing into a silent exit 130; tito says what happened."
    import tito.cli
    from tito import __main__ as entry

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(tito.cli, "Project", interrupted)      # the callback that runs before every command
    monkeypatch.setattr(sys, "argv", ["tito", "generate"])
    with pytest.raises(SystemExit) as e:
        entry.main()
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "Interrupted."


def test_export_without_the_toolchain_names_the_extra(tmp_path):
    code = textwrap.dedent("""
        import runpy, sys
        sys.modules["jupytext"] = None                      # as if the toolchain extra were not installed
        sys.argv = ["tito", "export", "--check"]
        runpy.run_module("tito", run_name="__main__")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=TIMEOUT)
    one_line_error(r.returncode, r.stdout + r.stderr, "tito export needs the development toolchain",
                   "no module named 'jupytext'", "pip install 'tinytorch[toolchain]'")


@pytest.mark.slow                                # real tito processes: a few seconds each
def test_doctor_says_what_a_missing_torch_disables(cli, in_project, monkeypatch):
    from tito import doctor
    cli("export")
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist == "torch" else real(dist))
    r = cli("doctor")
    assert r.exit_code == 0, r.output
    assert re.search(r"missing torch\s+not installed: the PyTorch parity tests are skipped", r.output), r.output
    assert "install: pip install torch==2.13.0" in r.output
    assert r.output.strip().splitlines()[-1] == ("No problems found, but torch is missing: see above for what "
                                                 "that disables.")


@pytest.mark.slow                                # real tito processes: a few seconds each
def test_a_run_that_skipped_the_pytorch_references_says_so_at_the_end(tmp_path):
    (tmp_path / "test_parity.py").write_text(textwrap.dedent("""
        import pytest
        needs_torch = pytest.mark.skipif(True, reason="PyTorch is not installed")
        @needs_torch
        def test_matches_torch(): pass
        @needs_torch
        def test_gradient_matches_torch(): pass
        def test_other(): pass
        @pytest.mark.skipif(True, reason="something else")
        def test_unrelated(): pass
    """))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "conftest",
           "--rootdir", str(tmp_path), "-c", os.devnull, "test_parity.py"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    tail = "\n".join(r.stdout.strip().splitlines()[-3:])
    assert "NOTE: 2 tests were skipped because PyTorch is not installed: the PyTorch parity checks did NOT run" in tail
    assert "1 passed, 3 skipped" in tail


# ---------------------------------------------------------------------------- library ----
def test_library_arguments_are_checked_by_name():
    model = GPT(11, 8, 1, 2, max_seq_len=8)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0 .*got '1'"):
        generate(model, [1, 2], 3, temperature="1")
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0 .*got '1'"):
        model.generate([[1, 2]], 3, temperature="1")
    with pytest.raises(TypeError, match="stop_tokens must be token ids, got the string 'a'"):
        model.generate([[1, 2]], 3, stop_tokens="a")
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0, got True"):
        model.generate([[1, 2]], True)
    with pytest.raises(ValueError, match=r"GPT: tokens must hold at least one sequence .*got shape \(0, 4\)"):
        model(np.zeros((0, 4), dtype=np.int64), np.zeros((0, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)


def test_all_targets_ignored_is_nan_with_a_warning_as_in_pytorch():
    "PyTorch's mean cross-entropy over zero targets is 0/0 = nan; tinytorch says why, and a trainer stops on it."
    model = GPT(11, 8, 1, 2, max_seq_len=8)
    with pytest.warns(RuntimeWarning, match="every target equals ignore_index=-100"):
        _, loss = model(np.ones((2, 4), dtype=np.int64), np.full((2, 4), -100))
    assert np.isnan(loss.data)
