"""Faults and bad input around training, checkpoints and the CLI: each ends in a one-line message that names
the flag, file or key, a non-zero exit code, no traceback, and nothing saved earlier lost (issue 17)."""
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinytorch
from tinytorch import training
from tinytorch.core.layers import CheckpointError, save
from tinytorch.training import python_stdlib_corpus

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "tiny", "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "1", "--no-progress",
        "--sample-tokens", "0"]


def _env(**extra):
    env = dict(os.environ, TINYTORCH_CACHE="/nonexistent-cache", **extra)
    pkg = str(Path(tinytorch.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([pkg, str(ROOT)] + env.get("PYTHONPATH", "").split(os.pathsep)))
    return env


def tito(*args, cwd, env=None, preexec_fn=None, timeout=120):
    p = subprocess.run([sys.executable, "-m", "tito", *map(str, args)], cwd=cwd, env=env or _env(),
                       capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)
    return p.returncode, p.stdout, p.stderr


def refused(result, *messages):
    code, out, err = result
    assert code == 1, out + err
    assert "Traceback" not in out + err, out + err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err                               # one line
    for m in messages:
        assert m in err, f"{m!r} not in {err!r}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(python_stdlib_corpus(("textwrap", "heapq", "bisect", "string")))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("trained") / "run"
    training.run(training.get_preset("tiny", data=str(corpus), max_iters=6, eval_interval=3, eval_iters=1),
                 folder, log=lambda *a: None, progress="none")
    return folder


# ------------------------------------------------------------------------------------- flags ----
@pytest.mark.parametrize("flags, message", [
    (["--grad-clip", "nan"], "--grad-clip must be a finite number, got nan"),
    (["--lr", "inf"], "--learning-rate (--lr) must be a finite number, got inf"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--max-iters", "0"], "--max-iters must be at least 1"),
    (["--batch-size", "100000"], "--no-memory-check"),
    (["--n-embd", "8192", "--n-head", "4"], "parameters and AdamW state"),
    (["--sample-tokens", "-3"], "--sample-tokens must be >= 0"),
    (["--beta2", "1.5"], "--beta2 must be in [0, 1)"),
])
def test_bad_flags(tmp_path, corpus, flags, message):
    refused(tito("train", "--data", corpus, "--out", tmp_path / "run", *TINY, *flags, cwd=tmp_path), message)
    assert not (tmp_path / "run" / "ckpt.npz").exists()


def test_out_dir_is_nanogpts_name_for_out(tmp_path, corpus):
    code, out, err = tito("train", "--data", corpus, "--out-dir", tmp_path / "nano", *TINY, cwd=tmp_path)
    assert code == 0, out + err
    assert (tmp_path / "nano" / "ckpt.npz").is_file() and "s in all (setup, training" in out


def test_generation_flags_and_memory(tmp_path, run_dir):
    refused(tito("generate", "-c", run_dir, "-n", "1000000000000", cwd=tmp_path), "--max-new-tokens 1,000,000,000,000",
            "--no-memory-check")
    refused(tito("generate", "-c", run_dir, "--seed", "-1", cwd=tmp_path), "--seed must be an integer >= 0")
    refused(tito("generate", "-c", run_dir, "--temperature", "nan", cwd=tmp_path), "--temperature must be a finite number")
    refused(tito("train", "--resume", run_dir, "--max-iters", "8", "--sample-tokens", "1000000000000", cwd=tmp_path),
            "--no-memory-check")


def test_resuming_a_finished_run_says_so(tmp_path, run_dir):
    code, out, err = tito("train", "--resume", run_dir, cwd=tmp_path)
    assert code == 0 and "is a finished run: it has trained 6 of 6 steps" in out and "nan" not in out, out + err


def test_ctrl_c_while_starting_up(tmp_path, corpus):
    p = subprocess.Popen([sys.executable, "-m", "tito", "train", "--data", str(corpus), "--out", str(tmp_path / "r"),
                          *TINY], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.15)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in out + err and "Interrupted" in err, out + err


def test_export_without_the_toolchain_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "jupytext").mkdir(parents=True)
    (fake / "jupytext" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'jupytext'\", name='jupytext')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake), env["PYTHONPATH"]])
    code, out, err = tito("export", "--check", cwd=ROOT, env=env)
    assert code == 1 and "Traceback" not in err and "pip install 'tinytorch[toolchain]'" in err, out + err


# ------------------------------------------------------------------------------- checkpoints ----
def test_malformed_checkpoints_in_the_cli(tmp_path, run_dir):
    np.save(tmp_path / "plain.npy", np.ones(3))
    os.replace(tmp_path / "plain.npy", tmp_path / "plain.npz")
    refused(tito("generate", "-c", tmp_path / "plain.npz", cwd=tmp_path), "a single NumPy array (.npy)")
    (tmp_path / "text.npz").write_text("hello\n")
    refused(tito("generate", "-c", tmp_path / "text.npz", cwd=tmp_path), "it is a text file")
    ckpt = training.load_checkpoint(run_dir)
    for key, value, message in (("config", [1, 2], "config is a list, expected a dict"),
                                ("config", {**ckpt["config"], "embed_dim": 200000}, "declares"),
                                ("tokenizer", {"type": "char", "chars": "abc"}, "tokenizer.chars must be"),
                                ("history", "x", "history must be"), ("model", [], "model must be")):
        bad = {k: v for k, v in ckpt.items() if k != "path"}
        bad[key] = value
        save(bad, tmp_path / "bad.npz")
        refused(tito("generate", "-c", tmp_path / "bad.npz", cwd=tmp_path), message)
        refused(tito("train", "--resume", tmp_path / "bad.npz", cwd=tmp_path), message)


def test_nan_after_the_update_is_never_saved_as_good(tmp_path, corpus):
    config = training.get_preset("tiny", data=str(corpus), max_iters=6, eval_interval=1, eval_iters=1)

    def poison_after_step_2(trainer, loss):        # as if step 2's update had produced NaN
        if trainer.step == 2: trainer.model.ln_f.weight.data[0] = np.nan

    with pytest.raises(training.TrainingDiverged, match=r"last good checkpoint \(step 2\)"):
        training.run(config, tmp_path, log=lambda *a: None, progress="none", callbacks=[poison_after_step_2])
    ckpt = training.load_checkpoint(tmp_path)          # still step 2, and finite (load_checkpoint checks it)
    assert ckpt["step"] == 2
    trainer, _ = _trainer_at(tmp_path, corpus, config)
    next(iter(trainer.optimizer.state.values()))["exp_avg_sq" if "exp_avg_sq" in next(iter(
        trainer.optimizer.state.values())) else next(iter(next(iter(trainer.optimizer.state.values()))))][...] = np.inf
    with pytest.raises(training.TrainingDiverged, match="optimizer state .* holds NaN or inf, so it was not saved"):
        trainer.save_checkpoint(tmp_path / "other.npz")
    assert not (tmp_path / "other.npz").exists()


def _trainer_at(folder, corpus, config):
    text = corpus.read_text()
    tok = training.make_tokenizer("char", text)
    train, val, _ = training.prepare_data(text, tok, Path(folder) / "data2")
    trainer = training.Trainer(training.build_model(config, tok.vocab_size), train, val, config, tok, None,
                               log=lambda *a: None, progress="none")
    trainer.load_state_dict(training.load_checkpoint(folder))
    return trainer, tok


# ------------------------------------------------------------------------------- run folders ----
def test_history_is_atomic_and_never_follows_a_symlink(tmp_path, corpus):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("history.json", "loss.png"):
        (run / name).symlink_to(outside)
    config = training.get_preset("tiny", data=str(corpus), max_iters=3, eval_interval=3, eval_iters=1)
    training.run(config, run, log=lambda *a: None, progress="none")
    assert outside.read_text() == "precious"
    assert not (run / "history.json").is_symlink() and json.loads((run / "history.json").read_text())["step"] == [0, 1, 2]
    # under a file-size limit the new history cannot be written: the old one stays whole, the error names the file
    script = (f"import resource, sys; from tinytorch import training\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))\n"
              f"c = training.get_preset('tiny', data={str(corpus)!r}, max_iters=5, eval_interval=5, eval_iters=1)\n"
              f"from tinytorch.training import Trainer\n"
              f"Trainer.save_checkpoint = lambda self, path=None: None\n"      # only history.json is limited here
              f"training.run(c, {str(run)!r}, resume={str(run)!r}, log=lambda *a: None, progress='none')\n")
    before = (run / "history.json").read_text()
    p = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "could not write" in p.stderr and "history.json" in p.stderr, p.stderr
    assert (run / "history.json").read_text() == before
    assert not [f for f in run.iterdir() if f.name.endswith(".tmp")]


def test_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, run_dir, corpus):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    size = (run / "ckpt.npz").stat().st_size
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))   # noqa: E731
    code, out, err = tito("train", "--resume", run, "--max-iters", "9", "--eval-interval", "3", "--no-progress",
                          "--sample-tokens", "0", cwd=tmp_path, preexec_fn=limit)
    refused((code, out, err), f"could not write the checkpoint {run / 'ckpt.npz'} at step 9", "File too large",
            "the previous checkpoint (step 6) is intact")
    assert training.load_checkpoint(run)["step"] == 6
    assert not [f for f in run.iterdir() if f.name.endswith(".tmp")]


