# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---


# %% [markdown]
# # 17 Checkpoints
# > What a training run leaves behind: checkpoints that load safely, the exact loss, the loss curve, a whole run in one call.
#
# Module 16's `Trainer` trains and writes `ckpt.npz`. A run is more than that loop: someone
# must read the checkpoint back (to sample, to resume, to export), judge the model by a
# number that is not itself noisy, see the curve, and start the whole job from one command
# without two runs overwriting each other. This module builds those pieces, the way
# `tito train` and `tito generate` use them:
#
# 1. **The exact loss.** `evaluate_loss` averages the loss over *every* window of a split.
# 2. **Reading a checkpoint.** `check_checkpoint` validates every entry of a file anyone may
#    have edited or truncated; `model_from_checkpoint` rebuilds the model and its tokenizer.
# 3. **A whole run.** `run(config, out_dir)` locks the folder, prepares the data, trains,
#    and writes the checkpoint, `history.json` and the loss curve `loss.png`; with `resume=`
#    it continues a checkpoint, refusing settings or text that would make it a different run.
#
# **How to test.** You write the exact evaluation in `evaluate_loss` and the settings check
# of `resume_config`. In Jupyter, the `run_tests(...)` cell after each group prints PASS, FAIL
# (with where and by how much) or TODO per test. From the shell, `tito module test 17` runs the
# notebook's tests, and `tito module complete 17` tests, exports and runs the package tests
# (`tests/test_17_checkpoints.py`: whole runs, resuming, corrupt files, missing extras).

# %%
#| default_exp checkpoints

# %%
#| export
import contextlib
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import no_grad
from tinytorch.core.layers import load, CheckpointError
from tinytorch.data import DataError, load_text, prepare_data, tokenizer_from_dict, make_tokenizer, write_atomic
from tinytorch.models.transformer import GPTConfig, count_parameters
from tinytorch.training import (CHECKPOINT_FORMAT, RunFolderError, TrainConfig, Trainer, build_model,
                                language_model_loss)

# %% [markdown]
# ## 1. The exact loss of a split
#
# During training, `Trainer.estimate_loss` reports the mean loss of `eval_iters` random
# batches, as nanoGPT does: cheap, but a sample. On Tiny Shakespeare its 20 batches of
# 12 x 64 characters put it within about ±0.02 of the true value, enough to follow a run but
# not to compare two runs that differ by less. `evaluate_loss` measures a split exactly: cut
# the tokens into $n = \lfloor (N - 1) / T \rfloor$ non-overlapping windows of $T$ inputs
# (each target is the next token), and average the loss over all of them:
#
# $$L = \frac{1}{n}\sum_{b} |b|\,\bar L_b,$$
#
# where $\bar L_b$ is the mean loss of batch $b$ of windows and $|b|$ its number of windows
# (the last batch may be smaller, so the batch means are weighted by their sizes).

# %%
#| export
def evaluate_loss(model, data, context_length, batch_size=64):
    "Mean next-token loss over every non-overlapping window of `data` (no sampling noise), under no_grad."
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"evaluate_loss: batch_size must be a positive integer, got {batch_size!r}")
    n = (len(data) - 1) // context_length
    if n < 1: raise DataError(f"the data has {len(data):,} tokens, too few for one window of {context_length + 1}")
    # Hint: windows x = data[:n*T] as (n, T), targets shifted by one; weight each batch's loss by its rows.
    ### BEGIN SOLUTION
    x = np.asarray(data[:n * context_length], dtype=np.int64).reshape(n, context_length)
    y = np.asarray(data[1:n * context_length + 1], dtype=np.int64).reshape(n, context_length)
    was_training, total = model.training, 0.0
    model.eval()
    try:
        with no_grad():
            for i in range(0, n, batch_size):
                total += language_model_loss(model, x[i:i + batch_size], y[i:i + batch_size]).item() * len(x[i:i + batch_size])
    finally:
        model.train(was_training)
    return total / n
    ### END SOLUTION

