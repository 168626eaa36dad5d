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
# # 20 Processes
# > Data parallelism over worker processes: no global interpreter lock between micro-batches.
#
# Module 19's threads run their matrix products at the same time, but everything else a
# micro-batch does, building the graph node by node, the small ops, the backward pass's
# bookkeeping, holds Python's global interpreter lock (GIL), and the threads take turns.
# Two threads make a step faster, but far from twice as fast.
#
# A process has an interpreter, and a lock, of its own. So here the micro-batches run in
# worker processes, and the one question is how they share the model:
#
# - the parameters live in *shared memory*: one block that the operating system maps into
#   every process, so an optimizer step in the main process is seen by every worker with
#   nothing sent;
# - each worker writes its gradients into a shared block of its own, and the main process
#   adds them up in worker order, as module 19 does;
# - only the small things travel through a pipe: the micro-batch's token ids, its random
#   seed, and the loss back.
#
# ```
#   main process (micro-batch 0)            worker process 1 (micro-batch 1)
#   forward, backward                       forward, backward
#   sum the gradients, optimizer step
#          |      ---- x, y, seed ---->             |
#          |      <------ loss -------              |
#          |                                        |
#    reads + updates                         reads parameters,
#    parameters                              writes its gradients
#          v                                        v
#   +-----------------------------------------------------------+
#   | shared memory:  parameters  |  worker 1's gradients        |
#   +-----------------------------------------------------------+
# ```
#
# The workers are made with `fork`: a copy of the main process, model included, that shares
# the blocks mapped before it was made. The main process computes the first micro-batch
# itself, so with two cores there is one worker process. Where a platform cannot fork,
# `ProcessDataParallel` falls back to module 19's threads.
#
# You complete one function, `share_parameters`. Test it from the shell with
# `tito module test 20`; `tito module complete 20` tests, exports and runs the package tests.

# %%
#| default_exp processes

# %%
#| export
import functools
import mmap
import multiprocessing
import os
import signal
import traceback
import warnings
import weakref
from multiprocessing.connection import wait

import numpy as np
from tinytorch.core.tensor import as_tensor, get_rng, register_kernel
from tinytorch.core.autograd import grad, is_grad_enabled, no_grad, set_grad_enabled
from tinytorch.parallel import PARALLEL_SUM_MIN, DataParallel, limit_blas_threads, local_rng, split_by_size

# %% [markdown]
# ## 1. Shared memory
#
# `mmap.mmap(-1, n)` asks the operating system for `n` bytes that are *shared* rather than
# private: after a `fork`, parent and child see the same pages, and a write by one is a
# write for both. NumPy puts arrays on top of such a block without copying
# (`np.frombuffer(block, dtype, count, offset)`), each starting at a multiple of 64 bytes,
# the size of a cache line, so no two arrays share one.
#
# Moving a parameter there is two lines: copy its values into an array of the block, then
# make that array the parameter's `.data`. Every in-place update afterwards (the optimizer's
# `w -= ...` of module 19) writes straight into shared memory.

# %%
#| export
ALIGN = 64          # bytes: every array starts on a cache line of its own


