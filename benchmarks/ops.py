"""Per-op overhead on small tensors, and backward time against graph depth: tinytorch, NumPy, PyTorch eager.

Run from the repository root:

    python -m benchmarks.ops              # about two minutes
    python -m benchmarks.ops --quick      # fewer repetitions
    python -m benchmarks.ops --profile    # also cProfile tinytorch's forward+backward of a few small ops
    python -m benchmarks.ops --torch-threads 1    # PyTorch single-threaded, like NumPy's elementwise ops

1. Small ops on 64x64 float32 tensors (`--size`): the median time per call in three modes:
   `forward` (inputs do not require grad, so nothing is recorded), `forward+graph` (inputs
   require grad: the op records its node, no backward) and `forward+backward` (the op, then
   `out.backward(ones)`, the leaves' `.grad` reset to None each time, as `zero_grad` does).
   NumPy is the floor: the same arithmetic written by hand, with no framework. The ratio that
   matters is tinytorch / PyTorch eager; the target is at most 2.
2. Chains of 10 to 10,000 nodes (alternating `y * 0.5` and `tanh` on 16 numbers): the time to
   build the graph and to run backward, per node. Linear growth means constant time per node.

In both parts the frameworks alternate in two rounds (tinytorch, NumPy, PyTorch, then PyTorch,
NumPy, tinytorch), with a pause whenever PyTorch starts or stops. Afterwards PyTorch measures every
cell again alone in a fresh process; a cell whose PyTorch time differs from that by more than noise
is flagged and gets no ratio (and stays out of the summary).

Results go to benchmarks/results/ops.json, with the NumPy BLAS and thread configuration.
"""
import argparse
import cProfile
import gc
import io
import pstats
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmarks._common import (Timing, block_sampler, check_reference, environment, geomean, interleave,
                                print_environment, print_flagged, print_table, ratio_cell, run_standalone, summarize,
                                torch_or_none, write_results)
from tinytorch import Tensor

TARGET = 2.0
ROUNDS = 2
is_torch = lambda name: name == "torch"          # noqa: E731  (the side interleave pauses around)


@dataclass
class Op:
    "One small op: its tinytorch and torch forms (the same code when the APIs agree) and a NumPy reference."
    name: str
    tt: Callable                       # (a, b) -> Tensor
    th: Callable                       # (a, b) -> torch.Tensor
    np_forward: Callable               # (a, b) -> ndarray
    np_backward: Callable              # (a, b, g) -> output and gradients, by hand
    binary: bool = False


def _scatter(shape, idx, g):
    out = np.zeros(shape, dtype=g.dtype)
    out[idx] = g
    return out


def _add_at(shape, idx, g):
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, idx, g)
    return out


def make_ops(n):
    rows = np.random.default_rng(1).integers(0, n, size=n)
    window = (slice(1, -1), slice(None, None, 2))
    same = lambda f: (f, f)           # noqa: E731  (the same code runs on both frameworks)
    torch = torch_or_none()
    rows_t = torch.from_numpy(rows) if torch is not None else None
    return [
        Op("add", *same(lambda a, b: a + b), lambda a, b: a + b,
           lambda a, b, g: (a + b, g.copy(), g.copy()), binary=True),
        Op("mul", *same(lambda a, b: a * b), lambda a, b: a * b,
           lambda a, b, g: (a * b, g * b, g * a), binary=True),
        Op("matmul", *same(lambda a, b: a @ b), lambda a, b: a @ b,
           lambda a, b, g: (a @ b, g @ b.T, a.T @ g), binary=True),
        Op("mul scalar", *same(lambda a, b: a * 0.5), lambda a, b: a * 0.5,
           lambda a, b, g: (a * 0.5, g * 0.5)),
        Op("sum", *same(lambda a, b: a.sum()), lambda a, b: a.sum(),
           lambda a, b, g: (a.sum(), np.broadcast_to(g, a.shape).copy())),
        Op("mean(-1)", lambda a, b: a.mean(axis=-1), lambda a, b: a.mean(dim=-1), lambda a, b: a.mean(axis=-1),
           lambda a, b, g: (a.mean(axis=-1), np.broadcast_to(g[:, None] / a.shape[-1], a.shape).copy())),
        Op("relu", *same(lambda a, b: a.relu()), lambda a, b: np.maximum(a, 0),
           lambda a, b, g: (np.maximum(a, 0), g * (a > 0))),
        Op("exp", *same(lambda a, b: a.exp()), lambda a, b: np.exp(a),
           lambda a, b, g: (lambda out: (out, g * out))(np.exp(a))),
        Op("reshape", *same(lambda a, b: a.reshape(-1)), lambda a, b: a.reshape(-1),
           lambda a, b, g: (a.reshape(-1), g.reshape(a.shape).copy())),
        Op("transpose", *same(lambda a, b: a.T), lambda a, b: a.T,
           lambda a, b, g: (a.T, g.T.copy())),
        Op("getitem slice", *same(lambda a, b: a[window]), lambda a, b: a[window],
           lambda a, b, g: (a[window], _scatter(a.shape, window, g))),
        Op("getitem rows", lambda a, b: a[rows], lambda a, b: a[rows_t], lambda a, b: a[rows],
           lambda a, b, g: (a[rows], _add_at(a.shape, rows, g))),
    ]