# %%
import pytest
from tito.notebook import run_tests, assert_close

def _tiny_config(**overrides):
    return TrainConfig(**{**dict(context_length=16, batch_size=4, num_layers=1, num_heads=2, embed_dim=16,
                                 max_iters=10, lr_decay_iters=10, warmup_iters=2, eval_interval=5, eval_iters=4,
                                 learning_rate=1e-2), **overrides})

def test_evaluate_loss_averages_every_window():
    manual_seed(0)
    model = build_model(_tiny_config(), 12)
    data = np.random.default_rng(0).integers(0, 12, 170)          # (170 - 1) // 16 = 10 windows
    exact = evaluate_loss(model, data, 16, batch_size=3)           # batches of 3, 3, 3 and 1 windows
    whole = language_model_loss(model, data[:160].reshape(10, 16), data[1:161].reshape(10, 16)).item()
    assert_close(exact, whole, rtol=1e-6, atol=0, name="loss over every window, batched against all at once")
    assert model.training                                           # the mode is restored
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate_loss(model, data, 16, batch_size=0)
    with pytest.raises(DataError, match="the data has 16 tokens, too few for one window of 17"):
        evaluate_loss(model, data[:16], 16)

if __name__ == "__main__":
    run_tests("test_evaluate_loss_averages_every_window")

# %% [markdown]
# ## 2. Reading a checkpoint
#
# `Trainer.state_dict` (module 16) is a dictionary: a `format` tag, the step, the
# configuration, the weights, the AdamW moments, both generator states, the tokenizer and
# the loss history, saved with module 05's `save`. It is read back from a file anyone may
# have edited, truncated or crafted, so loading it is *total*: `check_checkpoint` walks every
# entry before anything is built and raises a `CheckpointError` naming the key and what it
# should be (the configuration's fields with their types, the tokenizer's characters,
# weights that are finite floating-point arrays, the tied `lm_head.weight` equal to
# `token_embedding.weight`, a history of numbers, generator states a generator accepts).

# %%
#| export
_CHECKPOINT_KEYS = ("step", "config", "model", "optimizer", "rng", "tokenizer", "history")
_HISTORY_KEYS = ("step", "loss", "lr", "eval_step", "eval_train", "eval_val")


def _is_number(v): return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_arrays(node, where, path):
    "Every array in a nest of dicts/lists is numeric, and finite if floating-point."
    stack = [(node, where)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, np.ndarray):
            if node.dtype.kind not in "biuf": raise CheckpointError(f"{path}: {where} has dtype {node.dtype}")
            if node.dtype.kind == "f" and not np.isfinite(node).all():
                raise CheckpointError(f"{path}: {where} holds NaN or infinite values (saved from a diverged run?)")
        elif isinstance(node, dict): stack.extend((v, f"{where}.{k}") for k, v in node.items())
        elif isinstance(node, (list, tuple)): stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))


