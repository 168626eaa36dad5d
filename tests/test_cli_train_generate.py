"""`tito train` and `tito generate` end to end on a tiny configuration, Ctrl-C and resume in a real
process, and every bad input: a clear message, a non-zero exit code, never a traceback."""
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinytorch
from tinytorch import checkpoints
from tinytorch import data as tdata
from tinytorch.core.layers import save
from tinytorch.training import TrainConfig, python_stdlib_corpus
from tito.main_job import HYPERPARAMETERS

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "tiny", "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--no-progress"]


@pytest.fixture(scope="module")
def corpus_text():
    return python_stdlib_corpus(("textwrap", "heapq", "bisect", "string"))


@pytest.fixture
def corpus(tmp_path, corpus_text):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text)
    return path


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    """Invoke tito in-process from tmp_path; returns (exit code, all output)."""
    from typer.testing import CliRunner
    from tito.cli import app
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYTORCH_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args])
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception                               # a crash, not a handled error: show it
        return r.exit_code, r.output
    return run


def _fails(code, output, *messages):
    assert code == 1, output
    assert "Traceback" not in output, output
    for m in messages:
        assert m in output, f"{m!r} not in:\n{output}"


@pytest.fixture
def trained(run_cli, corpus, tmp_path):
    code, out = run_cli("train", "--data", corpus, "--out", tmp_path / "run", "--sample-tokens", "40", *TINY)
    assert code == 0, out
    return tmp_path / "run", out


def test_train_then_generate(run_cli, trained):
    run, out = trained
    assert "Training a character-level GPT on" in out and "step 10: train loss" in out
    assert "Done: step 20, train loss" in out and "ms/iter" in out
    assert f"checkpoint: {run / 'ckpt.npz'}" in out and f"loss plot:  {run / 'loss.png'}" in out
    assert (run / "ckpt.npz").is_file() and (run / "loss.png").is_file() and (run / "history.json").is_file()
    args = ("generate", "--checkpoint", run, "--prompt", "def ", "--max-new-tokens", "30", "--top-k", "5")
    code, first = run_cli(*args, "--seed", "3")
    assert code == 0, first
    assert first.startswith("def ") and len(first.rstrip("\n")) >= 30
    assert run_cli(*args, "--seed", "3")[1] == first                                 # the seed fixes the sample
    code, greedy = run_cli("generate", "-c", run / "ckpt.npz", "-p", "def ", "-n", "25", "--temperature", "0")
    model, tok, _ = checkpoints.model_from_checkpoint(run)
    from tinytorch.generation import generate
    assert greedy == tok.decode(generate(model, tok.encode("def "), 25, temperature=0)) + "\n"
    code, two = run_cli("generate", "-c", run, "-n", "10", "--num-samples", "2", "--seed", "1", "--top-p", "0.9")
    assert code == 0 and "--- sample 1 of 2" in two and "--- sample 2 of 2" in two


def test_default_output_folders_and_newest_checkpoint(run_cli, corpus, tmp_path):
    for _ in range(2):
        code, out = run_cli("train", "--data", corpus, "--sample-tokens", "0", *TINY)
        assert code == 0, out
    assert "output in runs/tiny-2" in out and (tmp_path / "runs" / "tiny" / "ckpt.npz").is_file()
    code, out = run_cli("generate", "-n", "5", "--seed", "0")
    assert code == 0 and f"(checkpoint {Path('runs') / 'tiny-2' / 'ckpt.npz'})" in out, out


def test_every_hyperparameter_is_a_flag(run_cli):
    import typer
    from tito.cli import app
    assert [h[0] for h in HYPERPARAMETERS] == [f.name for f in dataclasses.fields(TrainConfig)]
    train = typer.main.get_command(app).commands["train"]
    flags = {opt for p in train.params for opt in p.opts + p.secondary_opts}
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name.replace('_', '-')}" in flags, field.name
    assert {"--block-size", "--n-layer", "--n-head", "--n-embd", "--lr", "--resume", "--out", "--preset"} <= flags
    assert run_cli("train", "--help")[0] == 0


