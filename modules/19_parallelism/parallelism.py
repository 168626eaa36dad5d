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
# # 19 Parallelism
# > Using every core: data parallelism over threads, gradients summed in a fixed order.
#
# NumPy runs each elementwise op (GELU, LayerNorm, the optimizer's updates) on one core;
# PyTorch spreads the same work over all of them. The remedy needs no change to the engine:
# split the batch into micro-batches, run forward and backward of each on its own thread,
# and add the gradients. NumPy releases Python's global interpreter lock inside matrix
# products *and* inside large elementwise ops, so the threads really run at the same time.
#
# You complete one function, `DataParallel.forward_backward`. Test it from the shell with
# `tito module test 19`; `tito module complete 19` tests, exports and runs the package tests.
#
# Why the result is the same as one big batch: the loss is a mean over the $N$ rows, so with
# micro-batch $i$ holding $n_i$ rows and mean loss $L_i$,
#
# $$L = \sum_i \frac{n_i}{N} L_i, \qquad \nabla L = \sum_i \frac{n_i}{N} \nabla L_i .$$

# %%
#| default_exp parallel

# %%
#| export
import contextlib
import copy
import functools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
from tinytorch.core.tensor import (KERNELS, as_tensor, get_rng, random_source, register_kernel, replaceable,
                                   set_random_source)
from tinytorch.core.autograd import grad, is_grad_enabled, no_grad, set_grad_enabled
from tinytorch.core.optimizers import Optimizer, clip_grad_norm_
from tinytorch.training import language_model_loss

# %% [markdown]
# ## 1. Cores and BLAS threads
#
# A worker per core is the default. OpenBLAS starts threads of its own inside every matrix
# product, and two workers that each start two BLAS threads on a two-core machine fight over
# the cores (OpenBLAS's idle threads spin before they sleep). So while the workers run, BLAS
# is limited to one thread each: the parallelism comes from the workers, not from BLAS.
# `threadpoolctl` does this when it is installed; without it the limit is a no-op.

# %%
#| export
def available_cores():
    "The number of CPU cores this process may run on."
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_BLAS = []

def limit_blas_threads(n=1):
    "A context in which BLAS uses at most `n` threads (a no-op context without threadpoolctl)."
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
        except ImportError:
            _BLAS.append(None)
    if _BLAS[0] is None: return contextlib.nullcontext()
    return _BLAS[0].limit(limits=n, user_api="blas")

# %% [markdown]
# ## 2. State that must be per thread
#
# Three pieces of state are shared by default, and each needs a decision once several
# threads run the same model:
#
# - **Grad mode** is already per thread in module 01, as in PyTorch, so a worker's
#   `no_grad` never switches recording off for another thread. A worker starts in the
#   default mode, so each one sets the caller's mode explicitly.
# - **Randomness.** Module 01 keeps one generator for the process, in a *random source*
#   that `set_random_source` can replace. Workers drawing dropout masks from one shared
#   generator would each get whatever draws the others left, in an order that depends on
#   timing. `PerThreadRandom` is a source with a slot per thread: a thread draws from the
#   shared generator until `local_rng(g)` gives it its own. `use_thread_local_rng()` installs
#   it, once; `DataParallel` calls it, visibly, when it starts its worker threads, and a
#   program that never starts any keeps module 01's plain source. The main thread still
#   draws from the same shared generator afterwards, so `manual_seed` and a checkpoint's
#   saved generator state mean what they meant before.
# - **Optimizer scratch buffers** (section 4, `optimizer.scratch`) are reused by every
#   step; two threads updating parameters at once must not write into the same buffer.
#   Each worker updates through a shallow copy of the optimizer (the same parameter groups
#   and the same state dict) that carries a scratch dictionary of its own.

# %%
#| export
class PerThreadRandom(threading.local):
    "A random source with a generator per thread: a thread uses the shared one until `local_rng` gives it its own."

    def __init__(self, shared):
        self.shared, self.own = shared, None          # threading.local runs this once in every thread

    @property
    def generator(self):
        return self.shared.generator if self.own is None else self.own

    @generator.setter
    def generator(self, generator):                   # manual_seed: this thread's own generator, else the shared one
        if self.own is None: self.shared.generator = generator
        else: self.own = generator


_INSTALL = threading.Lock()

