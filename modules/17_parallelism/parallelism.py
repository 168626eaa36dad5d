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
# # 17 Parallelism
# > Using every core: data parallelism over threads, gradients summed in a fixed order.

# %%
#| default_exp parallel

# %%
#| export
import contextlib
import functools
import os
import threading

import numpy as np
from tinytorch.core.tensor import Tensor, _wrap, get_rng, manual_seed
from tinytorch.core.autograd import no_grad
from tinytorch.core.optimizers import Optimizer, AdamW, clip_grad_norm_, weight_decay_groups
from tinytorch.training import language_model_loss, _takes_targets

# %% [markdown]
# NumPy runs each elementwise op (GELU, LayerNorm, the optimizer's updates) on one core;
# PyTorch spreads the same work over all of them. The remedy needs no change to the engine:
# split the batch into micro-batches, run forward and backward of each on its own thread,
# and add the gradients. NumPy releases Python's global interpreter lock inside matrix
# products *and* inside large elementwise ops, so the threads really run at the same time.
#
# Why the result is the same as one big batch: the loss is a mean over the $N$ rows, so with
# micro-batch $i$ holding $n_i$ rows and mean loss $L_i$,
#
# $$L = \sum_i \frac{n_i}{N} L_i, \qquad \nabla L = \sum_i \frac{n_i}{N} \nabla L_i .$$
#
# What makes it safe and deterministic:
#
# - each worker builds its own graph and gets its gradients from `autograd.grad`, which
#   returns them instead of adding into the shared `.grad` (no race);
# - grad mode is per thread (module 01), so one thread's `no_grad` never affects another;
# - the gradients are summed in micro-batch order after *all* workers finished, so the
#   result never depends on which thread was faster, and a worker's exception reaches the
#   caller before any gradient is touched;
# - every worker runs in the caller's grad mode, so under `no_grad` the threaded step fails
#   exactly as the single-thread one does. The caller only waits: running one micro-batch
#   on the calling thread saves a thread wake-up, but we measured config B's peak memory
#   growing from 654 to 899 MiB with it (the calling thread's temporaries come from another
#   heap than the pool's);
# - each worker draws randomness (dropout) from its own generator, seeded from tinytorch's
#   generator before the work starts, so runs are reproducible;
# - BLAS is limited to one thread per worker while they run: two workers that each start
#   two BLAS threads on a two-core machine would fight over the cores (and OpenBLAS's
#   waiting threads spin, PERF_NOTES item 6). `threadpoolctl`, when installed, does this.
#
# The optimizer still runs once per step, on the summed gradients. Each worker's gradients
# arrive already multiplied by its share of the batch (the backward pass starts from
# `share * scale` instead of 1), so summing them is one addition per parameter. For a large
# model those additions are themselves split by size over the threads (config B's 10.7 M
# parameters take about 6 ms to sum on one thread, 4 ms on two); below 2 M parameters they
# stay on the calling thread, where they cost less than a round trip to the pool. Since every
# parameter's update is independent, `optimizer_step` splits the parameters into halves of
# about equal size and updates them on the two threads at once, and `mean_loss` evaluates a
# list of batches the same way (AdamW and evaluation are elementwise and BLAS work that
# releases the GIL). Each parameter and each batch gives the same numbers on any thread, so
# neither changes a result.

# %%
#| export
from concurrent.futures import ThreadPoolExecutor, wait
from tinytorch.core.autograd import grad, is_grad_enabled, set_grad_enabled
from tinytorch.core.tensor import local_rng


def available_cores():
    "The number of CPU cores this process may run on."
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_BLAS = []

def _one_blas_thread():
    "A context in which BLAS uses one thread (a no-op context without threadpoolctl)."
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
        except ImportError:
            _BLAS.append(None)
    if _BLAS[0] is None: return contextlib.nullcontext()
    return _BLAS[0].limit(limits=1, user_api="blas")


def _split_by_size(items, k):
    "Split (parameter, array, ...) tuples into at most k runs of about equal total array size, in order."
    total, parts, part, done = sum(w.size for _, w, _ in items), [], [], 0
    for item in items:
        part.append(item)
        done += item[1].size
        if done >= total * (len(parts) + 1) / k and len(parts) < k - 1:
            parts.append(part)
            part = []
    return [q for q in parts + [part] if q]


