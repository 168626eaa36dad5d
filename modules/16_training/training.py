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
# # 16 Training
# > A language model trained from token arrays: the configuration, the step, evaluation, checkpoints and safe stops.
#
# Everything so far computes one loss and its gradients. Training repeats that thousands of
# times, and the loop around it decides whether a run is fast, reproducible and safe to
# interrupt. This module builds that loop the way nanoGPT's `train.py` does:
#
# 1. **The step.** AdamW with weight decay on the matrices only, a warmup + cosine learning
#    rate, gradient clipping and gradient accumulation.
# 2. **Evaluation.** The mean loss over `eval_iters` batches of each split, under `no_grad`.
# 3. **Checkpoints.** Everything needed to continue *exactly*: weights, optimizer moments,
#    step, both random generators, the configuration and the tokenizer. A resumed run
#    produces the same losses, bit for bit, as a run that was never stopped.
#
# Failures are part of the design: a too-small corpus, a diverging loss and Ctrl-C each end
# with a clear message and an intact checkpoint. Module 17 reads the checkpoints back and
# wraps the loop into a whole run (`tito train`).
#
# **Your code, trained.** Until you complete module 18, your package runs the textbook
# functions you wrote: a step of nanoGPT's CPU configuration then takes about 1.5 times as long
# as with module 18's fused kernels, because each LayerNorm, GELU, softmax and attention is a
# chain of graph nodes that allocate and re-read their own temporaries.
#
# **How to test.** You write the runner's `forward_backward` and the trainer's `train_step`.
# In Jupyter, the `run_tests(...)` cell after each group prints PASS, FAIL (with where and by
# how much) or TODO per test. From the shell, `tito module test 16` runs the notebook's tests,
# and `tito module complete 16` tests, exports and runs the package tests
# (`tests/test_16_training.py`: resuming after Ctrl-C at any point, atomic checkpoints, NaN).

# %%
#| default_exp training

# %%
#| export
import dataclasses
import functools
import inspect
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tinytorch.core.tensor import Tensor, as_tensor, get_rng, manual_seed
from tinytorch.core.autograd import no_grad
from tinytorch.core.layers import save, load, CheckpointError
from tinytorch.core.losses import cross_entropy
from tinytorch.core.optimizers import AdamW, clip_grad_norm_, CosineWarmupSchedule, weight_decay_groups
from tinytorch.text.tokenization import CharTokenizer
from tinytorch.data import DEFAULT_CORPUS, DataError, get_batch, prepare_data, python_stdlib_corpus, tokenizer_to_dict

# %% [markdown]
# ## 1. Configuration
#
# Every hyperparameter lives in one dataclass, `TrainConfig`, saved in each checkpoint.
# Presets are named sets of overrides. `shakespeare-char` is nanoGPT's CPU configuration of
# `config/train_shakespeare_char.py` (block 64, batch 12, 4 layers, 4 heads, width 128, 2000
# iterations, lr 1e-3 decaying to 1e-4 after 100 warmup steps, dropout 0, `eval_iters` 20,
# `log_interval` 1, evaluation every 250 steps), the reference for speed and loss. `default`
# is what `tito train` runs without arguments: the same model on the Python-source corpus for
# about three minutes on two cores. `tiny` is a smoke test that runs in seconds.