def use_thread_local_rng():
    "Make tinytorch's random source a PerThreadRandom around the current one (once); return it."
    with _INSTALL:
        source = random_source()
        if not isinstance(source, PerThreadRandom):
            source = PerThreadRandom(source)
            set_random_source(source)
        return source


class local_rng:
    "Within this context the current thread draws from `generator`, whatever the other threads draw."
    def __init__(self, generator): self.generator = generator
    def __enter__(self):
        self.source = use_thread_local_rng()
        self.previous, self.source.own = self.source.own, self.generator
        return self.generator
    def __exit__(self, *exc):
        self.source.own = self.previous

# %%
import pytest
from tinytorch.core.tensor import Tensor, manual_seed, randn

def test_workers_draw_from_their_own_generators():
    source = use_thread_local_rng()
    assert random_source() is source and use_thread_local_rng() is source        # installed once
    manual_seed(3)
    barrier, seen = threading.Barrier(3), {}
    def worker(seed):
        with local_rng(np.random.default_rng(seed)):
            barrier.wait()                                                       # all three draw at once
            seen[seed] = randn(4, dtype=np.float64).data
    def plain():
        barrier.wait()
        seen["plain"] = get_rng()
    threads = [threading.Thread(target=worker, args=(s,)) for s in (1, 2)] + [threading.Thread(target=plain)]
    for t in threads: t.start()
    for t in threads: t.join()
    for s in (1, 2):
        assert np.array_equal(seen[s], np.random.default_rng(s).standard_normal(4)), s
    assert seen["plain"] is get_rng()                       # a thread without local_rng: the shared generator
    assert np.array_equal(randn(4, dtype=np.float64).data, np.random.default_rng(3).standard_normal(4))

def test_manual_seed_inside_local_rng_seeds_only_this_thread():
    manual_seed(5)
    shared = get_rng()
    with local_rng(np.random.default_rng(0)):
        manual_seed(9)
        assert np.array_equal(get_rng().random(2), np.random.default_rng(9).random(2))
    assert get_rng() is shared

# %% [markdown]
# ## 3. DataParallel
#
# `DataParallel(model, threads)` is a *runner* (module 16): `forward_backward`,
# `optimizer_step`, `mean_loss`. What makes `forward_backward` safe and deterministic:
#
# - each worker builds its own graph and gets its gradients from `autograd.grad`, which
#   returns them instead of adding into the shared `.grad` (no race);
# - the gradients are summed in micro-batch order after *all* workers finished, so the
#   result never depends on which thread was faster, and a worker's exception reaches the
#   caller before any gradient is touched;
# - every worker runs in the caller's grad mode, so under `no_grad` the threaded step fails
#   exactly as the single-thread one does;
# - each worker draws randomness (dropout) from its own generator, seeded from tinytorch's
#   generator before the work starts, so runs are reproducible;
# - each worker's gradients arrive already multiplied by its share of the batch (the
#   backward pass starts from `share * scale` instead of 1), so summing them is one addition
#   per parameter.
#
# The calling thread only waits. Running one micro-batch on it would save a thread wake-up,
# but its temporaries come from another memory arena than the pool threads', so the step's
# peak memory grows. For a large model the final additions are themselves split by size over
# the threads; for a small one they stay on the calling thread, where they cost less than a
# round trip to the pool.
#
# The optimizer still runs once per step, on the summed gradients. Every parameter's update
# is independent, so `optimizer_step` splits each group's parameters into parts of about
# equal size, one per worker, and `mean_loss` spreads a list of evaluation batches the same
# way. Each parameter and each batch gives the same numbers on any thread, so neither changes
# a result.
#
# The rest of the package asks `data_parallel(model, workers)` for a runner. It is
# replaceable: module 20 registers a runner over processes under that name.

# %%
#| export
def split_by_size(items, k):
    "Split (parameter, array, ...) tuples into at most k runs of about equal total array size, in order."
    total, parts, part, done = sum(w.size for _, w, _ in items), [], [], 0
    for item in items:
        part.append(item)
        done += item[1].size
        if done >= total * (len(parts) + 1) / k and len(parts) < k - 1:
            parts.append(part)
            part = []
    return [q for q in parts + [part] if q]


PARALLEL_SUM_MIN = 2**21        # parameters below which summing gradients on one thread beats a round trip to the pool