def test_bad_training_inputs(run_cli, tmp_path, corpus, monkeypatch):
    (tmp_path / "empty.txt").write_text("")
    _fails(*run_cli("train", "--data", tmp_path / "empty.txt", *TINY), "empty.txt is empty")
    _fails(*run_cli("train", "--data", tmp_path / "nope.txt", *TINY), "no such file")
    (tmp_path / "small.txt").write_text("to be or not to be " * 10)          # 190 chars: 19 for validation
    _fails(*run_cli("train", "--data", tmp_path / "small.txt", *TINY),
           "the validation split has 19 tokens, too few for context_length 32")
    _fails(*run_cli("train", "--data", corpus, "--context-length", "100000", "--no-memory-check", *TINY),
           "too few for context_length 100000")
    _fails(*run_cli("train", "--data", corpus, "--batch-size", "0", *TINY), "--batch-size must be a positive integer")
    _fails(*run_cli("train", "--data", corpus, "--embed-dim", "30", "--num-heads", "4", *TINY),
           "--embed-dim 30 is not divisible by --num-heads 4")
    _fails(*run_cli("train", "--preset", "huge"), "unknown preset 'huge'; presets: default, shakespeare-char, tiny")
    _fails(*run_cli("train", "--data", corpus, "--tokenizer", "words", *TINY), "unknown --tokenizer 'words'")
    monkeypatch.setattr(tdata, "TINY_SHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")     # nothing listens
    monkeypatch.setattr(tdata, "TINY_SHAKESPEARE_PATH", tdata.Path("/nonexistent/tinyshakespeare.txt"))
    _fails(*run_cli("train", "--data", "shakespeare", *TINY), "could not download Tiny Shakespeare",
           "Without network access", "--data /path/to/tinyshakespeare.txt")


def test_bad_resume_and_out(run_cli, trained, corpus, tmp_path):
    run, _ = trained
    _fails(*run_cli("train", "--data", corpus, "--out", run, *TINY), "already holds a checkpoint",
           f"--resume {run}", "--overwrite")
    _fails(*run_cli("train", "--resume", run, "--embed-dim", "64"), "cannot change --embed-dim (32 -> 64)")
    _fails(*run_cli("train", "--resume", tmp_path / "nothing"), "no checkpoint at")
    code, out = run_cli("train", "--resume", run, "--max-iters", "24", "--no-progress", "--sample-tokens", "0")
    assert code == 0 and "resuming" in out and "Done: step 24" in out, out


def test_bad_generation_inputs(run_cli, trained, tmp_path):
    run, _ = trained
    _fails(*run_cli("generate", "--checkpoint", tmp_path / "missing.npz"), "no checkpoint at")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    _fails(*run_cli("generate", "--checkpoint", tmp_path / "corrupt.npz"), "not a readable tinytorch checkpoint")
    cut = tmp_path / "cut.npz"
    data = (run / "ckpt.npz").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _fails(*run_cli("generate", "--checkpoint", cut), "truncated or corrupt")
    save({"w": np.ones(3)}, tmp_path / "weights.npz")
    _fails(*run_cli("generate", "--checkpoint", tmp_path / "weights.npz"), "not a training checkpoint")
    _fails(*run_cli("generate", "-c", run, "--prompt", "caf\u00e9"),
           "the prompt cannot be encoded", "character '\u00e9' (U+00E9) at position 3 is not in the vocabulary")
    _fails(*run_cli("generate", "-c", run, "--top-p", "1.5"), "top_p must be in (0, 1]")
    _fails(*run_cli("generate", "-c", run, "--temperature", "-1"), "temperature must be a finite number >= 0")
    _fails(*run_cli("generate", "-c", run, "--top-k", "0"), "top_k must be a positive integer")
    _fails(*run_cli("generate", "-c", run, "--stop", "ab"), "a stop token must be exactly one token")
    _fails(*run_cli("generate", "-c", run / "missing"), "missing")


def _env():
    env = dict(os.environ)
    pkg = str(Path(tinytorch.__file__).resolve().parent.parent)              # the tinytorch these tests import
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([pkg, str(ROOT)] + env.get("PYTHONPATH", "").split(os.pathsep)))
    return env


def test_ctrl_c_saves_and_resume_continues(tmp_path, corpus):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tito", "train", "--preset", "tiny", "--data", str(corpus), "--out", str(out),
           "--max-iters", "100000", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "1"]
    p = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + 60
    try:
        for line in p.stdout:
            lines.append(line)
            if line.startswith("step 5/100000"):
                p.send_signal(signal.SIGINT)
                break
            assert time.time() < deadline, "".join(lines)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    text = "".join(lines) + rest
    assert p.returncode == 130, text
    assert "Traceback" not in text and "Interrupted: checkpoint of step" in text
    assert f"Continue with: tito train --resume {out}" in text
    step = checkpoints.load_checkpoint(out)["step"]
    assert step >= 5
    r = subprocess.run([sys.executable, "-m", "tito", "train", "--resume", str(out), "--max-iters", str(step + 3),
                        "--sample-tokens", "0"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming {out / 'ckpt.npz'} at step {step}" in r.stdout and f"Done: step {step + 3}" in r.stdout