# %%
#| export
@dataclasses.dataclass
class TrainConfig:
    "Every setting of a training run (nanoGPT's names in comments)."
    data: str = DEFAULT_CORPUS          # corpus: 'shakespeare' (shipped), 'python-stdlib' or a file path
    tokenizer: str = "char"             # 'char' or 'gpt2'
    val_fraction: float = 0.1           # last part of the text held out for validation
    context_length: int = 64            # block_size
    embed_dim: int = 128                # n_embd
    num_layers: int = 4                 # n_layer
    num_heads: int = 4                  # n_head
    mlp_ratio: int = 4
    dropout: float = 0.0
    bias: bool = False                  # biases in Linear and LayerNorm (nanoGPT: False)
    batch_size: int = 12
    grad_accum_steps: int = 1           # gradient_accumulation_steps
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0              # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 1
    seed: int = 1337
    threads: int = 0                    # worker threads for data parallelism (0: one per core)

    def __post_init__(self):
        positive = ("context_length", "embed_dim", "num_layers", "num_heads", "mlp_ratio", "batch_size",
                    "grad_accum_steps", "eval_interval", "eval_iters", "log_interval")
        for name in (*positive, "max_iters", "warmup_iters", "lr_decay_iters", "seed", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("val_fraction", "dropout", "learning_rate", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in positive:
            if int(getattr(self, name)) < 1: raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
            if int(getattr(self, name)) < 0: raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0: raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.val_fraction < 1.0: raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"learning rates must satisfy 0 <= min_lr <= learning_rate, got min_lr={self.min_lr}, "
                             f"learning_rate={self.learning_rate}")
        if self.lr_decay_iters <= self.warmup_iters:
            raise ValueError(f"lr_decay_iters ({self.lr_decay_iters}) must be greater than warmup_iters ({self.warmup_iters})")
        if self.tokenizer not in ("char", "gpt2"):
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}: use 'char' or 'gpt2'")
        if self.grad_clip < 0: raise ValueError(f"grad_clip must be >= 0 (0 disables it), got {self.grad_clip}")
        if self.threads < 0: raise ValueError(f"threads must be >= 0 (0: one per core), got {self.threads}")
        if self.seed < 0: raise ValueError(f"seed must be an integer >= 0, got {self.seed}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0: raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0: raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def replace(self, **changes):
        "A copy with some fields changed (validated again)."
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        "Build from a dict, ignoring keys this version does not know."
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS = {
    "default": dict(data=DEFAULT_CORPUS, max_iters=3000, lr_decay_iters=3000, eval_interval=250, eval_iters=20,
                    log_interval=50),
    "shakespeare-char": dict(data="shakespeare", context_length=64, batch_size=12, num_layers=4, num_heads=4,
                             embed_dim=128, max_iters=2000, lr_decay_iters=2000, learning_rate=1e-3, min_lr=1e-4,
                             warmup_iters=100, dropout=0.0, eval_interval=250, eval_iters=20, log_interval=1),
    "tiny": dict(context_length=32, batch_size=8, num_layers=2, num_heads=2, embed_dim=32, max_iters=100,
                 lr_decay_iters=100, warmup_iters=10, eval_interval=50, eval_iters=5, log_interval=10),
}


def get_preset(name, **overrides):
    "The TrainConfig of a named preset, with `overrides` applied."
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})

# %%
import pytest
from tito.notebook import run_tests, assert_close

def test_config_and_presets():
    c = get_preset("shakespeare-char")
    assert (c.context_length, c.batch_size, c.num_layers, c.num_heads, c.embed_dim) == (64, 12, 4, 4, 128)
    assert (c.max_iters, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters) == (2000, 1e-3, 1e-4, 100, 2000)
    assert (c.eval_interval, c.eval_iters, c.log_interval, c.dropout, c.beta2) == (250, 20, 1, 0.0, 0.99)
    assert TrainConfig.from_dict({**c.to_dict(), "from_the_future": 1}) == c
    with pytest.raises(ValueError, match="embed_dim 30 is not divisible by num_heads 4"):
        c.replace(embed_dim=30)
    with pytest.raises(ValueError, match="unknown preset 'big'; presets: default, shakespeare-char, tiny"):
        get_preset("big")

if __name__ == "__main__":
    run_tests("test_config_and_presets")

# %% [markdown]
# ## 2. The model and the loss
#
# `build_model` turns a `TrainConfig` into module 11's `GPT`. The loss is the mean
# next-token cross-entropy: a model whose `forward` takes `targets` (GPT) computes it
# itself, fused with the last layer; any other language model (TransformerLM) returns logits
# and we apply module 06's `cross_entropy`.

# %%
#| export
from tinytorch.models.transformer import GPT, GPTConfig


def build_model(config, vocab_size):
    "The GPT that `config` describes, initialised from tinytorch's generator (seed it first)."
    return GPT.from_config(GPTConfig(vocab_size=vocab_size, max_seq_len=config.context_length,
                                     embed_dim=config.embed_dim, num_layers=config.num_layers,
                                     num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                                     dropout_prob=config.dropout, bias=config.bias))


def _takes_targets(model):
    forward = getattr(model.forward, "__func__", model.forward)
    try:
        return _has_targets_parameter(forward)            # cached per function: signature() costs ~80 µs a call
    except TypeError:
        return _has_targets_parameter.__wrapped__(forward)    # an unhashable callable