def _check_tokenizer_dict(d, path):
    if not isinstance(d, dict): raise CheckpointError(f"{path}: tokenizer is a {type(d).__name__}, expected a dict or None")
    kind = d.get("type")
    if kind == "char":
        chars = d.get("chars")
        if (not isinstance(chars, list) or not chars or not all(isinstance(c, str) and len(c) == 1 for c in chars)
                or len(set(chars)) != len(chars)):
            raise CheckpointError(f"{path}: tokenizer.chars must be a non-empty list of distinct one-character strings")
    elif kind in ("bpe", "gpt2"):
        blob, lengths, merges = d.get("bytes"), d.get("lengths"), d.get("merges")
        if not (isinstance(blob, np.ndarray) and blob.dtype == np.uint8 and blob.ndim == 1):
            raise CheckpointError(f"{path}: tokenizer.bytes must be a 1-D uint8 array")
        if not (isinstance(lengths, np.ndarray) and lengths.dtype.kind in "iu" and lengths.ndim == 1 and lengths.size
                and lengths.min() >= 1 and int(lengths.sum()) == blob.size):
            raise CheckpointError(f"{path}: tokenizer.lengths must be positive integers that add up to tokenizer.bytes' size")
        if not (isinstance(merges, np.ndarray) and merges.dtype.kind in "iu" and merges.ndim == 2 and merges.shape[1] == 2
                and (merges.size == 0 or (merges.min() >= 0 and merges.max() < lengths.size))):
            raise CheckpointError(f"{path}: tokenizer.merges must be an (n, 2) array of token ids below {lengths.size}")
        specials = d.get("special_tokens")
        if not isinstance(specials, list) or not all(isinstance(t, str) for t in specials):
            raise CheckpointError(f"{path}: tokenizer.special_tokens must be a list of strings")
        if d.get("pattern") is not None and not isinstance(d.get("pattern"), str):
            raise CheckpointError(f"{path}: tokenizer.pattern must be a string or None")
    else:
        raise CheckpointError(f"{path}: unknown tokenizer type {kind!r} (expected 'char', 'bpe' or 'gpt2')")


def check_checkpoint(ckpt, path="the checkpoint"):
    "Raise CheckpointError unless `ckpt` has every entry of a training checkpoint, with the right types and finite weights."
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
        raise CheckpointError(f"{path} is a tinytorch file but not a training checkpoint (format {fmt!r}, "
                              f"expected {CHECKPOINT_FORMAT})")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing: raise CheckpointError(f"{path} is incomplete: no {', '.join(missing)}")
    step = ckpt["step"]
    if type(step) is not int or step < 0: raise CheckpointError(f"{path}: step must be an integer >= 0, got {step!r}")
    config = ckpt["config"]
    if not isinstance(config, dict): raise CheckpointError(f"{path}: config is a {type(config).__name__}, expected a dict")
    for f in dataclasses.fields(TrainConfig):
        if f.name in config:
            v = config[f.name]
            ok = (type(v) is f.type) or (f.type is float and _is_number(v))
            if not ok: raise CheckpointError(f"{path}: config.{f.name} is {v!r}, expected a {f.type.__name__}")
    try:
        TrainConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: the config is not valid: {e}") from None
    model = ckpt["model"]
    if not isinstance(model, dict) or not model:
        raise CheckpointError(f"{path}: model must be a non-empty dict of weight arrays, got {type(model).__name__}")
    for k, v in model.items():
        if not isinstance(k, str) or not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            raise CheckpointError(f"{path}: model[{k!r}] must be a floating-point array, got {type(v).__name__}")
    _check_arrays(model, "model", path)
    tied = model.get("lm_head.weight"), model.get("token_embedding.weight")
    if tied[0] is not None and tied[1] is not None and not np.array_equal(*tied):
        raise CheckpointError(f"{path}: lm_head.weight differs from token_embedding.weight, but GPT ties them")
    if not isinstance(ckpt["optimizer"], dict): raise CheckpointError(f"{path}: optimizer must be a dict")
    _check_arrays(ckpt["optimizer"], "optimizer", path)
    rng = ckpt["rng"]
    if not isinstance(rng, dict) or not all(isinstance(rng.get(k), dict) for k in ("data", "tinytorch")):
        raise CheckpointError(f"{path}: rng must be a dict with the generator states 'data' and 'tinytorch'")
    for k in ("data", "tinytorch"):
        try:
            np.random.PCG64().state = dict(rng[k])
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise CheckpointError(f"{path}: rng.{k} is not a generator state: {e}") from None
    if ckpt["tokenizer"] is not None: _check_tokenizer_dict(ckpt["tokenizer"], path)
    history = ckpt["history"]
    if (not isinstance(history, dict) or set(history) != set(_HISTORY_KEYS)
            or not all(isinstance(v, list) and all(_is_number(x) for x in v) for v in history.values())):
        raise CheckpointError(f"{path}: history must be a dict of number lists with keys {', '.join(_HISTORY_KEYS)}")
    if not len(history["step"]) == len(history["loss"]) == len(history["lr"]) or not (
            len(history["eval_step"]) == len(history["eval_train"]) == len(history["eval_val"])):
        raise CheckpointError(f"{path}: the history's lists have different lengths")
    if "best_val_loss" in ckpt and not _is_number(ckpt["best_val_loss"]):
        raise CheckpointError(f"{path}: best_val_loss must be a number")
    data = ckpt.get("data", {})
    if not isinstance(data, dict) or not isinstance(data.get("sha256", ""), str):
        raise CheckpointError(f"{path}: data must be a dict whose sha256 is a string")
    return ckpt

