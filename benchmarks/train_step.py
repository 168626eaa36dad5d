"""Training-step, forward and memory benchmark: a tinytorch GPT against the same GPT in PyTorch eager.

Run: python -m benchmarks.train_step [--configs A B] [--steps 10] [--rounds 3] [--threads 1 2]

Configurations (issue: performance):
  A: nanoGPT's CPU config: vocab 65, block 64, batch 12, 4 layers, 4 heads, width 128
  B: vocab 65, block 256, batch 8, 6 layers, 6 heads, width 384
Both frameworks run in this process, alternating in rounds with pauses between them (OpenBLAS
worker threads spin after each call and would slow PyTorch down), so the ratios are measured
under the same machine conditions. Peak memory of a training step is measured in a fresh
subprocess per framework, as the growth of peak RSS over the resident size before the step.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks._common import environment, pause, print_environment, print_table, torch_or_none, write_results

CONFIGS = {
    "A": dict(vocab=65, block=64, batch=12, layers=4, heads=4, width=128),
    "B": dict(vocab=65, block=256, batch=8, layers=6, heads=6, width=384),
}
LR, CLIP = 1e-3, 1.0


def _batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg["vocab"], size=(cfg["batch"], cfg["block"]))
    return x, np.roll(x, -1, axis=1)


def tinytorch_setup(cfg, threads=1):
    import tinytorch
    from tinytorch.core.optimizers import AdamW, clip_grad_norm_, weight_decay_groups
    from tinytorch.models.transformer import GPT
    from tinytorch.parallel import make_train_step
    tinytorch.manual_seed(0)
    model = GPT(cfg["vocab"], cfg["width"], cfg["layers"], cfg["heads"], max_seq_len=cfg["block"])
    opt = AdamW(weight_decay_groups(model.parameters(), 0.1), lr=LR, betas=(0.9, 0.99))
    x, y = _batch(cfg)
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


def _median_time(fn, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(cfg, steps, rounds, threads_list):
    torch = torch_or_none()
    runs = {f"tinytorch-{t}t": tinytorch_setup(cfg, t) for t in threads_list}
    if torch is not None: runs["pytorch"] = torch_setup(cfg)
    for train, fwd in runs.values():            # warm up every path once
        train(); fwd()
    samples = {name: {"train": [], "forward": []} for name in runs}
    for _ in range(rounds):
        for name, (train, fwd) in runs.items():
            pause()
            samples[name]["train"] += _median_time(train, steps)
            pause()
            samples[name]["forward"] += _median_time(fwd, steps)
    return {name: {k: float(np.median(v)) for k, v in s.items()} for name, s in samples.items()}


MEMORY_CHILD = r"""
import sys, json, numpy as np
sys.path.insert(0, {root!r})
from benchmarks.train_step import CONFIGS, tinytorch_setup, torch_setup
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key): return int(line.split()[1]) * 1024
cfg = CONFIGS[{name!r}]
train, _ = (tinytorch_setup(cfg, {threads}) if {framework!r} == 'tinytorch' else torch_setup(cfg))
open('/proc/self/clear_refs', 'w').write('5')
before = rss('VmRSS:')
for _ in range(3): train()
print(json.dumps({{'peak_growth': rss('VmHWM:') - before, 'resident': before}}))
"""


def peak_memory(name, framework, threads=1):
    """Peak RSS growth over the built model during its first three training steps (activations, gradients,
    optimizer state), in a fresh process; None where /proc is unavailable."""
    if not os.path.exists("/proc/self/clear_refs"): return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = MEMORY_CHILD.format(root=root, name=name, framework=framework, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["A", "B"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and framework")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="tinytorch data-parallel threads")
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
            times = measure(cfg, args.steps, args.rounds, args.threads)
            ref = times.get("pytorch")
            rows = []
            for run, t in times.items():
                rows.append([run, t["train"] * 1e3, None if ref is None else t["train"] / ref["train"],
                             t["forward"] * 1e3, None if ref is None else t["forward"] / ref["forward"]])
            print_table(["run", "train step ms", "ratio", "forward ms", "ratio"], rows,
                        title=f"Config {name}: {cfg}")
            results[name]["times_s"] = times
        if not args.no_memory:
            mem = {"tinytorch": peak_memory(name, "tinytorch", max(args.threads))}
            if ref is not None: mem["pytorch"] = peak_memory(name, "pytorch")
            results[name]["memory"] = mem
            mrows = [[fw, m["peak_growth"] / 2**20, m["resident"] / 2**20] for fw, m in mem.items() if m]
            if mem.get("pytorch") and mem.get("tinytorch"):
                ratio = mem["tinytorch"]["peak_growth"] / max(mem["pytorch"]["peak_growth"], 1)
                print(f"peak memory ratio tinytorch/pytorch: {ratio:.2f}")
                results[name]["memory_ratio"] = ratio
            print_table(["framework", "step peak growth MiB", "resident before MiB"], mrows)
    path = write_results("train_step", {"results": results}, info)
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