@functools.lru_cache(maxsize=None)
def _has_targets_parameter(forward):
    try:
        return "targets" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def language_model_loss(model, x, y):
    "Mean next-token cross-entropy of `model` on token ids x with targets y, both (B, T)."
    x = x if isinstance(x, Tensor) else as_tensor(np.asarray(x))
    y = y if isinstance(y, Tensor) else as_tensor(np.asarray(y))
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"language_model_loss: x must be token ids of shape (batch, time) with batch and time >= 1, "
                         f"got shape {x.shape}")
    if _takes_targets(model):
        return model(x, targets=y)[1]
    logits = model(x)
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

# %% [markdown]
# The trainer touches the model through a *runner* with three methods: `forward_backward(x,
# y, scale)` (the loss of one batch, its gradients times `scale` added into `.grad`),
# `optimizer_step(optimizer)` and `mean_loss(batches)` (evaluation under `no_grad`).
# `SingleThread` is the textbook runner: the whole batch on the calling thread. Module 19's
# `DataParallel` has the same three methods and splits each batch over worker threads;
# `Trainer(..., runner=DataParallel(model, 2))` switches to it.

# %%
#| export
class SingleThread:
    "The plain runner: forward and backward of the whole batch, the optimizer's own step, evaluation under no_grad."
    def __init__(self, model, loss_fn=None):
        self.model, self.loss_fn = model, loss_fn or language_model_loss

    def forward_backward(self, x, y, scale=1.0):
        "Mean loss over the batch; add its gradients, times `scale`, into the parameters' .grad."
        ### BEGIN SOLUTION
        loss = self.loss_fn(self.model, np.asarray(x), np.asarray(y))
        loss.backward(None if scale == 1.0 else np.asarray(scale, dtype=loss.dtype))
        return float(loss.item())
        ### END SOLUTION

    def optimizer_step(self, optimizer):
        optimizer.step()

    def mean_loss(self, batches):
        "Mean loss over a list of (x, y) batches, recording no graph."
        batches = list(batches)
        if not batches: raise ValueError("mean_loss: got no batches; pass at least one (x, y) pair")
        with no_grad():
            return float(np.mean([self.loss_fn(self.model, *batch).item() for batch in batches]))

    def close(self):
        pass

# %%
def test_forward_backward_scales_the_gradients():
    manual_seed(0)
    model = build_model(get_preset("tiny", num_layers=1), 12)
    x, y = get_batch(np.random.default_rng(0).integers(0, 12, 200), 3, 16, np.random.default_rng(1))
    runner = SingleThread(model)
    loss = runner.forward_backward(x, y)
    assert_close(loss, language_model_loss(model, x, y).item(), rtol=1e-6, atol=0, name="loss")
    grads = [p.grad.data.copy() for p in model.parameters()]
    runner.forward_backward(x, y, 0.25)                       # accumulates: grad + 0.25 grad
    for p, g in zip(model.parameters(), grads):
        assert_close(p.grad.data, 1.25 * g, rtol=1e-5, atol=1e-9, name="accumulated gradient")
    assert_close(runner.mean_loss([(x, y)] * 2), loss, rtol=1e-6, atol=0, name="evaluation loss")
    with pytest.raises(ValueError, match="mean_loss: got no batches"):
        runner.mean_loss([])

if __name__ == "__main__":
    run_tests("test_forward_backward_scales_the_gradients")

# %% [markdown]
# ## 3. The training loop
#
# One optimizer step, as in nanoGPT:
#
# 1. set the learning rate of step $t$ from the warmup + cosine schedule;
# 2. for each of `grad_accum_steps` micro-batches: draw a batch, compute the loss, backward
#    with the gradient scaled by `1 / grad_accum_steps`, so the accumulated gradients are
#    those of the mean loss over all micro-batches (a larger batch in several passes);
# 3. clip the global gradient norm to `grad_clip`;
# 4. AdamW, with weight decay on the matrices only (module 07's `weight_decay_groups`).
#
# `forward_backward(x, y, scale)`, loss and gradients for one batch, is the single function
# that touches the model during training; it hands the batch to the runner.
#
# **Evaluation.** Every `eval_interval` steps and at the end, `estimate_loss` averages the
# loss of `eval_iters` batches of each split under `no_grad`, in `eval()` mode (no dropout).
# Unlike nanoGPT, which draws new evaluation batches each time, we draw the *same* batches
# every time, from a generator of their own: successive estimates differ only because the
# model changed, and evaluating consumes nothing from the training stream.
#
# **Reproducibility.** All randomness in a run comes from two generators: the data
# generator that places the batches, and tinytorch's global generator (initialisation,
# dropout). A checkpoint stores the state of both, with the weights, the AdamW moments and
# the step, so a resumed run repeats the uninterrupted run exactly.
#
# **Stopping safely.** A NaN or infinite loss (or gradient norm) stops training before the
# optimizer applies it, with a `TrainingDiverged` error that names the step and the last
# good checkpoint. Ctrl-C stops the run at once and saves a checkpoint of the last completed
# step: if it arrives during a forward or backward pass, that step is abandoned and the data
# generator rewound to its start; if it arrives while the optimizer writes the weights, the
# handler lets the update finish first, so a checkpoint never holds half an update.