# %% [markdown]
# `load_checkpoint` reads a file, or the `ckpt.npz` of a run folder, and checks it.
# `model_from_checkpoint` rebuilds the trained model (in `eval()` mode) and its tokenizer,
# all that `tito generate` needs. It first compares the parameter count the configuration
# declares with the weights the file holds, so a configuration that claims `embed_dim`
# 200000 is refused before the model is allocated (447 GiB).

# %%
#| export
def load_checkpoint(path):
    "Read a training checkpoint (a file, or a run folder holding ckpt.npz); CheckpointError if it is not one."
    path = Path(path)
    if path.is_dir(): path = path / "ckpt.npz"
    if not path.is_file(): raise CheckpointError(f"no checkpoint at {path}")
    ckpt = check_checkpoint(load(path), path)
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt):
    "(model in eval mode, tokenizer, TrainConfig) rebuilt from a checkpoint or its path."
    ckpt = check_checkpoint(ckpt, ckpt.get("path", "the checkpoint")) if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    where = ckpt.get("path", "the checkpoint")
    if ckpt["tokenizer"] is None: raise CheckpointError(f"{where} holds no tokenizer")
    config = TrainConfig.from_dict(ckpt["config"])
    try:
        tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    except Exception as e:                         # checked above; any remaining inconsistency is still a bad file
        raise CheckpointError(f"{where}: the tokenizer cannot be rebuilt: {type(e).__name__}: {e}") from None
    declared = count_parameters(GPTConfig(vocab_size=tokenizer.vocab_size, max_seq_len=config.context_length,
                                          embed_dim=config.embed_dim, num_layers=config.num_layers,
                                          num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, bias=config.bias))
    held = sum(v.size for k, v in ckpt["model"].items() if k != "lm_head.weight")
    if declared != held:
        raise CheckpointError(f"the weights in {where} do not fit its configuration: the config (vocabulary "
                              f"{tokenizer.vocab_size}, embed_dim {config.embed_dim}, {config.num_layers} layers, context "
                              f"{config.context_length}) declares {declared:,} parameters, the file holds {held:,}")
    model = build_model(config, tokenizer.vocab_size)
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"the weights in {where} do not fit its configuration: {e}") from None
    return model.eval(), tokenizer, config

# %%
def _tiny_trainer(folder, **overrides):
    from tinytorch.data import python_stdlib_corpus
    from tinytorch.text.tokenization import CharTokenizer
    text = python_stdlib_corpus(("textwrap", "bisect"))
    tok = CharTokenizer.from_text(text)
    train, val, _ = prepare_data(text, tok, Path(folder) / "data")
    config = _tiny_config(**overrides)
    manual_seed(config.seed)
    return Trainer(build_model(config, tok.vocab_size), train, val, config, tok, folder, log=lambda *a: None,
                   progress="none")

def test_checkpoint_rebuilds_the_trained_model(tmp_path):
    trainer = _tiny_trainer(tmp_path)
    trainer.fit()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 10 and ckpt["tokenizer"]["type"] == "char" and ckpt["path"] == str(tmp_path / "ckpt.npz")
    model, tok, config = model_from_checkpoint(ckpt)
    assert config == trainer.config and tok.itos == trainer.tokenizer.itos and not model.training
    x = np.asarray(trainer.val_data[:32], dtype=np.int64).reshape(2, 16)
    trainer.model.eval()
    assert np.array_equal(model(x).data, trainer.model(x).data)          # the same weights, bit for bit