_PARALLEL_SUM_MIN = 2**21        # parameters below which summing gradients on one thread beats a round trip to the pool


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
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tinytorch-dp") if self.threads > 1 else None

    def forward_backward(self, x, y, scale=1.0):
        "Mean loss over the batch; add its gradients, times `scale`, into the parameters' .grad."
        ### BEGIN SOLUTION
        x, y = np.asarray(x), np.asarray(y)
        n = len(x)
        k = min(self.threads, n)
        if k == 1 or self._pool is None:
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

        with _one_blas_thread():
            results = self._run([functools.partial(work, i) for i in range(k)])   # a worker's error is raised here
        items = [(p, p.data, j) for j, p in enumerate(params)]                     # before any .grad changes
        if sum(p.size for p in params) < _PARALLEL_SUM_MIN: sums = [_sum_gradients(items, results)]
        else: sums = self._run([functools.partial(_sum_gradients, part, results) for part in _split_by_size(items, k)])
        for part in sums:
            for p, total in part:
                if p.grad is None: p.grad = _wrap(total)
                else: p.grad.data += total
        return sum(loss for loss, _ in results)
        ### END SOLUTION

    def _run(self, jobs):
        "Run zero-argument calls on the pool; their results in order, or the first error once all have ended."
        futures = [self._pool.submit(job) for job in jobs]
        wait(futures)
        return [f.result() for f in futures]

    def optimizer_step(self, optimizer):
        "optimizer.step(), with each group's parameters split by size over the worker threads."
        if self._pool is None or type(optimizer).step is not Optimizer.step:
            return optimizer.step()                      # an optimizer with its own step() runs it as written
        self._run([functools.partial(optimizer._update_group, group, part)
                   for group in optimizer.param_groups
                   for part in _split_by_size(list(optimizer._params_with_grad(group)), self.threads)])

    def mean_loss(self, batches):
        "Mean loss over a list of (x, y) batches under no_grad, the batches spread over the worker threads."
        batches = list(batches)
        if not batches: raise ValueError("mean_loss: got no batches; pass at least one (x, y) pair")
        def one(batch):
            with no_grad():                              # grad mode is per thread: set it in the worker
                return float(self.loss_fn(self.model, *batch).item())
        if self._pool is None: return float(np.mean([one(b) for b in batches]))
        with _one_blas_thread():
            return float(np.mean(self._run([functools.partial(one, b) for b in batches])))

    def close(self):
        if self._pool is not None: self._pool.shutdown(wait=True)
        self._pool = None


def make_train_step(model, optimizer, clip=1.0, threads=1, loss_fn=None):
    "A function step(x, y) -> loss: zero the gradients, forward and backward (over `threads`), clip, update."
    runner = DataParallel(model, threads, loss_fn)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(x, y):
        optimizer.zero_grad()
        loss = runner.forward_backward(x, y)
        if clip: clip_grad_norm_(params, clip)
        runner.optimizer_step(optimizer)
        return loss
    step.runner = runner
    return step

# %%
import pytest
from tinytorch.core.optimizers import SGD
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
    if sums_on_pool: monkeypatch.setitem(globals(), "_PARALLEL_SUM_MIN", 0)   # as for a large model
    model, x, y = _parallel_fixture(dtype)
    loss1, g1 = _grads_of(model, DataParallel(model, threads=1), x, y)
    loss3, g3 = _grads_of(model, DataParallel(model, threads=3), x, y)     # uneven split: 2, 1, 2 rows
    assert abs(loss1 - loss3) <= tol * abs(loss1)
    for a, b in zip(g1, g3):
        assert a.dtype == b.dtype == dtype
        assert np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(a)), 1e-30)

def test_takes_targets_for_methods_and_unhashable_callables():
    from tinytorch.core.layers import Module
    class Unhashable:
        __hash__ = None
        def __call__(self, x, targets=None): return x
    class NoTargets(Module):
        def forward(self, x): return x
    assert _takes_targets(GPT(11, 8, 1, 2, max_seq_len=4)) and not _takes_targets(NoTargets())
    assert _takes_targets(type("M", (), {"forward": Unhashable()})())

def test_accumulated_gradients_sum_on_the_pool_as_on_one_thread(monkeypatch):
    monkeypatch.setitem(globals(), "_PARALLEL_SUM_MIN", 0)
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

def test_split_by_size_balances_in_order():
    items = [(None, np.empty(n), None) for n in (5, 1, 1, 1, 2, 8, 2)]
    parts = _split_by_size(items, 2)
    assert [len(p) for p in parts] == [5, 2] and [i for p in parts for i in p] == items   # 10 and 10 elements
    assert _split_by_size(items[:1], 3) == [items[:1]] and _split_by_size([], 2) == []

@pytest.mark.parametrize("make", [lambda ps: AdamW(weight_decay_groups(ps, 0.1), lr=1e-2, betas=(0.9, 0.99)),
                                  lambda ps: SGD(ps, lr=1e-2, momentum=0.9, weight_decay=0.01)])
def test_threaded_optimizer_step_equals_optimizer_step(make):
    runs = []
    for threads in (1, 2):
        model, x, y = _parallel_fixture(np.float32, seed=3)
        optimizer, one, runner = make(list(model.parameters())), DataParallel(model, 1), DataParallel(model, threads)
        for _ in range(3):
            model.zero_grad()
            one.forward_backward(x, y)                                     # the same gradients in both runs
            runner.optimizer_step(optimizer)
        runs.append([p.data.copy() for p in model.parameters()])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))              # the same bits: each update is per parameter

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