# %%
#| export
CHECKPOINT_FORMAT = "tinytorch-train-v1"


class TrainingDiverged(RuntimeError):
    "The loss, the gradient norm or the updated weights became NaN or infinite; nothing of it was saved."


class RunFolderError(OSError):
    "A run folder cannot be written (disk full, read-only, in use by another run); nothing saved earlier is lost."


@dataclasses.dataclass
class TrainResult:
    "What `Trainer.fit` did."
    status: str                   # 'finished' or 'interrupted'
    step: int                     # optimizer steps completed
    train_loss: float             # last evaluation (nan if none)
    val_loss: float
    steps_run: int                # steps run by this call
    seconds: float                # wall time of those steps (evaluation excluded)
    checkpoint: object = None     # path of the last checkpoint written, or None

    @property
    def ms_per_iter(self):
        return 1000.0 * self.seconds / self.steps_run if self.steps_run else float("nan")


class _Progress:
    "A rich progress bar on a terminal, else plain lines every `log_interval` steps."
    def __init__(self, total, start, mode, log, log_interval):
        self.total, self.log, self.bar = total, log, None
        self.every = 0 if mode in (False, None, "none") else log_interval
        if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
            try:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            except ImportError:
                log("(rich is not installed: progress is printed as lines)")
            else:
                self.bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                    TextColumn("{task.fields[stats]}"),
                                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(highlight=False))
                self.task = self.bar.add_task("train", total=total, completed=start,
                                              stats="first step running (setup and first evaluation)")
                self.bar.start()

    def update(self, step, loss, lr, tokens_per_sec):
        if self.bar is not None:
            self.bar.update(self.task, completed=step,
                            stats=f"loss {loss:.4f}  lr {lr:.2e}  {tokens_per_sec:,.0f} tok/s")
        elif self.every and (step % self.every == 0 or step == self.total):
            self.log(f"step {step}/{self.total} | loss {loss:.4f} | lr {lr:.2e} | {tokens_per_sec:,.0f} tok/s")

    def message(self, text):
        if self.bar is not None: self.bar.console.print(text, markup=False)
        else: self.log(text)

    def close(self):
        if self.bar is not None: self.bar.stop()