def test_bad_entries_are_named(tmp_path):
    trainer = _tiny_trainer(tmp_path, max_iters=0)
    good = trainer.state_dict()
    def broken(change):
        ckpt = {**good, "model": dict(good["model"]), "config": dict(good["config"])}
        change(ckpt)
        return ckpt
    cases = [(lambda c: c.pop("rng"), "is incomplete: no rng"),
             (lambda c: c["config"].update(embed_dim="16"), "config.embed_dim is '16', expected a int"),
             (lambda c: c["model"].update({"ln_f.weight": np.full(16, np.nan, np.float32)}), "holds NaN or infinite"),
             (lambda c: c["model"].update({"lm_head.weight": good["model"]["lm_head.weight"] + 1}), "differs from"),
             (lambda c: c.update(format="other"), "not a training checkpoint")]
    for change, message in cases:
        with pytest.raises(CheckpointError, match=message):
            check_checkpoint(broken(change))
    vocab = len(good["tokenizer"]["chars"])
    held = sum(a.size for a in good["model"].values()) - 16 * vocab           # the tied head counted once
    declared = 256 * vocab + 16 * 256 + 12 * 256 ** 2 + 3 * 256              # tokens, positions, one block, three norms
    with pytest.raises(CheckpointError, match=f"declares {declared:,} parameters, the file holds {held:,}"):
        model_from_checkpoint(broken(lambda c: c["config"].update(embed_dim=256)))

if __name__ == "__main__":
    run_tests("test_checkpoint_rebuilds_the_trained_model", "test_bad_entries_are_named")

# %% [markdown]
# ## 3. A whole run
#
# `run(config, out_dir)` is the whole job: read and tokenize the corpus, write the token
# files, build the model from the seed, train with module 16's `Trainer`, and write
# `history.json` and the loss curve `loss.png` beside the checkpoint. Three rules keep a run
# folder sound:
#
# - **One run per folder.** `run_folder_lock` holds an exclusive lock on `out_dir/.lock` (with
#   the owner's process id in it) for the whole run; a second run into the same folder fails
#   at once with a `RunFolderError` instead of interleaving checkpoints.
# - **No debris.** Every file is written to a hidden temporary file (`.ckpt.npz.<random>.tmp`)
#   and renamed, so a killed run leaves at most such a file; `remove_stale_temporary_files`
#   deletes those when the next run takes the lock.
# - **A resumed run is the same run.** With `resume=`, the configuration and tokenizer come
#   from the checkpoint, the corpus must be the same text (its SHA-256 is compared), and
#   `resume_config` allows only `RESUMABLE_FIELDS` to change: a longer `max_iters`, other
#   evaluation and logging intervals, the corpus's path.
#
# `plot_losses` draws the curve with matplotlib's object API (no global pyplot state) when
# matplotlib, an optional extra, is installed; without it the run says so and goes on.

# %%
#| export
RESUMABLE_FIELDS = ("data", "max_iters", "eval_interval", "eval_iters", "log_interval")


def resume_config(saved, **changes):
    "The saved TrainConfig with `changes`; only RESUMABLE_FIELDS may differ, others raise ValueError."
    saved = saved if isinstance(saved, TrainConfig) else TrainConfig.from_dict(saved)
    # Hint: collect the changes outside RESUMABLE_FIELDS whose value differs from the saved one; name each in the error.
    ### BEGIN SOLUTION
    fixed = {k: v for k, v in changes.items() if k not in RESUMABLE_FIELDS and getattr(saved, k) != v}
    if fixed:
        raise ValueError("a resumed run keeps the checkpoint's settings; cannot change "
                         + ", ".join(f"{k} ({getattr(saved, k)!r} -> {v!r})" for k, v in fixed.items())
                         + f". Only {', '.join(RESUMABLE_FIELDS)} may change.")
    return saved.replace(**changes)
    ### END SOLUTION