def test_stale_temporary_files_are_removed_at_start(tmp_path, run_dir, corpus):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for name in (".ckpt.npz.k9x2.tmp", ".history.json.abc.tmp", "data/.train.bin.q1.tmp"):
        (run / name).write_bytes(b"half a file, left by kill -9")
    logs = []
    training.run(None, run, resume=run, log=logs.append, progress="none")
    assert not list(run.rglob("*.tmp")) and any("left by a run that was killed" in m for m in logs)


def test_two_trainers_into_one_folder(tmp_path, corpus):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "tito", "train", "--preset", "tiny", "--data", str(corpus),
                              "--out", str(out), "--max-iters", "100000", "--log-interval", "1", "--eval-interval",
                              "1000", "--eval-iters", "1", "--no-progress"], cwd=tmp_path, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:
            if line.startswith("step 3/"): break
        refused(tito("train", "--data", corpus, "--out", out, "--overwrite", *TINY, cwd=tmp_path),
                f"{out} is in use by another training run (process {first.pid})")
        refused(tito("train", "--data", corpus, "--out", out, *TINY, cwd=tmp_path), "in use by another training run")
        time.sleep(0.3)
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    refused(tito("train", "--data", corpus, "--out", out, *TINY, cwd=tmp_path), "already holds a checkpoint")