class Trainer:
    "Trains a language model on token arrays with AdamW, warmup + cosine, clipping, accumulation and checkpoints."

    def __init__(self, model, train_data, val_data, config, tokenizer=None, out_dir=None, log=print,
                 progress="auto", data_info=None, runner=None):
        self.model, self.config, self.tokenizer, self.log, self.progress = model, config, tokenizer, log, progress
        self.train_data, self.val_data, self.data_info = train_data, val_data, dict(data_info or {})
        for name, data in (("training", train_data), ("validation", val_data)):
            if len(data) < config.context_length + 1:
                raise DataError(f"the {name} split has {len(data):,} tokens, too few for context_length "
                                f"{config.context_length} (a window needs {config.context_length + 1}); "
                                "use more text, a shorter context or a different val_fraction")
        params = list(model.parameters())
        self.optimizer = AdamW(weight_decay_groups(params, config.weight_decay), lr=config.learning_rate,
                               betas=(config.beta1, config.beta2))
        self.params = params
        self.parallel = SingleThread(model) if runner is None else runner
        self.schedule = CosineWarmupSchedule(config.learning_rate, config.min_lr, config.warmup_iters,
                                             config.lr_decay_iters)
        self.data_rng = np.random.default_rng([config.seed, 1])
        self.step = 0
        self.history = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_train": [], "eval_val": []}
        self.best_val_loss = float("inf")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.checkpoint_path = None if out_dir is None else self.out_dir / "ckpt.npz"
        self.last_checkpoint = None          # (step, path) of the last checkpoint written
        self.callbacks = []                  # called as fn(trainer, loss) after every step
        self._updating = False
        self._stop_requested = False

    # -- one step ---------------------------------------------------------------------------
    def forward_backward(self, x, y, scale=1.0):
        "Loss of one batch; add its gradients, multiplied by `scale`, into the parameters' .grad."
        ### BEGIN SOLUTION
        return self.parallel.forward_backward(x, y, scale)
        ### END SOLUTION

    def train_step(self):
        "One optimizer step over grad_accum_steps micro-batches; returns (mean loss, lr)."
        cfg = self.config
        # Set the learning rate of self.step, zero the gradients, accumulate forward_backward over the
        # micro-batches, clip, raise TrainingDiverged(self._diverged_message(...)) on a non-finite loss or
        # norm, then self._commit(loss, lr) (it updates the weights and counts the step).
        ### BEGIN SOLUTION
        lr = self.schedule.apply(self.optimizer, self.step)
        self.optimizer.zero_grad()
        total = 0.0
        for _ in range(cfg.grad_accum_steps):
            x, y = get_batch(self.train_data, cfg.batch_size, cfg.context_length, self.data_rng)
            total += self.forward_backward(x, y, 1.0 / cfg.grad_accum_steps)
        loss = total / cfg.grad_accum_steps
        norm = clip_grad_norm_(self.params, cfg.grad_clip).item() if cfg.grad_clip > 0 else 0.0
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.optimizer.zero_grad()
            raise TrainingDiverged(self._diverged_message(loss, norm, lr))
        self._commit(loss, lr)
        return loss, lr
        ### END SOLUTION

    def _commit(self, loss, lr):
        "Update the weights, count the step and log its loss, with Ctrl-C deferred until all three are done."
        self._updating = True
        try:
            self.parallel.optimizer_step(self.optimizer)
            h = self.history
            h["step"].append(self.step); h["loss"].append(loss); h["lr"].append(lr)
            self.step += 1
        finally:
            self._updating = False

    def _last_good(self):
        return (f"the last good checkpoint (step {self.last_checkpoint[0]}) is {self.last_checkpoint[1]}"
                if self.last_checkpoint else "no checkpoint had been written yet")

    def _diverged_message(self, loss, norm, lr):
        where = self._last_good()
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        return (f"training diverged at step {self.step}: {what} (learning rate {lr:.3g}). The model was not "
                f"updated with it; {where}. Try a lower learning rate, a smaller grad_clip, or more warmup.")

    # -- evaluation ---------------------------------------------------------------------------
    def estimate_loss(self):
        "Mean loss over eval_iters fixed batches of each split, under no_grad and in eval mode."
        cfg, was_training = self.config, self.model.training
        self.model.eval()
        out = {}
        try:
            for i, (split, data) in enumerate((("train", self.train_data), ("val", self.val_data))):
                rng = np.random.default_rng([cfg.seed, 2, i])
                batches = [get_batch(data, cfg.batch_size, cfg.context_length, rng) for _ in range(cfg.eval_iters)]
                out[split] = self.parallel.mean_loss(batches)
        finally:
            self.model.train(was_training)
        return out

    def _evaluate(self, progress):
        h = self.history
        if h["eval_step"] and h["eval_step"][-1] == self.step: return     # already evaluated (resumed here)
        losses = self.estimate_loss()
        if not (math.isfinite(losses["train"]) and math.isfinite(losses["val"])):
            raise TrainingDiverged(f"training diverged: the evaluation at step {self.step} gives train loss "
                                   f"{losses['train']}, val loss {losses['val']}; nothing was saved from it; "
                                   f"{self._last_good()}. Try a lower learning rate, a smaller grad_clip, or more warmup.")
        h["eval_step"].append(self.step); h["eval_train"].append(losses["train"]); h["eval_val"].append(losses["val"])
        self.best_val_loss = min(self.best_val_loss, losses["val"])
        progress.message(f"step {self.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        "Everything needed to continue this run exactly."
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "config": self.config.to_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": {"data": self.data_rng.bit_generator.state, "tinytorch": get_rng().bit_generator.state},
                "tokenizer": None if self.tokenizer is None else tokenizer_to_dict(self.tokenizer),
                "history": self.history, "best_val_loss": self.best_val_loss, "data": self.data_info}

    def load_state_dict(self, ckpt):
        "Continue from a checkpoint written by `save_checkpoint` (weights, optimizer, step, generators, history)."
        where = ckpt.get("path", "the checkpoint") if isinstance(ckpt, dict) else "the checkpoint"
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.step = int(ckpt["step"])
            self.data_rng.bit_generator.state = dict(ckpt["rng"]["data"])
            get_rng().bit_generator.state = dict(ckpt["rng"]["tinytorch"])
            self.history = {k: list(v) for k, v in ckpt["history"].items()}
            self.best_val_loss = float(ckpt.get("best_val_loss", float("inf")))
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{where} cannot be resumed: {type(e).__name__}: {e}") from None
        if ckpt.get("path"): self.last_checkpoint = (self.step, Path(ckpt["path"]))

    def _non_finite_state(self):
        "The name of the first parameter or optimizer buffer holding NaN or inf, or None."
        for name, p in self.model.named_parameters():
            if not np.isfinite(p.data).all(): return f"parameter {name}"
        for i, entries in enumerate(self.optimizer.state.values()):
            for key, value in entries.items():
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                    return f"optimizer state {key} of parameter {i}"
        return None

    def save_checkpoint(self, path=None):
        "Write the checkpoint atomically (a crash mid-write leaves the previous file intact); only finite state."
        path = Path(path or self.checkpoint_path)
        bad = self._non_finite_state()
        if bad is not None:
            raise TrainingDiverged(f"training diverged: after the update of step {self.step - 1} the {bad} holds NaN "
                                   f"or inf, so it was not saved; {self._last_good()}. Try a lower learning rate, "
                                   "a smaller grad_clip, or more warmup.")
        try:
            save(self.state_dict(), path)
        except OSError as e:
            kept = (f"the previous checkpoint (step {self.last_checkpoint[0]}) is intact"
                    if self.last_checkpoint and Path(self.last_checkpoint[1]).is_file() else "no checkpoint was written")
            raise RunFolderError(f"could not write the checkpoint {path} at step {self.step}: "
                                 f"{e.strerror or e}; {kept}") from None
        self.last_checkpoint = (self.step, path)
        return path

    # -- the loop ------------------------------------------------------------------------------
    def _on_sigint(self, signum, frame):
        if self._updating: self._stop_requested = True
        else: raise KeyboardInterrupt

    def fit(self):
        "Train until max_iters (evaluating and checkpointing every eval_interval steps) or Ctrl-C."
        cfg = self.config
        tokens_per_step = cfg.batch_size * cfg.context_length * cfg.grad_accum_steps
        progress = _Progress(cfg.max_iters, self.step, self.progress, self.log, cfg.log_interval)
        handler = None
        if threading.current_thread() is threading.main_thread():
            handler = signal.signal(signal.SIGINT, self._on_sigint)
        status, start_step, seconds, smooth = "finished", self.step, 0.0, None
        try:
            while True:
                if self.step % cfg.eval_interval == 0 or self.step >= cfg.max_iters:
                    self._evaluate(progress)
                    if self.checkpoint_path is not None and self.step > start_step:
                        self.save_checkpoint()
                if self.step >= cfg.max_iters: break
                step, snapshot = self.step, (self.data_rng.bit_generator.state, get_rng().bit_generator.state)
                t0 = time.perf_counter()
                try:
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # train_step reports NaN/inf
                        loss, lr = self.train_step()
                except KeyboardInterrupt:
                    if self.step == step:                 # the step did not complete: rewind its random draws
                        self.data_rng.bit_generator.state, get_rng().bit_generator.state = snapshot
                        self.optimizer.zero_grad()
                    raise
                dt = time.perf_counter() - t0
                seconds += dt
                smooth = dt if smooth is None else 0.9 * smooth + 0.1 * dt        # tokens/s over the last ~10 steps
                progress.update(self.step, loss, lr, tokens_per_step / smooth if smooth > 0 else 0.0)
                for fn in self.callbacks: fn(self, loss)
                if self._stop_requested: raise KeyboardInterrupt
        except KeyboardInterrupt:
            status = "interrupted"
        finally:
            progress.close()
            if handler is not None: signal.signal(signal.SIGINT, handler)
        self._stop_requested = False
        if status == "interrupted" and self.checkpoint_path is not None:
            self.save_checkpoint()
            self.log(f"Interrupted: checkpoint of step {self.step} saved to {self.checkpoint_path}")
        h = self.history
        return TrainResult(status, self.step, h["eval_train"][-1] if h["eval_step"] else float("nan"),
                           h["eval_val"][-1] if h["eval_step"] else float("nan"), self.step - start_step, seconds,
                           self.last_checkpoint[1] if self.last_checkpoint else None)