def shared_arrays(specs):
    "Zero-filled arrays of the given (shape, dtype)s, carved out of one block of shared memory."
    offsets, end = [], 0
    for shape, dtype in specs:
        start = -(-end // ALIGN) * ALIGN
        offsets.append(start)
        end = start + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    block = mmap.mmap(-1, max(end, 1))                 # anonymous and shared: forked children see it
    return [np.frombuffer(block, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=start).reshape(shape)
            for (shape, dtype), start in zip(specs, offsets)]


def share_parameters(params):
    """Move every parameter's values into one block of shared memory; return the new arrays.

    After it, `p.data` of each parameter is an array of that block (from `shared_arrays`) holding
    the values `p.data` held before, with the same shape and dtype, and the returned list is
    `[p.data for p in params]`. Tests: test_share_parameters_keeps_values,
    test_a_forked_child_sees_the_parents_updates.
    """
    ### BEGIN SOLUTION
    arrays = shared_arrays([(p.data.shape, p.data.dtype) for p in params])
    for p, shared in zip(params, arrays):
        shared[...] = p.data
        p.data = shared
    return arrays
    ### END SOLUTION

# %% [markdown]
# The test forks a child by hand (`os.fork()` returns 0 in the child, the child's process id
# in the parent), lets it change a parameter, and looks at the parameter in the parent.

# %%
import pytest
from tinytorch.core.tensor import Tensor, manual_seed

def test_share_parameters_keeps_values():
    rng = np.random.default_rng(0)
    params = [Tensor(rng.standard_normal((3, 5)), requires_grad=True),
              Tensor(rng.standard_normal(7).astype(np.float32), requires_grad=True)]
    before = [p.data.copy() for p in params]
    arrays = share_parameters(params)
    assert len(arrays) == 2 and all(p.data is a for p, a in zip(params, arrays))
    for p, old in zip(params, before):
        assert p.data.dtype == old.dtype and np.array_equal(p.data, old)
        assert p.data.ctypes.data % ALIGN == 0, "each array starts on a cache line"
    assert arrays[0].base is not None and arrays[1].base is not None, "views of the shared block, not copies"

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_sees_the_parents_updates():
    params = [Tensor(np.zeros(4), requires_grad=True), Tensor(np.zeros((2, 2)), requires_grad=True)]
    share_parameters(params)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                          # the child: wait for the parent's update, report it
        os.close(write)
        os.read(read, 1)
        os._exit(int(params[1].data[1, 1] == 7.0 and params[0].data.sum() == 0))
    os.close(read)
    params[1].data[1, 1] = 7.0                            # an in-place update, after the fork
    os.write(write, b"x")
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1, "the child did not see the parent's write"

# %%
if __name__ == "__main__":
    from tito.notebook import run_tests
    run_tests("test_share*", "test_a_forked*")

# %% [markdown]
# ## 2. A worker process
#
# A worker waits for requests on its end of a pipe and answers each one:
#
# - `("grad", state, x, y, seed, share, scale, recording)`: the loss of this micro-batch and
#   its gradients times `share * scale`, exactly as a thread of module 19 computes them,
#   written into the worker's shared gradient arrays; the answer is the weighted loss and
#   which parameters got a gradient;
# - `("loss", batches, state)`: the losses of some evaluation batches under `no_grad`;
# - `None`: stop.
#
# `state` carries what the main process may have changed since the fork and the worker's copy
# of the model would not know: which parameters require grad, and which modules are in
# training mode (dropout). An exception becomes an answer too, with the worker's traceback
# attached as a note, so it is raised in the main process as if it happened there.
#
# Two rules keep workers from outliving their parent. Ctrl-C goes to every process of the
# terminal's process group, so workers ignore it and the main process decides. And a worker
# whose parent is gone (killed, even with `kill -9`) notices within a second, because its
# parent's process id changes, and leaves.

# %%
#| export
def _apply_state(model, params, state):
    "Make the worker's copy of the model require grad and train as the main process's does."
    requires, training = state
    for p, r in zip(params, requires): p.requires_grad = r
    if training is not None:
        for m, t in zip(model.modules(), training): object.__setattr__(m, "training", t)


def _state(model, params):
    modules = getattr(model, "modules", None)
    return [p.requires_grad for p in params], None if modules is None else [m.training for m in modules()]


def micro_batch(model, params, loss_fn, x, y, seed, share, scale, recording):
    "Module 19's worker: (share * loss, the gradients times share * scale, None for a parameter without grad)."
    wanted = [p for p in params if p.requires_grad]
    with set_grad_enabled(recording), local_rng(np.random.default_rng(seed)):
        loss = loss_fn(model, x, y)
        grads = iter(grad(loss, wanted, gradient=np.asarray(share * scale, dtype=loss.dtype)))
        return share * float(loss.item()), [next(grads) if p.requires_grad else None for p in params]


def _answer(request, model, params, out, loss_fn):
    kind, *args = request
    if kind == "grad":
        state, *work = args
        _apply_state(model, params, state)
        loss, grads = micro_batch(model, params, loss_fn, *work)
        for g, o in zip(grads, out):
            if g is not None: o[...] = g.data
        return loss, [g is not None for g in grads]
    batches, state = args
    _apply_state(model, params, state)
    with no_grad():
        return [float(loss_fn(model, xb, yb).item()) for xb, yb in batches]


def _portable(error, rank):
    "The exception with the worker's traceback as a note; a RuntimeError with its text if it cannot be pickled."
    note = f"in data-parallel worker process {rank}:\n" + "".join(traceback.format_exception(error))
    try:
        multiprocessing.reduction.ForkingPickler.loads(multiprocessing.reduction.ForkingPickler.dumps(error))
    except Exception:
        error = RuntimeError(f"{type(error).__name__}: {error}")
    error.add_note(note)
    return error


def worker_loop(rank, conn, model, params, out, loss_fn, parent):
    "Answer requests from `conn` until told to stop or the parent process is gone."
    signal.signal(signal.SIGINT, signal.SIG_IGN)            # Ctrl-C is for the main process to handle
    with limit_blas_threads(1):
        while True:
            if not conn.poll(1.0):
                if os.getppid() != parent: return           # orphaned: the parent died
                continue
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if request is None: return
            try:
                conn.send(("ok", _answer(request, model, params, out, loss_fn)))
            except Exception as e:
                conn.send(("error", _portable(e, rank)))

# %% [markdown]
# ## 3. ProcessDataParallel
#
# The runner has module 19's interface (`forward_backward`, `optimizer_step`, `mean_loss`,
# `close`) and module 19's arithmetic: the same micro-batches, the same seeds drawn from
# tinytorch's generator, the same weighted gradients added in the same order. So it gives
# the same numbers as the threads, and the tests compare it with one stream.
#
# What is new is bookkeeping:
#
# - Before each step the main process checks that every parameter's `.data` is still its
#   shared array. Loading a checkpoint or `model.double()` may have put a new array there; its
#   values are copied into shared memory, or, if the shapes changed, the workers are restarted
#   around the new ones.
# - A worker's error is raised after all workers answered and before any `.grad` changed. A
#   worker that died (its process ended without an answer) is reported by its number and exit
#   code, and the next step starts new workers.
# - If the main process is interrupted while workers compute, it stops them: half-finished
#   answers never reach a later step. `close()` (also run when the runner is garbage collected
#   or Python exits) asks each worker to stop and waits for it.
#
# The optimizer step stays in the main process, split over module 19's threads: it is a few
# large elementwise passes, during which NumPy releases the GIL anyway.

# %%
#| export
def can_fork():
    "True where worker processes can be made with fork (Linux, macOS)."
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods()


def _stop(procs, conns):
    for conn in conns:
        try: conn.send(None)
        except (OSError, ValueError): pass
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for conn in conns: conn.close()


class WorkerDied(RuntimeError):
    "A data-parallel worker process ended without answering."


class ProcessDataParallel:
    "Forward and backward of each batch split over `workers` processes (the main one included), through shared memory."

    def __init__(self, model, workers=None, loss_fn=None):
        self.on_threads = DataParallel(model, workers, loss_fn)        # one stream, the optimizer step, the fallback
        self.model, self.workers, self.loss_fn = model, self.on_threads.threads, self.on_threads.loss_fn
        self._procs, self._conns, self._params, self._stopper = [], [], None, None
        if self.workers > 1 and can_fork(): self._start()

    # -- workers ---------------------------------------------------------------------------
    def _start(self):
        params = list(self.model.parameters())
        shared = share_parameters(params)
        ctx = multiprocessing.get_context("fork")
        for rank in range(1, self.workers):
            out = shared_arrays([(a.shape, a.dtype) for a in shared])
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker_loop, name=f"tinytorch-dp-{rank}", daemon=True,
                               args=(rank, theirs, self.model, params, out, self.loss_fn, os.getpid()))
            with warnings.catch_warnings():              # Python 3.12+ warns of fork() beside threads; ours are idle
                warnings.filterwarnings("ignore", r".*multi-threaded, use of fork\(\)", DeprecationWarning)
                proc.start()
            theirs.close()
            self._procs.append(proc); self._conns.append((ours, out))
        self._params, self._shared = params, shared
        self._stopper = weakref.finalize(self, _stop, list(self._procs), [c for c, _ in self._conns])

    def close(self):
        "Stop the worker processes (idempotent); the runner starts new ones if it is used again."
        if self._stopper is not None: self._stopper()
        self._procs, self._conns, self._params, self._stopper = [], [], None, None

    def _ready(self):
        "The parameters, in shared memory and known to the workers; None where the work runs on threads."
        if self.workers == 1 or not can_fork(): return None
        params = list(self.model.parameters())
        if self._params is not None and (len(params) != len(self._params) or any(
                p is not q or p.data.shape != s.shape or p.data.dtype != s.dtype
                for p, q, s in zip(params, self._params, self._shared))):
            self.close()                                     # other parameters: new workers around them
        if self._params is None: self._start()
        for p, s in zip(params, self._shared):
            if p.data is not s:                              # a new array was put there: take its values
                s[...] = p.data
                p.data = s
        return params

    def _exchange(self, requests, own):
        "Send requests[i] to worker i+1, run own() here, then collect every answer; errors after all answered."
        sent = 0
        try:
            for (conn, _), request in zip(self._conns, requests):
                try: conn.send(request)
                except OSError: raise self._died(sent) from None     # it ended since the last step
                sent += 1
            try:
                mine, error = own(), None
            except Exception as e:
                mine, error = None, e
            answers = [self._receive(i) for i in range(sent)]
        except BaseException:                               # interrupted, or a worker died: no stale answers later
            self.close()
            raise
        if error is not None: raise error
        for status, value in answers:
            if status == "error": raise value
        return mine, [value for _, value in answers]

    def _receive(self, i):
        conn, proc = self._conns[i][0], self._procs[i]
        if conn in wait([conn, proc.sentinel]):
            try: return conn.recv()
            except EOFError: pass
        raise self._died(i)

    def _died(self, i):
        proc = self._procs[i]
        proc.join(timeout=1)
        return WorkerDied(f"data-parallel worker process {i + 1} (pid {proc.pid}) ended without answering "
                          f"(exit code {proc.exitcode}); no gradient was changed, and the next step starts new workers")

    # -- the runner's interface ------------------------------------------------------------
    def forward_backward(self, x, y, scale=1.0):
        "Mean loss over the batch; add its gradients, times `scale`, into .grad: DataParallel's result, over processes."
        x, y = np.asarray(x), np.asarray(y)
        n = len(x)
        k = min(self.workers, n)
        params = self._ready() if k > 1 else None
        if params is None: return self.on_threads.forward_backward(x, y, scale)
        bounds = [round(i * n / k) for i in range(k + 1)]
        seeds = [int(s) for s in get_rng().integers(0, 2**63, size=k)]
        recording, state = is_grad_enabled(), _state(self.model, params)
        work = [(x[lo:hi], y[lo:hi], seed, (hi - lo) / n, scale, recording)       # share (hi - lo) / n of the batch
                for lo, hi, seed in zip(bounds, bounds[1:], seeds)]
        requests = [("grad", state, *w) for w in work[1:]]

        def own():
            with limit_blas_threads(1):
                return micro_batch(self.model, params, self.loss_fn, *work[0])
        (loss, grads), answers = self._exchange(requests, own)
        parts = [[None if g is None else g.data for g in grads]]
        for (_, out), (worker_loss, present) in zip(self._conns, answers):
            loss += worker_loss
            parts.append([o if has else None for o, has in zip(out, present)])

        def add(items):                                  # the sums of module 19, in worker order
            for p, _, j in items:
                arrays = [part[j] for part in parts if part[j] is not None]
                if not arrays: continue
                total = np.add(arrays[0], arrays[1]) if len(arrays) > 1 else arrays[0].copy()
                for a in arrays[2:]: total += a
                if p.grad is None: p.grad = as_tensor(total)
                else: p.grad.data += total
        items = [(p, p.data, j) for j, p in enumerate(params)]
        if sum(p.size for p in params) < PARALLEL_SUM_MIN: add(items)
        else: self.on_threads._run([functools.partial(add, part) for part in split_by_size(items, self.workers)])
        return loss

    def optimizer_step(self, optimizer):
        "optimizer.step() in the main process, split over module 19's threads."
        return self.on_threads.optimizer_step(optimizer)

    def mean_loss(self, batches):
        "Mean loss over a list of (x, y) batches under no_grad, the batches spread over the workers."
        batches = list(batches)
        k = min(self.workers, len(batches))
        params = self._ready() if k > 1 else None
        if params is None: return self.on_threads.mean_loss(batches)
        bounds = [round(i * len(batches) / k) for i in range(k + 1)]
        state = _state(self.model, params)
        requests = [("loss", batches[bounds[i]:bounds[i + 1]], state) for i in range(1, k)]

        def own():
            with no_grad(), limit_blas_threads(1):
                return [float(self.loss_fn(self.model, xb, yb).item()) for xb, yb in batches[:bounds[1]]]
        mine, answers = self._exchange(requests, own)
        return float(np.mean(mine + [loss for losses in answers for loss in losses]))