# ---------------------------------------------------------------------------------------------
# 1. Small ops

def small_op_fns(n, torch):
    "{(op, mode): {framework: function}} for every small op and mode; PyTorch's only when `torch` is given."
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    a, b = Tensor(a_np), Tensor(b_np)
    ag, bg = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    if torch is not None:
        ta, tb = torch.from_numpy(a_np.copy()), torch.from_numpy(b_np.copy())
        tag, tbg = ta.clone().requires_grad_(), tb.clone().requires_grad_()
    cells = {}
    for op in make_ops(n):
        g_np = np.ones(op.np_forward(a_np, b_np).shape, dtype=np.float32)

        def tt_step(op=op, g=g_np):
            ag.grad = bg.grad = None
            op.tt(ag, bg).backward(g)

        fns = {
            "forward": {"tinytorch": lambda op=op: op.tt(a, b), "numpy": lambda op=op: op.np_forward(a_np, b_np)},
            "forward+graph": {"tinytorch": lambda op=op: op.tt(ag, bg)},
            "forward+backward": {"tinytorch": tt_step,
                                 "numpy": lambda op=op, g=g_np: op.np_backward(a_np, b_np, g)},
        }
        if torch is not None:
            g_t = torch.from_numpy(g_np)

            def th_step(op=op, g=g_t):
                tag.grad = tbg.grad = None
                op.th(tag, tbg).backward(g)

            fns["forward"]["torch"] = lambda op=op: op.th(ta, tb)
            fns["forward+graph"]["torch"] = lambda op=op: op.th(tag, tbg)
            fns["forward+backward"]["torch"] = th_step
        for mode, by_framework in fns.items():
            cells[(op.name, mode)] = by_framework
    return cells


def _timings(samplers, samples):
    return {name: summarize(v, samplers[name].number) for name, v in samples.items()}


