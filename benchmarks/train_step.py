"""Training-step, forward and memory benchmark: a tinytorch GPT against the same GPT in PyTorch eager.

Run: python -m benchmarks.train_step [--configs A B] [--steps 10] [--rounds 3] [--threads 1 2] [--runner threads]

Configurations (issue: performance):
  A: nanoGPT's CPU config: vocab 65, block 64, batch 12, 4 layers, 4 heads, width 128
  B: vocab 65, block 256, batch 8, 6 layers, 6 heads, width 384
Both frameworks run in this process, alternating in rounds with pauses between them (OpenBLAS
worker threads spin after each call and would slow PyTorch down), so the ratios are measured
under the same machine conditions. The PyTorch times are then checked against PyTorch measured
alone in a fresh process; where they differ by more than noise the ratio is flagged, not printed.
Peak memory of a training step is measured in a fresh subprocess per framework, as the growth of
peak RSS over the resident size before the step, summed over the process and its data-parallel
worker processes; shared memory (parameters and gradients) is counted once, in the main process,
which touches all of it.
"""
import argparse
import os

import numpy as np

from benchmarks._common import (block_sampler, check_reference, environment, interleave, print_environment,
                                print_flagged, print_table, ratio_cell, run_standalone, summarize, torch_or_none,
                                write_results)

CONFIGS = {
    "A": dict(vocab=65, block=64, batch=12, layers=4, heads=4, width=128),
    "B": dict(vocab=65, block=256, batch=8, layers=6, heads=6, width=384),
}
LR, CLIP = 1e-3, 1.0


def _batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg["vocab"], size=(cfg["batch"], cfg["block"]))
    return x, np.roll(x, -1, axis=1)


def tinytorch_setup(cfg, threads=1, runner="default"):
    import tinytorch
    from tinytorch.core.optimizers import AdamW, clip_grad_norm_, weight_decay_groups
    from tinytorch.models.transformer import GPT
    from tinytorch.parallel import make_train_step
    tinytorch.manual_seed(0)
    model = GPT(cfg["vocab"], cfg["width"], cfg["layers"], cfg["heads"], max_seq_len=cfg["block"])
    opt = AdamW(weight_decay_groups(model.parameters(), 0.1), lr=LR, betas=(0.9, 0.99))
    x, y = _batch(cfg)
    if runner == "threads":                              # module 19's threads instead of module 20's processes
        from tinytorch.core.tensor import KERNELS
        saved = KERNELS.pop("data_parallel", None)
        step = make_train_step(model, opt, clip=CLIP, threads=threads)
        if saved is not None: KERNELS["data_parallel"] = saved
    else:
        step = make_train_step(model, opt, clip=CLIP, threads=threads)

    def train_step():
        return step(x, y)

    def forward():
        with tinytorch.no_grad():
            return model(x)
    return train_step, forward


def torch_setup(cfg):
    import torch
    from benchmarks._torch_gpt import GPT
    torch.manual_seed(0)
    model = GPT(cfg["vocab"], cfg["width"], cfg["layers"], cfg["heads"], cfg["block"])
    opt = model.optimizer(LR)
    x, y = (torch.from_numpy(a) for a in _batch(cfg))

    def train_step():
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return loss.item()

    def forward():
        with torch.no_grad():
            return model(x)
    return train_step, forward


KINDS = ("train", "forward")


def measure(cfg, steps, rounds, threads_list, runner="default"):
    "{run: {'train': Timing, 'forward': Timing}}, every run interleaved with the others in `rounds` rounds."
    torch = torch_or_none()
    runs = {f"tinytorch-{t}t": tinytorch_setup(cfg, t, runner) for t in threads_list}
    if torch is not None: runs["pytorch"] = torch_setup(cfg)
    samplers = {(name, kind): block_sampler(fn) for name, fns in runs.items() for kind, fn in zip(KINDS, fns)}
    samples = interleave(samplers, rounds, steps, side=lambda key: key[0])
    return {name: {kind: summarize(samples[(name, kind)]) for kind in KINDS} for name in runs}