def _sum_gradients(part, results):
    "For each (parameter, array, j) of `part`: the sum of the workers' j-th gradients, in worker order, as a new array."
    sums = []
    for p, _, j in part:
        grads = [g[j].data for _, g in results if g[j] is not None]
        if not grads: continue
        total = np.add(grads[0], grads[1]) if len(grads) > 1 else grads[0].copy()   # never a worker's own array
        for g in grads[2:]: total += g
        sums.append((p, total))
    return sums


class DataParallel:
    "Forward and backward of each batch split over `threads` worker threads, gradients summed in a fixed order."

    def __init__(self, model, threads=None, loss_fn=None):
        self.model = model
        self.threads = available_cores() if threads in (None, 0) else int(threads)
        if self.threads < 1: raise ValueError(f"threads must be >= 1, got {threads}")
        self.loss_fn = loss_fn or language_model_loss
        self._pool = None
        if self.threads > 1:
            use_thread_local_rng()                       # the one registration: a generator per worker thread
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tinytorch-dp")
        self._scratch = weakref.WeakKeyDictionary()      # optimizer -> one scratch dict per worker

    def forward_backward(self, x, y, scale=1.0):
        """Mean loss over the batch (a float); add its gradients, times `scale`, into the parameters' .grad.

        x, y: (N, T) token ids. With one thread (or N == 1): `loss_fn(model, x, y).backward(scale)`.
        Otherwise k = min(threads, N) micro-batches, rows `round(i * N / k)` to `round((i + 1) * N / k)`.
        Draw k seeds with `get_rng().integers(0, 2**63, size=k)` before any work starts; worker i runs
        under `set_grad_enabled(<the caller's grad mode>)` and `local_rng(np.random.default_rng(seed_i))`,
        computes its loss L_i and `grad(L_i, params, gradient=share_i * scale)` (share_i = n_i / N, as an
        array of the loss's dtype), params being the model's parameters that require grad. After all
        workers ended (a worker's error is raised here, before any .grad changes): add the gradients in
        worker order into `.grad` (a parameter whose .grad is None gets a new array, never a worker's own)
        and return sum_i share_i * L_i. The result equals the one-thread result to round-off.
        """
        ### BEGIN SOLUTION
        x, y = np.asarray(x), np.asarray(y)
        n = len(x)
        k = min(self.threads, n)
        if k <= 1 or self._pool is None:             # one slice, or an empty batch: the loss says what is wrong
            loss = self.loss_fn(self.model, x, y)
            loss.backward(None if scale == 1.0 else np.asarray(scale, dtype=loss.dtype))
            return float(loss.item())
        bounds = [round(i * n / k) for i in range(k + 1)]
        params = [p for p in self.model.parameters() if p.requires_grad]
        seeds = get_rng().integers(0, 2**63, size=k)
        recording = is_grad_enabled()                    # the caller's grad mode, in every worker

        def work(i):
            lo, hi = bounds[i], bounds[i + 1]
            with set_grad_enabled(recording), local_rng(np.random.default_rng(int(seeds[i]))):
                loss = self.loss_fn(self.model, x[lo:hi], y[lo:hi])
                weight = (hi - lo) / n                   # this micro-batch's share of the mean loss
                seed = np.asarray(weight * scale, dtype=loss.dtype)    # so its gradients arrive already weighted
                return weight * float(loss.item()), grad(loss, params, gradient=seed)

        with limit_blas_threads(1):
            results = self._run([functools.partial(work, i) for i in range(k)])   # a worker's error is raised here
        items = [(p, p.data, j) for j, p in enumerate(params)]                     # before any .grad changes
        if sum(p.size for p in params) < PARALLEL_SUM_MIN: sums = [_sum_gradients(items, results)]
        else: sums = self._run([functools.partial(_sum_gradients, part, results) for part in split_by_size(items, k)])
        for part in sums:
            for p, total in part:
                if p.grad is None: p.grad = as_tensor(total)
                else: p.grad.data += total
        return sum(loss for loss, _ in results)
        ### END SOLUTION

    def _run(self, jobs):
        "Run zero-argument calls on the pool; their results in order, or the first error once all have ended."
        futures = [self._pool.submit(job) for job in jobs]
        wait(futures)
        return [f.result() for f in futures]

    def _views(self, optimizer):
        "One view of `optimizer` per worker: its groups and state, a scratch dict of the worker's own (kept across steps)."
        scratch = self._scratch.get(optimizer)
        if scratch is None:
            scratch = self._scratch[optimizer] = [scratch_buffers(optimizer)] + [{} for _ in range(self.threads - 1)]
        views = [optimizer]
        for buffers in scratch[1:]:
            view = copy.copy(optimizer)                  # shallow: the same param_groups and state objects
            view.scratch = buffers
            views.append(view)
        return views

    def optimizer_step(self, optimizer):
        "optimizer.step(), with each group's parameters split by size over the worker threads."
        if self._pool is None or type(optimizer).step is not Optimizer.step:
            return optimizer.step()                      # an optimizer with its own step() runs it as written
        views = self._views(optimizer)
        plan = [(group, split_by_size(list(optimizer._params_with_grad(group)), self.threads))
                for group in optimizer.param_groups]

        def work(i):                                     # worker i: part i of every group, with its own scratch
            for group, parts in plan:
                if i < len(parts): views[i]._update_group(group, parts[i])
        self._run([functools.partial(work, i) for i in range(self.threads)])

    def mean_loss(self, batches):
        "Mean loss over a list of (x, y) batches under no_grad, the batches spread over the worker threads."
        batches = list(batches)
        if not batches: raise ValueError("mean_loss: got no batches; pass at least one (x, y) pair")
        def one(batch):
            with no_grad():                              # grad mode is per thread: set it in the worker
                return float(self.loss_fn(self.model, *batch).item())
        if self._pool is None: return float(np.mean([one(b) for b in batches]))
        with limit_blas_threads(1):
            return float(np.mean(self._run([functools.partial(one, b) for b in batches])))

    def close(self):
        if self._pool is not None: self._pool.shutdown(wait=True)
        self._pool = None