# %% [markdown]
# A tiny model on a little Python source shows the loop at work, and checks the two promises
# that matter most: the loss goes down, and a run stopped by Ctrl-C (simulated by a callback
# that raises `KeyboardInterrupt` after step 7) and resumed from its checkpoint retraces the
# uninterrupted run exactly, every loss bit for bit.

# %%
def _tiny_trainer(folder, **overrides):
    text = python_stdlib_corpus(("textwrap", "bisect"))
    tok = CharTokenizer.from_text(text)
    train, val, _ = prepare_data(text, tok, Path(folder) / "data")
    config = TrainConfig(**{**dict(context_length=16, batch_size=4, num_layers=1, num_heads=2, embed_dim=16,
                                   max_iters=20, lr_decay_iters=20, warmup_iters=2, eval_interval=10, eval_iters=4,
                                   learning_rate=1e-2), **overrides})
    manual_seed(config.seed)
    return Trainer(build_model(config, tok.vocab_size), train, val, config, tok, folder, log=lambda *a: None,
                   progress="none")

def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    full = _tiny_trainer(tmp_path / "full", dropout=0.1)
    assert full.fit().status == "finished" and full.step == 20
    assert full.history["eval_val"][-1] < full.history["eval_val"][0] - 0.5
    part = _tiny_trainer(tmp_path / "part", dropout=0.1)
    def ctrl_c_after_step_7(trainer, loss):
        if trainer.step == 7: raise KeyboardInterrupt
    part.callbacks.append(ctrl_c_after_step_7)
    assert part.fit().status == "interrupted"
    resumed = _tiny_trainer(tmp_path / "part", dropout=0.1)
    resumed.load_state_dict(load(tmp_path / "part" / "ckpt.npz"))
    assert resumed.step == 7 and resumed.fit().status == "finished"
    assert resumed.history == full.history
    assert all(np.array_equal(p.data, q.data) for p, q in zip(full.model.parameters(), resumed.model.parameters()))