def enable():
    "Make module 19's `data_parallel` run on worker processes where the platform can fork."
    register_kernel("data_parallel", ProcessDataParallel if can_fork() else None)


def disable():
    "Module 19's threads again."
    register_kernel("data_parallel", None)

# %% [markdown]
# ## 4. Tests
#
# The runner must give module 19's numbers: equal to one stream to round-off in float64 and
# float32, bit for bit from run to run with dropout, the same as the threads bit for bit (the
# same micro-batches, seeds and additions), and no gradient touched when a worker fails or
# dies.

# %%
from tinytorch.models.transformer import GPT
from tinytorch.training import language_model_loss

needs_fork = pytest.mark.skipif(not can_fork(), reason="worker processes need fork")

def _fixture(dtype=np.float64, dropout=0.0, seed=0):
    manual_seed(seed)
    model = GPT(vocab_size=11, embed_dim=16, num_layers=2, num_heads=2, max_seq_len=8, dropout_prob=dropout)
    if dtype == np.float64: model.double()
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 11, size=(5, 8))
    return model, x, np.roll(x, -1, axis=1)

def _grads_of(model, runner, x, y, scale=1.0):
    model.zero_grad()
    loss = runner.forward_backward(x, y, scale)
    return loss, [None if p.grad is None else p.grad.data.copy() for p in model.parameters()]