def torch_alone(name, steps, rounds):
    "PyTorch's training-step and forward samples (seconds) for config `name`, measured with nothing else running."
    samplers = dict(zip(KINDS, (block_sampler(fn) for fn in torch_setup(CONFIGS[name]))))
    return interleave(samplers, rounds, steps)


def peak_memory(name, framework, threads=1, runner="default"):
    """Peak RSS growth over the built model during its first three training steps (activations, gradients,
    optimizer state), in a fresh process, summed over that process and its worker processes; None where /proc
    is unavailable."""
    if not os.path.exists("/proc/self/clear_refs"): return None
    return run_standalone(_peak_memory_here, name, framework, threads, runner)


def _status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _peak_memory_here(name, framework, threads, runner):
    import multiprocessing
    cfg = CONFIGS[name]
    train, _ = tinytorch_setup(cfg, threads, runner) if framework == "tinytorch" else torch_setup(cfg)
    me, workers = os.getpid(), [p.pid for p in multiprocessing.active_children()]    # worker processes count too
    for pid in [me] + workers:
        with open(f"/proc/{pid}/clear_refs", "w") as f: f.write("5")          # restart the peak (VmHWM) here
    before = {pid: (_status(pid, "VmRSS:"), _status(pid, "RssShmem:")) for pid in [me] + workers}
    for _ in range(3): train()
    growth = _status(me, "VmHWM:") - before[me][0]
    for pid in workers:        # shared memory a worker touches is the parameters and gradients this process holds too
        growth += _status(pid, "VmHWM:") - before[pid][0] - (_status(pid, "RssShmem:") - before[pid][1])
    return {"peak_growth": growth, "resident": sum(rss for rss, _ in before.values()), "processes": 1 + len(workers)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["A", "B"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and framework")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="tinytorch data-parallel workers")
    parser.add_argument("--runner", choices=["default", "threads"], default="default",
                        help="default: the package's runner (worker processes where the system can fork); "
                             "threads: module 19's threads")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args(argv)
    info = environment()
    print_environment(info)
    results = {}
    for name in args.configs:
        cfg = CONFIGS[name]
        results[name] = {"config": cfg}
        ref = torch_or_none()
        if not args.memory_only:
            times = measure(cfg, args.steps, args.rounds, args.threads, args.runner)
            ref = times.get("pytorch")
            checks = {}
            if ref is not None:
                alone = {k: summarize(v) for k, v in run_standalone(torch_alone, name, args.steps, args.rounds).items()}
                checks = {kind: check_reference(ref[kind], alone[kind]) for kind in KINDS}
                times["pytorch alone"] = alone
            rows = []
            for run, t in times.items():
                ratios = {k: None if ref is None else ratio_cell(t[k].median, ref[k].median, checks[k]) for k in KINDS}
                rows.append([run, t["train"].median * 1e3, ratios["train"], t["forward"].median * 1e3,
                             ratios["forward"]])
            print_table(["run", "train step ms", "ratio", "forward ms", "ratio"], rows,
                        title=f"Config {name}: {cfg} (ratio: time / PyTorch's beside it)")
            if checks:
                print("PyTorch beside tinytorch vs alone: " + ", ".join(f"{k} {c.label()}" for k, c in checks.items()))
                print_flagged({f"config {name} {k}": c for k, c in checks.items()})
            results[name]["times_s"] = times
            results[name]["checks"] = checks
        if not args.no_memory:
            mem = {"tinytorch": peak_memory(name, "tinytorch", max(args.threads), args.runner)}
            if ref is not None: mem["pytorch"] = peak_memory(name, "pytorch")
            results[name]["memory"] = mem
            mrows = [[fw, m["processes"], m["peak_growth"] / 2**20, m["resident"] / 2**20] for fw, m in mem.items() if m]
            if mem.get("pytorch") and mem.get("tinytorch"):
                ratio = mem["tinytorch"]["peak_growth"] / max(mem["pytorch"]["peak_growth"], 1)
                print(f"peak memory ratio tinytorch/pytorch: {ratio:.2f}")
                results[name]["memory_ratio"] = ratio
            print_table(["framework", "processes", "step peak growth MiB", "resident before MiB"], mrows)
    path = write_results("train_step", {"results": results}, info)
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