@replaceable("data_parallel")
def data_parallel(model, workers=None, loss_fn=None):
    "The package's data-parallel runner: DataParallel over threads (module 20 registers one over processes)."
    return DataParallel(model, workers, loss_fn)


def make_train_step(model, optimizer, clip=1.0, threads=1, loss_fn=None):
    "A function step(x, y) -> loss: zero the gradients, forward and backward (over `threads` workers), clip, update."
    runner = data_parallel(model, threads, loss_fn)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(x, y):
        optimizer.zero_grad()
        loss = runner.forward_backward(x, y)
        if clip: clip_grad_norm_(params, clip)
        runner.optimizer_step(optimizer)
        return loss
    step.runner = runner
    return step

# %% [markdown]
# ## 4. Tests
#
# Every test compares the threaded runner with one thread on the same model and batch:
# equal to round-off in float64 and float32, bit for bit from run to run, and no gradient
# touched when a worker fails.

# %%
from tinytorch.core.layers import Module
from tinytorch.core.optimizers import SGD, AdamW, weight_decay_groups
from tinytorch.models.transformer import GPT

def _parallel_fixture(dtype=np.float64, dropout=0.0, seed=0):
    manual_seed(seed)
    model = GPT(vocab_size=11, embed_dim=16, num_layers=2, num_heads=2, max_seq_len=8, dropout_prob=dropout)
    if dtype == np.float64: model.double()
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 11, size=(5, 8))
    return model, x, np.roll(x, -1, axis=1)

def _grads_of(model, runner, x, y):
    model.zero_grad()
    loss = runner.forward_backward(x, y)
    return loss, [p.grad.data.copy() for p in model.parameters()]

@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("sums_on_pool", [False, True])
def test_data_parallel_equals_one_thread(dtype, tol, sums_on_pool, monkeypatch):
    if sums_on_pool: monkeypatch.setitem(globals(), "PARALLEL_SUM_MIN", 0)   # as for a large model
    model, x, y = _parallel_fixture(dtype)
    loss1, g1 = _grads_of(model, DataParallel(model, threads=1), x, y)
    loss3, g3 = _grads_of(model, DataParallel(model, threads=3), x, y)     # uneven split: 2, 1, 2 rows
    assert abs(loss1 - loss3) <= tol * abs(loss1), (loss1, loss3)
    for (name, _), a, b in zip(model.named_parameters(), g1, g3):
        assert a.dtype == b.dtype == dtype, (name, a.dtype, b.dtype)
        err = np.max(np.abs(a - b))
        assert err <= tol * max(np.max(np.abs(a)), 1e-30), f"{name}: 3 threads differ from 1 by {err:.3g}"