def _assert_close(run, reference, tol):
    (loss, grads), (loss_ref, grads_ref) = run, reference
    assert abs(loss - loss_ref) <= tol * abs(loss_ref), (loss, loss_ref)
    for a, b in zip(grads, grads_ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(b)), 1e-30)

@needs_fork
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("sums_on_pool", [False, True])
def test_processes_equal_one_stream_and_the_threads(dtype, tol, sums_on_pool, monkeypatch):
    if sums_on_pool: monkeypatch.setitem(globals(), "PARALLEL_SUM_MIN", 0)     # as for a large model
    model, x, y = _fixture(dtype)
    one = _grads_of(model, DataParallel(model, 1), x, y, scale=0.5)
    runner = ProcessDataParallel(model, workers=3)                     # uneven split: 2, 1, 2 rows
    assert len(runner._procs) == 2 and all(p.is_alive() for p in runner._procs)
    run = _grads_of(model, runner, x, y, scale=0.5)
    _assert_close(run, one, tol)
    threads = _grads_of(model, DataParallel(model, 3), x, y, scale=0.5)
    assert run[0] == threads[0] and all(np.array_equal(a, b) for a, b in zip(run[1], threads[1]))
    runner.close()
    assert not any(p.is_alive() for p in runner._procs)

@needs_fork
def test_deterministic_with_dropout_and_accumulates_like_one_stream():
    model, x, y = _fixture(np.float32, dropout=0.1)
    runner = ProcessDataParallel(model, workers=2)
    runs = []
    for _ in range(3):
        manual_seed(7)
        runs.append(_grads_of(model, runner, x, y))
    manual_seed(7)
    runs.append(_grads_of(model, DataParallel(model, 2), x, y))        # the threads draw the same seeds
    for loss, grads in runs[1:]:
        assert loss == runs[0][0] and all(np.array_equal(a, b) for a, b in zip(grads, runs[0][1]))
    model.eval()                                                       # the workers follow the mode: no dropout
    model.zero_grad()
    runner.forward_backward(x[:3], y[:3], scale=0.5)
    runner.forward_backward(x[3:], y[3:], scale=0.5)                   # adds into the .grad of the first call
    accumulated = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    single = DataParallel(model, 1)
    single.forward_backward(x[:3], y[:3], scale=0.5); single.forward_backward(x[3:], y[3:], scale=0.5)
    for a, p in zip(accumulated, model.parameters()):
        assert np.max(np.abs(a - p.grad.data)) <= 2e-6 * np.max(np.abs(a))
    runner.close()