def _draw_losses(ax, history, title):
    "The batch losses and the evaluations of `history` on the matplotlib axes `ax`."
    if history["step"]:
        ax.plot(history["step"], history["loss"], lw=0.8, alpha=0.45, color="tab:blue", label="train batch")
    if history["eval_step"]:
        ax.plot(history["eval_step"], history["eval_train"], "o-", color="tab:blue", ms=3, label="train (eval)")
        ax.plot(history["eval_step"], history["eval_val"], "o-", color="tab:orange", ms=3, label="val (eval)")
    ax.set_xlabel("step"); ax.set_ylabel("cross-entropy (nats per token)"); ax.set_title(title)
    ax.grid(alpha=0.3); ax.legend()


def plot_losses(history, path, title="Training loss"):
    "Save the loss curve as a PNG; return its path, or None when matplotlib is not installed."
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return None
    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)
    _draw_losses(fig.add_subplot(), history, title)
    fig.tight_layout()
    path = Path(path)
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
    return path


RUN_FILES = ("ckpt.npz", "history.json", "loss.png", "sample.txt")


@contextlib.contextmanager
def run_folder_lock(out_dir):
    "Hold `out_dir`/.lock while a run writes the folder; a second run into it gets a RunFolderError at once."
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise RunFolderError(f"cannot use the run folder {out_dir}: {e.strerror or e}") from None
    try:
        try:
            import fcntl
        except ImportError:                        # Windows: no advisory locks; one run per folder is up to the user
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise RunFolderError(f"{out_dir} is in use by another training run (process {owner}); wait for it "
                                     "to finish, or choose another output folder") from None
            os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield out_dir
    finally:
        os.close(fd)


def remove_stale_temporary_files(out_dir):
    "Delete the temporary files that a run killed mid-write left behind (call it while holding the lock)."
    removed = []
    for folder in (Path(out_dir), Path(out_dir) / "data"):
        if not folder.is_dir() or folder.is_symlink(): continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and (p.is_file() or p.is_symlink()):
                p.unlink(); removed.append(p)
    return removed


def _write_run_files(trainer, out_dir, config, log, first_error=None):
    "history.json and loss.png, atomically; with `first_error` pending, a failure here is only noted."
    targets = ((out_dir / "history.json", lambda f: f.write(json.dumps(trainer.history).encode())),
               (out_dir / "loss.png", None))
    for path, write in targets:
        try:
            if write is not None:
                write_atomic(path, write)
            elif plot_losses(trainer.history, path, title=f"GPT on {Path(str(config.data)).name}") is None:
                log("matplotlib is not installed: no loss plot (pip install 'tinytorch[plot]'); "
                    f"the losses are in {out_dir / 'history.json'}")
        except OSError as e:
            if first_error is None:
                raise RunFolderError(f"could not write {path}: {e.strerror or e}") from None
            log(f"(could not write {path} either: {e.strerror or e})")


def run(config, out_dir, resume=None, log=print, progress="auto", callbacks=(), overwrite=True, runner=None):
    """Train `config` end to end into `out_dir` (or continue the checkpoint `resume`); returns (trainer, result).

    The folder is locked for the run; with `overwrite=False` a new run refuses a folder that holds a checkpoint."""
    out_dir = Path(out_dir)
    with run_folder_lock(out_dir):
        if resume is None and not overwrite and (out_dir / "ckpt.npz").exists():
            raise RunFolderError(f"{out_dir} already holds a checkpoint; continue it with resume, or choose another folder")
        for p in remove_stale_temporary_files(out_dir):
            log(f"removed {p.name}, left by a run that was killed while writing it")
        return _run_locked(config, out_dir, resume, log, progress, callbacks, runner)