def test_accumulated_gradients_sum_on_the_pool_as_on_one_thread(monkeypatch):
    monkeypatch.setitem(globals(), "PARALLEL_SUM_MIN", 0)
    model, x, y = _parallel_fixture(np.float64)
    runs = []
    for threads in (1, 2):
        runner = DataParallel(model, threads)
        model.zero_grad()
        runner.forward_backward(x[:3], y[:3], scale=0.5)
        runner.forward_backward(x[3:], y[3:], scale=0.5)           # adds into the .grad the first call made
        runs.append([p.grad.data.copy() for p in model.parameters()])
    for a, b in zip(*runs):
        assert np.max(np.abs(a - b)) <= 1e-13 * max(np.max(np.abs(a)), 1e-30)

def test_data_parallel_is_deterministic():
    model, x, y = _parallel_fixture(np.float32, dropout=0.1)
    model.train()
    runs = []
    for _ in range(5):
        manual_seed(7)
        runs.append(_grads_of(model, DataParallel(model, threads=2), x, y))
    for loss, grads in runs[1:]:
        assert loss == runs[0][0] and all(np.array_equal(a, b) for a, b in zip(grads, runs[0][1]))

def test_worker_exception_leaves_gradients_untouched():
    model, x, y = _parallel_fixture()
    model.zero_grad()

    def failing_loss(m, xb, yb):
        if len(xb) < len(x) and np.array_equal(xb[-1], x[-1]): raise RuntimeError("worker failed")   # the 2nd worker
        return language_model_loss(m, xb, yb)
    with pytest.raises(RuntimeError, match="worker failed"):
        DataParallel(model, threads=2, loss_fn=failing_loss).forward_backward(x, y)
    assert all(p.grad is None for p in model.parameters())

def test_empty_batch_gets_the_losss_own_error():
    model, x, y = _parallel_fixture()
    with pytest.raises(ValueError, match=r"batch and time >= 1, got shape \(0, 8\)"):
        DataParallel(model, threads=2).forward_backward(x[:0], y[:0])

def test_data_parallel_follows_the_callers_grad_mode():
    model, x, y = _parallel_fixture()
    for threads in (1, 2):                     # under no_grad no worker builds a graph, on any thread
        with no_grad(), pytest.raises(RuntimeError, match="does not require grad"):
            DataParallel(model, threads).forward_backward(x, y)
    assert all(p.grad is None for p in model.parameters())

def test_grad_mode_is_per_thread():
    seen = {}
    def other():
        seen["enabled"] = (Tensor([1.0], requires_grad=True) * 2).requires_grad
    with no_grad():
        t = threading.Thread(target=other); t.start(); t.join()
    assert seen["enabled"]

def test_any_model_and_loss():
    "A model whose forward returns logits only and has an unhashable callable forward trains the same on 2 threads."
    class Unhashable:
        __hash__ = None
        def __init__(self, gpt): self.gpt = gpt
        def __call__(self, x): return self.gpt(x)
    class LogitsOnly(Module):
        def __init__(self, gpt):
            super().__init__()
            self.gpt, self.forward = gpt, Unhashable(gpt)
    model, x, y = _parallel_fixture()
    wrapped = LogitsOnly(model)
    loss1, g1 = _grads_of(model, DataParallel(model, 1), x, y)
    loss2, g2 = _grads_of(wrapped, DataParallel(wrapped, 2), x, y)
    assert abs(loss1 - loss2) <= 1e-13 * loss1
    assert all(np.max(np.abs(a - b)) <= 1e-13 * max(np.max(np.abs(a)), 1e-30) for a, b in zip(g1, g2))

# %%
if __name__ == "__main__":
    from tito.notebook import run_tests
    run_tests("test_workers*", "test_manual_seed*", "test_data_parallel*", "test_accumulated*",
              "test_worker_exception*", "test_grad_mode*", "test_any_model*")

# %% [markdown]
# The optimizer step and evaluation: the same numbers as on one thread, bit for bit.

# %%
def test_split_by_size_balances_in_order():
    items = [(None, np.empty(n), None) for n in (5, 1, 1, 1, 2, 8, 2)]
    parts = split_by_size(items, 2)
    assert [len(p) for p in parts] == [5, 2] and [i for p in parts for i in p] == items   # 10 and 10 elements
    assert split_by_size(items[:1], 3) == [items[:1]] and split_by_size([], 2) == []