@needs_fork
def test_workers_see_new_values_frozen_parameters_and_new_dtypes():
    model, x, y = _fixture(np.float32)
    runner = ProcessDataParallel(model, workers=2)
    _grads_of(model, runner, x, y)
    for p in model.parameters(): p.data = p.data * 0.5                 # new arrays, as a checkpoint load puts there
    list(model.parameters())[1].requires_grad = False                 # frozen: no gradient, in the workers too
    frozen = [p.requires_grad for p in model.parameters()]
    _assert_close(_grads_of(model, runner, x, y), _grads_of(model, DataParallel(model, 1), x, y), 2e-6)
    assert [p.requires_grad for p in model.parameters()] == frozen
    model.double()                                                     # new dtypes: the workers are started anew
    first = runner._procs[0]
    _assert_close(_grads_of(model, runner, x, y), _grads_of(model, DataParallel(model, 1), x, y), 1e-13)
    assert runner._procs[0] is not first and not first.is_alive()
    runner.close()

@needs_fork
def test_a_worker_error_is_raised_here_with_no_gradient_changed():
    model, x, y = _fixture()
    def failing_loss(m, xb, yb):
        if os.getpid() != main: raise ValueError("bad micro-batch")
        return language_model_loss(m, xb, yb)
    main = os.getpid()
    runner = ProcessDataParallel(model, workers=2, loss_fn=failing_loss)
    model.zero_grad()
    with pytest.raises(ValueError, match="bad micro-batch") as info:
        runner.forward_backward(x, y)
    assert "in data-parallel worker process 1" in "".join(getattr(info.value, "__notes__", []))
    assert all(p.grad is None for p in model.parameters())
    assert runner._procs[0].is_alive()                                 # a raised error does not end the worker
    runner.close()