def bench_small_ops(n, repeat, torch):
    per_round = max(1, -(-repeat // ROUNDS))
    rows = []
    for (name, mode), fns in small_op_fns(n, torch).items():
        samplers = {fw: block_sampler(fn) for fw, fn in fns.items()}
        measured = _timings(samplers, interleave(samplers, ROUNDS, per_round, side=is_torch))
        tt_us = measured["tinytorch"].us
        np_us = measured["numpy"].us if "numpy" in measured else None
        th_us = measured["torch"].us if "torch" in measured else None
        rows.append({"op": name, "mode": mode, "tinytorch_us": tt_us, "numpy_us": np_us, "torch_us": th_us,
                     "tinytorch_over_numpy": tt_us / np_us if np_us else None,
                     "timings": {k: v.as_dict() for k, v in measured.items()}, "_torch": measured.get("torch")})
    return rows


def check_small_ops(rows, alone):
    "Check every row's PyTorch time against PyTorch alone; give ratios only where it passes."
    checks = {}
    for r in rows:
        th = r.pop("_torch")
        check = None if th is None else check_reference(th, Timing(**alone[f"{r['op']}|{r['mode']}"]))
        if check is not None: checks[f"{r['op']} {r['mode']}"] = check
        r["torch_check"] = check
        r["tinytorch_over_torch"] = ratio_cell(r["tinytorch_us"], r["torch_us"], check)
        r["tinytorch_over_torch_best"] = (None if r["tinytorch_over_torch"] is None else
                                          r["timings"]["tinytorch"]["best_us"] / r["timings"]["torch"]["best_us"])
    return checks


def summarize_small_ops(rows):
    summary = {}
    for mode in ("forward", "forward+graph", "forward+backward"):
        mine = [r for r in rows if r["mode"] == mode and r["torch_us"] is not None]
        ratios = {r["op"]: r["tinytorch_over_torch"] for r in mine if r["tinytorch_over_torch"] is not None}
        if not ratios: continue
        worst = max(ratios, key=ratios.get)
        summary[mode] = {"geomean_tinytorch_over_torch": geomean(ratios.values()), "worst_op": worst,
                         "worst_ratio": ratios[worst],
                         "ops_within_target": sum(v <= TARGET for v in ratios.values()), "ops": len(ratios),
                         "flagged": len(mine) - len(ratios)}
    return summary


# ---------------------------------------------------------------------------------------------
# 2. Chains

def _tt_chain(depth, x0):
    x = Tensor(x0, requires_grad=True)
    y = x
    for _ in range(depth // 2):
        y = (y * 0.5).tanh()
    return y


def _th_chain(torch, depth, x0):
    x = torch.from_numpy(x0.copy()).requires_grad_()
    y = x
    for _ in range(depth // 2):
        y = (y * 0.5).tanh()
    return y


def _chain_sample(build, backward, depth):
    "(seconds per node to build the chain, seconds per node of its backward) of one chain."
    gc.collect()
    start = time.perf_counter()
    y = build(depth)
    built = time.perf_counter()
    backward(y)
    done = time.perf_counter()
    return (built - start) / depth, (done - built) / depth


def _chain_samplers(depth, torch, frameworks):
    x0 = np.linspace(-1, 1, 16, dtype=np.float32)
    g_np = np.ones(16, dtype=np.float32)
    fns = {"tinytorch": lambda: _chain_sample(lambda d: _tt_chain(d, x0), lambda y: y.backward(g_np), depth)}
    if torch is not None:
        g_t = torch.from_numpy(g_np)
        fns["torch"] = lambda: _chain_sample(lambda d: _th_chain(torch, d, x0), lambda y: y.backward(g_t), depth)
    fns = {k: v for k, v in fns.items() if k in frameworks}
    for fn in fns.values(): fn()                         # a warm-up chain each
    return fns


def _chain_repeat(depth, repeat_scale):
    return max(3, int(repeat_scale * 3000 / depth ** 0.5 / 10))


def _chain_timings(samples):
    "{framework: (forward Timing, backward Timing)} from (forward, backward) samples."
    return {k: (summarize([f for f, _ in v]), summarize([b for _, b in v])) for k, v in samples.items()}


def bench_chains(depths, repeat_scale, torch):
    rows = []
    for depth in depths:
        repeat = _chain_repeat(depth, repeat_scale)
        samplers = _chain_samplers(depth, torch, ("tinytorch", "torch"))
        t = _chain_timings(interleave(samplers, ROUNDS, max(1, -(-repeat // ROUNDS)), side=is_torch))
        row = {"depth": depth, "repeat": repeat, "tinytorch_forward_us_per_node": t["tinytorch"][0].us,
               "tinytorch_backward_us_per_node": t["tinytorch"][1].us, "torch_forward_us_per_node": None,
               "torch_backward_us_per_node": None, "_torch": t.get("torch")}
        if "torch" in t:
            row.update(torch_forward_us_per_node=t["torch"][0].us, torch_backward_us_per_node=t["torch"][1].us)
        rows.append(row)
    return rows


def check_chains(rows, alone):
    checks = {}
    for r in rows:
        th = r.pop("_torch")
        if th is None: continue
        for i, part in enumerate(("forward", "backward")):
            check = check_reference(th[i], Timing(**alone[f"chain|{r['depth']}|{part}"]))
            checks[f"chain depth {r['depth']} {part}"] = r[f"torch_{part}_check"] = check
    return checks


def torch_alone(size, repeat, depths, repeat_scale, threads):
    "Every PyTorch cell of this benchmark measured with nothing else running: {key: Timing fields}."
    import torch
    if threads: torch.set_num_threads(threads)
    out = {}
    for (name, mode), fns in small_op_fns(size, torch).items():
        sample = block_sampler(fns["torch"])
        out[f"{name}|{mode}"] = vars(summarize([sample() for _ in range(repeat)], sample.number))
    for depth in depths:
        fn = _chain_samplers(depth, torch, ("torch",))["torch"]
        fwd, bwd = _chain_timings({"torch": [fn() for _ in range(_chain_repeat(depth, repeat_scale))]})["torch"]
        out[f"chain|{depth}|forward"], out[f"chain|{depth}|backward"] = vars(fwd), vars(bwd)
    return out


# ---------------------------------------------------------------------------------------------
# 3. Profile

def profile_small_ops(n, names=("add", "mul", "matmul", "sum", "relu", "getitem slice"), calls=3000, top=25):
    "cProfile tinytorch's forward+backward of a few small ops; returns the pstats text."
    rng = np.random.default_rng(0)
    ag = Tensor(rng.standard_normal((n, n)).astype(np.float32), requires_grad=True)
    bg = Tensor(rng.standard_normal((n, n)).astype(np.float32), requires_grad=True)
    ops = [op for op in make_ops(n) if op.name in names]
    grads = [np.ones(op.np_forward(ag.data, bg.data).shape, dtype=np.float32) for op in ops]

    def work():
        for _ in range(calls):
            for op, g in zip(ops, grads):
                ag.grad = bg.grad = None
                op.tt(ag, bg).backward(g)

    profiler = cProfile.Profile()
    profiler.runcall(work)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    total = sum(v[2] for v in stats.stats.values())
    text.write(f"{calls * len(ops)} forward+backward steps of {', '.join(names)}: "
               f"{total / (calls * len(ops)) * 1e6:.1f} us per step under the profiler\n")
    return text.getvalue()


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="side of the square test tensors (default 64)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--profile", action="store_true", help="also cProfile tinytorch's small ops")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    args = parser.parse_args(argv)
    torch = torch_or_none()
    if torch is not None and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    info = environment()
    print_environment(info)
    if torch is None: print("PyTorch is not installed: only tinytorch and NumPy are measured.")

    repeat, scale = (7, 0.5) if args.quick else (15, 1.0)
    rows = bench_small_ops(args.size, repeat, torch)
    chains = bench_chains(args.depths, scale, torch)
    alone = (run_standalone(torch_alone, args.size, repeat, args.depths, scale, args.torch_threads)
             if torch is not None else {})
    checks = {**check_small_ops(rows, alone), **check_chains(chains, alone)}
    print_table(["op", "mode", "tinytorch us", "numpy us", "torch us", "tt/torch", "tt/torch best", "tt-numpy us",
                 "torch check"],
                [[r["op"], r["mode"], r["tinytorch_us"], r["numpy_us"], r["torch_us"], r["tinytorch_over_torch"],
                  r["tinytorch_over_torch_best"],
                  None if r["numpy_us"] is None else r["tinytorch_us"] - r["numpy_us"],
                  None if r["torch_check"] is None else r["torch_check"].label()] for r in rows],
                title=f"Small ops on {args.size}x{args.size} float32 "
                      "(median time per call; best = ratio of the fastest blocks)")
    summary = summarize_small_ops(rows)
    if summary:
        print_table(["mode", "geomean tt/torch", "worst op", "worst tt/torch", f"ops <= {TARGET:g}x", "flagged"],
                    [[m, s["geomean_tinytorch_over_torch"], s["worst_op"], s["worst_ratio"],
                      f"{s['ops_within_target']}/{s['ops']}", s["flagged"]] for m, s in summary.items()],
                    title=f"tinytorch / PyTorch eager (target <= {TARGET:g}; flagged ops left out)")

    label = lambda c, part: c[f"torch_{part}_check"].label() if f"torch_{part}_check" in c else None  # noqa: E731
    print_table(["depth", "tt forward us/node", "tt backward us/node", "torch forward us/node",
                 "torch backward us/node", "torch forward check", "torch backward check"],
                [[c["depth"], c["tinytorch_forward_us_per_node"], c["tinytorch_backward_us_per_node"],
                  c["torch_forward_us_per_node"], c["torch_backward_us_per_node"], label(c, "forward"),
                  label(c, "backward")] for c in chains],
                title="Chains of y = tanh(y * 0.5) (median time per node; constant = linear growth)")
    print_flagged(checks)
    per_node = {c["depth"]: c["tinytorch_backward_us_per_node"] for c in chains}
    growth = per_node[max(per_node)] / per_node[min(per_node)] if len(per_node) > 1 else None
    if growth is not None:
        print(f"tinytorch backward time per node, depth {max(per_node)} over depth {min(per_node)}: {growth:.2f}x")

    payload = {"size": args.size, "quick": args.quick, "torch_threads": args.torch_threads,
               "target_tinytorch_over_torch": TARGET,
               "small_ops": rows, "summary": summary, "chains": chains,
               "chain_backward_per_node_growth": growth}
    if args.profile:
        text = profile_small_ops(args.size)
        print("\ncProfile of tinytorch forward+backward (sorted by own time)\n" + text)
        payload["profile"] = text
    print(f"\nResults written to {write_results('ops', payload, info)}")


if __name__ == "__main__":
    main()