def _run_locked(config, out_dir, resume, log, progress, callbacks, runner):
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None and config is None: config = TrainConfig.from_dict(ckpt["config"])
    text = load_text(config.data)
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"]) if ckpt is not None else make_tokenizer(config.tokenizer, text)
    try:
        train, val, meta = prepare_data(text, tokenizer, out_dir / "data", config.val_fraction)
    except KeyError as e:                            # a character the checkpoint's vocabulary lacks
        raise DataError(f"{config.data} does not fit the checkpoint's tokenizer: {e}") from None
    info = {"source": str(config.data), "sha256": meta["text_sha256"], "chars": len(text),
            "train_tokens": meta["train_tokens"], "val_tokens": meta["val_tokens"]}
    if ckpt is not None and ckpt.get("data", {}).get("sha256") not in (None, info["sha256"]):
        raise DataError(f"{config.data} is not the text the checkpoint was trained on (SHA-256 "
                        f"{info['sha256'][:12]}..., the checkpoint's is {ckpt['data']['sha256'][:12]}...)")
    manual_seed(config.seed)
    model = build_model(config, tokenizer.vocab_size)
    log(f"data: {config.data}: {len(text):,} characters (sha256 {info['sha256'][:12]}), vocabulary "
        f"{tokenizer.vocab_size}, {info['train_tokens']:,} train and {info['val_tokens']:,} val tokens")
    log(f"model: GPT with {model.num_parameters():,} parameters ({config.num_layers} layers, {config.num_heads} heads, "
        f"width {config.embed_dim}, context {config.context_length})")
    trainer = Trainer(model, train, val, config, tokenizer, out_dir, log=log, progress=progress, data_info=info,
                      runner=None if runner is None else runner(model))
    trainer.callbacks.extend(callbacks)
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
        log(f"resuming {ckpt['path']} at step {trainer.step}")
    try:
        result = trainer.fit()
    except BaseException as e:                       # report this error, not a later one from writing the files
        _write_run_files(trainer, out_dir, config, log, first_error=e)
        raise
    finally:
        getattr(trainer.parallel, "close", lambda: None)()       # a runner's worker threads or processes end here
    _write_run_files(trainer, out_dir, config, log)
    return trainer, result


# %%
def _corpus_file(folder):
    from tinytorch.data import python_stdlib_corpus
    path = Path(folder) / "corpus.txt"
    path.write_text(python_stdlib_corpus(("textwrap", "bisect")))
    return path

def test_resume_config_allows_only_resumable_fields():
    saved = _tiny_config().to_dict()
    assert resume_config(saved, max_iters=20, eval_interval=2) == _tiny_config(max_iters=20, eval_interval=2)
    assert resume_config(saved, num_layers=1).num_layers == 1                # an unchanged value is not a change
    with pytest.raises(ValueError, match=r"cannot change num_layers \(1 -> 2\), learning_rate \(0.01 -> 0.1\)\. "
                                         r"Only data, max_iters, eval_interval, eval_iters, log_interval may change"):
        resume_config(saved, num_layers=2, learning_rate=0.1, max_iters=20)

def test_a_resumed_run_is_the_same_run(tmp_path):
    from tinytorch.training import get_preset
    config = get_preset("tiny", data=str(_corpus_file(tmp_path)), max_iters=8, lr_decay_iters=8, warmup_iters=1,
                        eval_interval=2, eval_iters=2)
    quiet = dict(log=lambda *a: None, progress="none")
    straight, _ = run(config, tmp_path / "straight", **quiet)
    run(config.replace(max_iters=4), tmp_path / "twice", **quiet)
    saved = load_checkpoint(tmp_path / "twice")
    resumed, result = run(resume_config(saved["config"], max_iters=8), tmp_path / "twice", resume=saved["path"], **quiet)
    assert result.step == 8 and result.steps_run == 4
    assert resumed.history == straight.history                          # every loss and evaluation, bit for bit
    with pytest.raises(RunFolderError, match="already holds a checkpoint"):
        run(config, tmp_path / "twice", overwrite=False, **quiet)