def test_read_only_folder_reports_the_checkpoint_error_first(tmp_path, corpus, monkeypatch):
    config = training.get_preset("tiny", data=str(corpus), max_iters=3, eval_interval=3, eval_iters=1)
    import tinytorch.training as T

    def no_space(obj, path):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(T, "save", no_space)
    monkeypatch.setattr(T, "plot_losses", lambda *a, **k: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    logs = []
    with pytest.raises(training.RunFolderError, match=r"could not write the checkpoint .*ckpt.npz at step 3: No space "
                                                      r"left on device; no checkpoint was written"):
        training.run(config, tmp_path / "run", log=logs.append, progress="none")
    assert any("could not write" in m and "loss.png" in m for m in logs)


# ---------------------------------------------------------------------------------- library ----
def test_library_input_checks():
    from tinytorch.core.losses import cross_entropy
    from tinytorch.core.tensor import Tensor, manual_seed
    from tinytorch.generation import generate
    from tinytorch.models.transformer import GPT
    manual_seed(0)
    model = GPT(10, 8, 1, 2, 16)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0 .* got '1'"):
        generate(model, [1], 3, temperature="1")
    with pytest.raises(TypeError, match="stop_tokens must be token ids, got the string 'a'"):
        generate(model, [1], 3, stop_tokens="a")
    with pytest.raises(ValueError, match="stop token 10 is out of range for vocab_size 10"):
        generate(model, [1], 3, stop_tokens=[10])
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0, got True"):
        generate(model, [1], True)
    with pytest.raises(ValueError, match=r"x must be token ids of shape \(batch, time\) .* got shape \(0, 4\)"):
        training.language_model_loss(model, np.zeros((0, 4), dtype=np.int64), np.zeros((0, 4), dtype=np.int64))
    with pytest.warns(RuntimeWarning, match="every target equals ignore_index=-100"):
        assert np.isnan(cross_entropy(Tensor(np.zeros((3, 5))), np.full(3, -100)).item())
    with pytest.raises(CheckpointError, match="not a file"):
        training.load_checkpoint(Path(__file__).parent.parent / "tests" / "__init__.py" / "..")