def test_an_optimizer_with_its_own_step_runs_it():
    model, x, y = _parallel_fixture(np.float32)
    calls = []
    class Counting(SGD):
        def step(self, closure=None):
            calls.append(1)
            return super().step(closure)
    DataParallel(model, 2).optimizer_step(Counting(list(model.parameters()), lr=0.1))
    assert calls == [1]

def test_mean_loss_over_threads_equals_one_thread_and_needs_no_graph():
    model, x, y = _parallel_fixture(np.float64)
    batches = [(x[i:i + 2], y[i:i + 2]) for i in range(4)]
    serial = np.mean([language_model_loss(model, xb, yb).item() for xb, yb in batches])
    for threads in (1, 2, 3):
        assert DataParallel(model, threads).mean_loss(batches) == serial
    with pytest.raises(ValueError, match="targets"):
        DataParallel(model, 2).mean_loss([(x, y[:, :3])])                   # a worker's error reaches the caller
    with pytest.raises(ValueError, match="no batches"):
        DataParallel(model, 2).mean_loss([])

# %%
if __name__ == "__main__":
    run_tests("test_split*", "test_an_optimizer*", "test_mean_loss*")

# %% [markdown]
# ## 4. Optimizer updates without temporaries
#
# The optimizers chapter writes each update as its formula reads, for example
# `m[...] = beta1 * m + (1 - beta1) * g`: every product and sum allocates a temporary array
# as large as the parameter, several per parameter and step. The kernels below do the same
# arithmetic in place, with NumPy's `out=` and in-place operators, writing intermediate
# results into *scratch buffers*: flat arrays kept in `optimizer.scratch` (keyed by dtype and
# slot), allocated at the first step and reused by every later one. A step then allocates
# nothing, and a DataParallel worker updates through a view with scratch buffers of its own.
# Adam's kernel uses PyTorch's arrangement, which needs no array for $\hat m$:
# $w \leftarrow w - \frac{\eta}{1-\beta_1^t} \cdot m \,/\, \big(\sqrt{v}/\sqrt{1-\beta_2^t} + \varepsilon\big)$,
# with $m$ updated as $m + (1-\beta_1)(g - m)$, as PyTorch's `lerp` computes it.
#
# `SGD._update_group` and `Adam._update_group` are marked `@replaceable("sgd_update")` and
# `@replaceable("adam_update")`; `enable()` registers these kernels in their place. It is
# called in one place, `tinytorch/__init__.py`, beside the acceleration chapter's
# `accel.enable()` and under the same condition.

# %%
#| export
def scratch_buffers(optimizer):
    "The optimizer's scratch dict, (dtype, k) -> a flat array, created at its first in-place update."
    buffers = getattr(optimizer, "scratch", None)
    if buffers is None: buffers = optimizer.scratch = {}
    return buffers


def _tmp(optimizer, like, k=0):
    "Scratch array number k with the shape and dtype of `like`: a view into a buffer of `optimizer.scratch`, reused every step."
    buffers = scratch_buffers(optimizer)
    buf = buffers.get((like.dtype, k))
    if buf is None or buf.size < like.size:
        largest = max(p.size for g in optimizer.param_groups for p in g["params"])
        buf = buffers[(like.dtype, k)] = np.empty(max(largest, like.size), dtype=like.dtype)
    return buf[:like.size].reshape(like.shape)


def sgd_update(optimizer, group, params):
    "SGD._update_group in place, with scratch buffers: the same arithmetic, no temporaries."
    lr, momentum, dampening = float(group["lr"]), float(group["momentum"]), float(group["dampening"])
    weight_decay, nesterov = float(group["weight_decay"]), group["nesterov"]
    for p, w, g in params:
        d = g
        if weight_decay != 0:                                   # d = g + λ w
            d = np.multiply(w, weight_decay, out=_tmp(optimizer, w, 0))
            d += g
        if momentum != 0:
            state = optimizer.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            if buf is None:                                     # first step: b = d (allocated once)
                buf = state["momentum_buffer"] = d.copy()
            else:                                               # b = μ b + (1 - τ) d
                buf *= momentum
                if dampening != 0:
                    buf += np.multiply(d, 1 - dampening, out=_tmp(optimizer, w, 1))
                else:
                    buf += d
            if nesterov:                                        # d = d + μ b
                ahead = np.multiply(buf, momentum, out=_tmp(optimizer, w, 1))
                ahead += d
                d = ahead
            else:
                d = buf
        w += np.multiply(d, -lr, out=_tmp(optimizer, w, 0))     # w = w - η d