def test_one_run_per_folder_and_no_debris(tmp_path):
    pytest.importorskip("fcntl", reason="advisory file locks exist on POSIX systems only")
    with run_folder_lock(tmp_path):
        with pytest.raises(RunFolderError, match=rf"in use by another training run \(process {os.getpid()}\)"):
            with run_folder_lock(tmp_path): pass
    with run_folder_lock(tmp_path): pass                                   # released
    (tmp_path / "data").mkdir()
    stale = [tmp_path / ".ckpt.npz.tmp", tmp_path / "data" / ".train.bin.tmp"]
    kept = [tmp_path / "ckpt.npz", tmp_path / ".lock", tmp_path / "notes.tmp"]
    for p in stale + kept: p.write_bytes(b"x")
    assert sorted(remove_stale_temporary_files(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)

if __name__ == "__main__":
    run_tests("test_resume_config_allows_only_resumable_fields", "test_a_resumed_run_is_the_same_run",
              "test_one_run_per_folder_and_no_debris")

# %% [markdown]
# ## 4. The loss curve of a run
#
# The whole job on a small corpus: the `tiny` preset trains for 100 steps (a few seconds) and
# writes `ckpt.npz`, `history.json` and `loss.png` into a temporary folder. `tito train` runs
# the same function with the `default` preset: 3000 steps of the 4-layer model on the
# Python-source corpus. The thin line is the loss of each training batch, noisy because every
# batch is different; the dots are the periodic estimates on fixed batches of each split. On
# a model this small the two splits stay close: it underfits rather than memorises. The cell
# also prints the exact validation loss beside the last estimate.

# %%
if __name__ == "__main__":
    import tempfile
    from tinytorch.data import python_stdlib_corpus
    from tinytorch.training import get_preset
    with tempfile.TemporaryDirectory() as _folder:
        _corpus = Path(_folder) / "corpus.txt"
        _corpus.write_text(python_stdlib_corpus(("textwrap", "heapq", "bisect", "string")))
        _trainer, _result = run(get_preset("tiny", data=str(_corpus)), Path(_folder) / "run", progress="none")
        print(f"{_result.status} after {_result.step} steps, {_result.ms_per_iter:.1f} ms/iter; "
              f"files: {sorted(p.name for p in (Path(_folder) / 'run').iterdir())}")
        try:
            _exact = evaluate_loss(_trainer.model, _trainer.val_data, _trainer.config.context_length)
            print(f"val loss: estimate {_result.val_loss:.4f}, exact over every window {_exact:.4f}")
        except NotImplementedError as e:
            print("exact val loss skipped until evaluate_loss is written:", e)
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: skipping the loss curve (the losses are in the run's history.json)")
    else:
        from tito.notebook import in_notebook
        if not in_notebook(): matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        _draw_losses(ax, _trainer.history, "GPT (tiny preset) on Python source")
        fig.tight_layout()
        plt.show() if in_notebook() else plt.close(fig)

# %% [markdown]
# ## Experiments to try
#
# 1. Measure the sampling noise of the estimate: on the demo's model, compare
#    `evaluate_loss` on the validation split with `Trainer.estimate_loss` for `eval_iters`
#    5, 20 and 100 (with different seeds): the estimates scatter around the exact value, and
#    the scatter shrinks about as $1/\sqrt{\texttt{eval\_iters}}$.
# 2. Open a checkpoint with `load`, change `config["num_layers"]` to 3, `save` it and call
#    `model_from_checkpoint`: the error gives the parameter count the configuration declares
#    and the count the file holds, before any model is built.
# 3. Start `tito train --preset tiny --out runs/same` in two terminals at once: the second stops
#    immediately and names the first one's process id.
# 4. Resume a finished `tiny` run with `tito train --resume runs/same --max-iters 200`, then try
#    adding `--learning-rate 0.01`: the refusal names the setting and lists what may change.