@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")    # the planted inf, in the worker threads
def test_diverging_loss_stops_training(tmp_path):
    trainer = _tiny_trainer(tmp_path)
    def poison(trainer, loss):
        if trainer.step == 3: trainer.model.ln_f.weight.data[:] = np.inf
    trainer.callbacks.append(poison)
    with pytest.raises(TrainingDiverged, match="training diverged at step 3: loss (nan|inf)"):
        trainer.fit()

if __name__ == "__main__":
    run_tests("test_training_lowers_the_loss_and_resumes_exactly", "test_diverging_loss_stops_training")

# %%
if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as _folder:
        _trainer = _tiny_trainer(_folder, max_iters=60, lr_decay_iters=60, eval_interval=20)
        _trainer.log = print
        try:
            _result = _trainer.fit()
            print(f"{_result.status} after {_result.step} steps, {_result.ms_per_iter:.1f} ms/iter, "
                  f"checkpoint {Path(_result.checkpoint).name}")
        except NotImplementedError as e:
            print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. Train the tiny model above with `warmup_iters=0` and `learning_rate=5e-2`, then with
#    `grad_clip=0` as well: the first loss steps jump, and without clipping the run may diverge
#    and stop with `TrainingDiverged` naming the step.
# 2. Compare `batch_size=8, grad_accum_steps=1` with `batch_size=4, grad_accum_steps=2` on the
#    same seed: each step's gradient is that of a mean loss over eight sequences in both, so
#    the two loss curves nearly coincide while the second holds half the activations.
# 3. Set `eval_iters` to 2 and to 50 and watch how much the evaluated loss wobbles from one
#    evaluation to the next; module 17's `evaluate_loss` gives the exact value to compare with.