def adam_update(optimizer, group, params):
    "Adam._update_group in place, with scratch buffers, in PyTorch's arrangement."
    lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    decoupled = group["decoupled_weight_decay"]
    for p, w, g in params:
        state = optimizer.state.get(p)
        if state is None:                                       # first step: allocate the moments once
            state = optimizer.state[p] = {"step": 0, "exp_avg": np.zeros_like(w), "exp_avg_sq": np.zeros_like(w)}
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        if weight_decay != 0:
            if decoupled:                                       # AdamW: w = w (1 - η λ)
                w *= 1 - lr * weight_decay
            else:                                               # Adam: g = g + λ w
                decayed = np.multiply(w, weight_decay, out=_tmp(optimizer, w, 0))
                decayed += g
                g = decayed
        tmp = _tmp(optimizer, w, 1)
        np.subtract(g, m, out=tmp); tmp *= 1 - beta1; m += tmp              # m = m + (1 - β1)(g - m)
        np.multiply(g, 1 - beta2, out=tmp); tmp *= g; v *= beta2; v += tmp  # v = β2 v + (1 - β2) g²
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        np.sqrt(v, out=tmp); tmp /= bias_correction2 ** 0.5; tmp += eps    # denominator √v̂ + ε
        np.divide(m, tmp, out=tmp); tmp *= -lr / bias_correction1; w += tmp


OPTIMIZER_KERNELS = {"sgd_update": sgd_update, "adam_update": adam_update}


def enable():
    "Register the in-place optimizer updates in place of the textbook `_update_group` methods."
    for name, kernel in OPTIMIZER_KERNELS.items():
        register_kernel(name, kernel)


def disable():
    "Remove this chapter's optimizer kernels: the textbook updates run again."
    for name in OPTIMIZER_KERNELS:
        register_kernel(name, None)


def enabled():
    "True if every optimizer kernel of this chapter is registered."
    return all(KERNELS.get(name) is kernel for name, kernel in OPTIMIZER_KERNELS.items())

# %% [markdown]
# Each kernel equals its textbook twin: several steps from the same start agree to 1e-12 in
# float64 (SGD's arithmetic is even the same, bit for bit) and to float32's precision, and
# once the first steps have allocated the state and the scratch buffers, a step allocates
# nothing. The textbook runs are the package's methods with no kernel registered.

# %%
import tracemalloc
from tinytorch.core.optimizers import Adam

@contextlib.contextmanager
def optimizer_kernels(fast):
    "A context with the optimizer kernels registered (fast) or not; the previous registrations come back afterwards."
    saved = {name: KERNELS.get(name) for name in OPTIMIZER_KERNELS}
    enable() if fast else disable()
    try:
        yield
    finally:
        for name, kernel in saved.items():
            register_kernel(name, kernel)

TWINS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd_momentum_dampening_wd": lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.05),
    "sgd_nesterov_wd": lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
    "adam": lambda ps: Adam(ps, lr=1e-2, betas=(0.8, 0.95)),
    "adam_l2": lambda ps: Adam(ps, lr=1e-2, weight_decay=0.1),
    "adamw": lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1),
}

def _run_optimizer(make, dtype, fast, steps=6):
    "Parameters and state after `steps` steps on fixed gradients, with the kernels registered (fast) or not."
    rng = np.random.default_rng(7)
    params = [Tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True) for shape in ((5, 4), (4,))]
    opt = make(params)
    with optimizer_kernels(fast):
        for _ in range(steps):
            for p in params: p.grad = Tensor(rng.standard_normal(p.shape), dtype=dtype)
            opt.step()
    assert bool(getattr(opt, "scratch", None)) == fast             # the kernel ran, or the textbook method
    arrays = [p.data for p in params] + [v for p in params for k, v in sorted(opt.state.get(p, {}).items()) if k != "step"]
    return arrays

