"""Shared helpers for the benchmarks: timing, tables, results files, and the machine's BLAS and thread setup.

Only ratios measured in one run mean anything (the machine's speed drifts between runs), so a
benchmark measures tinytorch, NumPy and PyTorch in the same process, close together in time.
OpenBLAS worker threads spin for about 0.1 s after each BLAS call and steal the second core from
whatever runs next; call `pause()` between a NumPy block and a PyTorch block.
`OPENBLAS_THREAD_TIMEOUT` changes that spin, but only if set before NumPy is first imported; it
is recorded in the environment, never set here.
"""
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")


def torch_or_none():
    "PyTorch if it is installed (it is the reference, never a dependency), else None."
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------------------------------------
# Timing

@dataclass
class Timing:
    "Seconds per call: the median over `repeat` blocks of `number` calls, with the quartiles and the best block."
    median: float
    q1: float
    q3: float
    best: float
    number: int
    repeat: int

    @property
    def us(self): return self.median * 1e6

    def as_dict(self, unit=1e6):
        "Median and quartiles in microseconds (by default), for the results file."
        return {"median_us": self.median * unit, "q1_us": self.q1 * unit, "q3_us": self.q3 * unit,
                "best_us": self.best * unit, "number": self.number, "repeat": self.repeat}


def summarize(samples, number=1):
    "A Timing from per-call samples in seconds."
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return Timing(statistics.median(samples), q[0], q[-1], min(samples), number, len(samples))


def _block(fn, number):
    loop = range(number)
    start = time.perf_counter()
    for _ in loop:
        fn()
    return time.perf_counter() - start


def time_call(fn, repeat=15, min_block=0.01, max_number=1_000_000):
    """Median seconds per call of `fn()`.

    Calls are timed in blocks long enough (`min_block` seconds) for the clock to be precise;
    `number` is calibrated once, after a warm-up. The garbage collector stays on: creating
    tensors and graph nodes triggers it in real use too.
    """
    fn()
    number = 1
    while True:
        t = _block(fn, number)
        if t >= min_block or number >= max_number: break
        number = min(max_number, number * 10 if t < min_block / 10 else int(number * min_block / t * 1.2) + 1)
    return summarize([_block(fn, number) / number for _ in range(repeat)], number)


def time_with_setup(setup, run, repeat=15):
    """Median seconds of `run(state)` where each repetition gets a fresh `state = setup()`, untimed.

    For work that consumes its input, such as a backward pass that frees its graph.
    """
    samples = []
    for _ in range(repeat + 1):
        state = setup()
        gc.collect()
        start = time.perf_counter()
        run(state)
        samples.append(time.perf_counter() - start)
        del state
    return summarize(samples[1:], 1)          # the first run is a warm-up


def pause(seconds=0.3):
    "Let OpenBLAS worker threads stop spinning before timing something else."
    time.sleep(seconds)


# ---------------------------------------------------------------------------------------------
# Environment

def environment():
    "Versions, the NumPy BLAS build, live thread pools (threadpoolctl) and thread variables."
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "env": {k: os.environ.get(k) for k in THREAD_VARIABLES},
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas}
    except Exception as e:                     # the layout of show_config is not a stable API
        info["numpy_blas"] = {"error": repr(e)}
    torch = torch_or_none()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version",
                                                      "architecture", "threading_layer", "prefix")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def print_environment(info):
    blas = info.get("numpy_blas", {})
    print(f"Python {info['python']} on {info['platform']} ({info['cpus_usable']} usable of {info['cpu_count']} CPUs)")
    print(f"NumPy {info['numpy']} with {blas.get('name')} {blas.get('version')}"
          + (f" [{blas['openblas configuration']}]" if blas.get("openblas configuration") else ""))
    if "torch" in info:
        print(f"PyTorch {info['torch']}: {info['torch_threads']} intra-op / {info['torch_interop_threads']} "
              f"inter-op threads")
    if isinstance(info.get("threadpools"), list):
        pools = ", ".join(f"{p['internal_api']} {p['num_threads']} threads"
                          + (f" ({p['architecture']})" if p.get("architecture") else "") for p in info["threadpools"])
        print(f"Thread pools: {pools}")
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items() if v is not None) or "none set"
    print(f"Thread variables: {env}")
    load = info.get("load_average_1min")
    if load is not None and load > 0.5:
        print(f"WARNING: load average {load:.1f} before this benchmark started: other processes are using the CPUs. "
              f"Timings, PyTorch's multi-threaded ones most, will be noisy; rerun on a quiet machine.")


# ---------------------------------------------------------------------------------------------
# Output

def _cell(value, digits):
    if value is None: return "-"
    if isinstance(value, float): return f"{value:.{digits}f}"
    return str(value)


def print_table(headers, rows, title=None, digits=2):
    "Print rows (sequences) under headers, columns aligned; floats with `digits` decimals, None as '-'."
    cells = [[_cell(v, digits) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title: print(f"\n{title}")
    print("  ".join(str(h).rjust(w) if i else str(h).ljust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None


def write_results(name, payload, info=None):
    "Write benchmarks/results/<name>.json with the environment and a timestamp; return the path."
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "environment": info if info is not None else environment(), **payload}
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(obj):
    if isinstance(obj, Timing): return obj.as_dict()
    if isinstance(obj, (np.integer, np.floating)): return obj.item()
    if isinstance(obj, np.ndarray): return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"): return asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