@needs_fork
def test_a_dead_worker_is_reported_and_replaced():
    model, x, y = _fixture()
    def dying_loss(m, xb, yb):
        if os.getpid() != main and not os.path.exists(survived): os._exit(3)
        return language_model_loss(m, xb, yb)
    main, survived = os.getpid(), f"/nonexistent-{os.getpid()}"
    runner = ProcessDataParallel(model, workers=2, loss_fn=dying_loss)
    model.zero_grad()
    with pytest.raises(WorkerDied, match=r"worker process 1 \(pid \d+\) ended without answering \(exit code 3\)"):
        runner.forward_backward(x, y)
    assert all(p.grad is None for p in model.parameters()) and runner._procs == []
    runner.loss_fn = language_model_loss
    _assert_close(_grads_of(model, runner, x, y), _grads_of(model, DataParallel(model, 1), x, y), 1e-13)
    os.kill(runner._procs[0].pid, signal.SIGKILL)                     # killed between two steps
    runner._procs[0].join()
    model.zero_grad()
    with pytest.raises(WorkerDied, match=r"exit code -9"):
        runner.forward_backward(x, y)
    assert all(p.grad is None for p in model.parameters())
    _assert_close(_grads_of(model, runner, x, y), _grads_of(model, DataParallel(model, 1), x, y), 1e-13)
    runner.close()

@needs_fork
def test_grad_mode_and_mean_loss_as_on_one_stream():
    model, x, y = _fixture()
    runner = ProcessDataParallel(model, workers=2)
    with no_grad(), pytest.raises(RuntimeError, match="does not require grad"):
        runner.forward_backward(x, y)
    batches = [(x[i:i + 2], y[i:i + 2]) for i in range(4)]
    serial = np.mean([language_model_loss(model, xb, yb).item() for xb, yb in batches])
    assert runner.mean_loss(batches) == serial
    with pytest.raises(ValueError, match="targets"):
        runner.mean_loss([(x, y), (x, y[:, :3])])                     # the worker's batch is the bad one
    with pytest.raises(ValueError, match="no batches"):
        runner.mean_loss([])
    runner.close()

# %%
if __name__ == "__main__":
    run_tests("test_processes*", "test_deterministic*", "test_workers_see*", "test_a_worker*", "test_a_dead*",
              "test_grad_mode*")

# %% [markdown]
# ## Experiments to try
#
# 1. Time `DataParallel(model, 2).forward_backward(x, y)` against
#    `ProcessDataParallel(model, 2).forward_backward(x, y)` on the GPT of
#    `benchmarks/train_step.py` (config A), and each against one worker: the threads gain a
#    little, the processes nearly halve the time.
# 2. In `shared_arrays`, replace the `mmap` block by `np.empty` and run
#    `test_a_forked_child_sees_the_parents_updates`: after a fork, ordinary memory is the
#    child's own copy, and the parent's update never reaches it.
# 3. Remove the `signal.signal(...)` line of `worker_loop` and press Ctrl-C during
#    `tito train --threads 2`: the run still stops and saves its checkpoint, but every worker
#    now prints a `KeyboardInterrupt` traceback of its own below the one-line message.