@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name", sorted(TWINS))
def test_optimizer_kernel_equals_textbook(name, dtype, rtol):
    textbook, fast = _run_optimizer(TWINS[name], dtype, False), _run_optimizer(TWINS[name], dtype, True)
    assert len(textbook) == len(fast) and len(fast) >= 2
    for a, b in zip(textbook, fast):
        assert a.dtype == b.dtype == dtype
        assert np.allclose(b, a, rtol=rtol, atol=0), (name, np.abs(b - a).max())
    if name.startswith("sgd"):                                      # the same operations, in the same order
        assert all(np.array_equal(a, b) for a, b in zip(textbook, fast))

@pytest.mark.parametrize("name", ["adamw", "adam_l2", "sgd_nesterov_wd", "sgd_momentum_dampening_wd"])
def test_optimizer_kernels_allocate_nothing_and_keep_float32(name):
    with optimizer_kernels(True):
        _steps_allocate_nothing(TWINS[name])

def _steps_allocate_nothing(make):
    rng = np.random.default_rng(0)
    big = Tensor(rng.standard_normal((1000, 1000)).astype(np.float32), requires_grad=True)
    small = Tensor(rng.standard_normal(1000).astype(np.float32), requires_grad=True)
    opt = make([big, small])
    for p in (big, small): p.grad = Tensor(rng.standard_normal(p.shape).astype(np.float32))
    arrays = [p.data for p in (big, small)]
    opt.step()                                                       # the first steps allocate state and scratch
    opt.step()
    tracemalloc.start()
    try:
        probe = np.empty(250_000, dtype=np.float32)                   # NumPy's allocations are visible: 1 MB
        assert tracemalloc.get_traced_memory()[1] >= probe.nbytes
        del probe
        tracemalloc.reset_peak()
        for _ in range(3): opt.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64_000, f"a step allocated {peak} bytes; the 4 MB parameter needs none"
    for p, arr in zip((big, small), arrays):
        assert p.data is arr and p.dtype == np.float32 and p.grad.dtype == np.float32
        assert all(v.dtype == np.float32 for k, v in opt.state[p].items() if k != "step")

@pytest.mark.parametrize("make", [lambda ps: AdamW(weight_decay_groups(ps, 0.1), lr=1e-2, betas=(0.9, 0.99)),
                                  lambda ps: SGD(ps, lr=1e-2, momentum=0.9, weight_decay=0.01)])
@pytest.mark.parametrize("fast", [True, False], ids=["kernels", "textbook"])
def test_threaded_optimizer_step_equals_optimizer_step(make, fast):
    with optimizer_kernels(fast):
        _threaded_step_equals_step(make, fast)

def _threaded_step_equals_step(make, fast):
    runs = []
    for threads in (1, 2):
        model, x, y = _parallel_fixture(np.float32, seed=3)
        optimizer, one, runner = make(list(model.parameters())), DataParallel(model, 1), DataParallel(model, threads)
        for _ in range(3):
            model.zero_grad()
            one.forward_backward(x, y)                                     # the same gradients in both runs
            runner.optimizer_step(optimizer)
        runs.append([p.data.copy() for p in model.parameters()])
        if threads == 2 and fast:                                          # each worker wrote its own buffers
            first, second = runner._scratch[optimizer]
            assert first is optimizer.scratch and first and second
            assert not {id(b) for b in first.values()} & {id(b) for b in second.values()}
    assert all(np.array_equal(a, b) for a, b in zip(*runs))              # the same bits: each update is per parameter

def test_enable_disable():
    with optimizer_kernels(False):
        enable()
        assert enabled() and KERNELS["sgd_update"] is sgd_update and KERNELS["adam_update"] is adam_update
        disable()
        assert not enabled() and all(name not in KERNELS for name in OPTIMIZER_KERNELS)

# %%
if __name__ == "__main__":
    run_tests("test_optimizer_kernel*", "test_threaded*", "test_enable_disable")

# %% [markdown]
# ## Experiments to try
#
# 1. Run `python -m benchmarks.train_step --configs A --threads 1 2`. Two threads make the
#    step faster, but not twice as fast: the optimizer and the Python work of building
#    each graph do not split as well as the matrix products.
# 2. In `forward_backward`, replace `limit_blas_threads(1)` by `limit_blas_threads(2)` and
#    time the two-thread step again: the workers and BLAS's threads now compete for the same
#    cores, and the step gets slower.
# 3. Remove `local_rng(...)` from a worker and run `test_data_parallel_is_deterministic`:
#    with dropout, both workers draw from the shared generator in whatever order they get
#    there, and the losses of the five runs no longer agree.
