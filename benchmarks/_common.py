"""Shared helpers for the benchmarks: timing, side-by-side measurement and its self-check, tables,
results files, and the machine's BLAS and thread setup.

Only ratios measured in one run mean anything (the machine's speed drifts between runs), so a
benchmark measures tinytorch and PyTorch close together in time: `interleave` alternates the two
sides in rounds within one process, or a side runs in its own process (`run_standalone`) between
the other's. Sharing a process is not harmless: OpenBLAS worker threads spin for about 0.1 s after
each BLAS call, and tinytorch's worker threads stay alive, so a PyTorch block timed right after
NumPy work can be slowed several times over. `interleave` pauses whenever it switches sides, and
every comparison checks itself: `check_reference` compares the PyTorch time measured next to
tinytorch with a fresh PyTorch measurement in a process of its own (`run_standalone`), and a
deviation beyond the noise of the two measurements flags the comparison, whose ratio is then
not printed (`ratio_cell`).
`OPENBLAS_THREAD_TIMEOUT` changes that spin, but only if set before NumPy is first imported; it
is recorded in the environment, never set here.
"""
import gc
import json
import os
import platform
import statistics
import subprocess
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


def block_sampler(fn, min_block=0.01, max_number=1_000_000):
    """A function returning one sample of the seconds per call of `fn()`.

    Calls are timed in blocks long enough (`min_block` seconds) for the clock to be precise;
    the block size is calibrated once, after a warm-up. The garbage collector stays on: creating
    tensors and graph nodes triggers it in real use too.
    """
    fn()
    number = 1
    while True:
        t = _block(fn, number)
        if t >= min_block or number >= max_number: break
        number = min(max_number, number * 10 if t < min_block / 10 else int(number * min_block / t * 1.2) + 1)
    sample = lambda: _block(fn, number) / number        # noqa: E731
    sample.number = number
    return sample


def time_call(fn, repeat=15, min_block=0.01, max_number=1_000_000):
    "Median seconds per call of `fn()` over `repeat` blocks (see `block_sampler`)."
    sample = block_sampler(fn, min_block, max_number)
    return summarize([sample() for _ in range(repeat)], sample.number)


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
# Side by side, and the self-check

def interleave(samplers, rounds=3, per_round=5, side=lambda name: name, gap=0.3):
    """Samples of every sampler (name -> function returning one sample), measured side by side.

    Each of `rounds` rounds takes `per_round` samples of every sampler in turn, in the given order
    in even rounds and reversed in odd ones (A B | B A | A B: a drift of the machine's speed
    affects every side alike). Whenever the next block belongs to another side (`side(name)`,
    e.g. 'torch' and 'tinytorch'), it waits `gap` seconds first, so that the threads of the
    previous side have gone quiet. Returns {name: [samples]}.
    """
    out, names, last = {name: [] for name in samplers}, list(samplers), None
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if last is not None and side(name) != last: pause(gap)
            last = side(name)
            out[name] += [samplers[name]() for _ in range(per_round)]
    return out


def _module_name(fn):
    module = fn.__module__
    if module == "__main__":                       # the benchmark being run: benchmarks.NAME
        main = sys.modules["__main__"]
        module = getattr(main.__spec__, "name", None) or "benchmarks." + Path(main.__file__).stem
    return module


def run_standalone(fn, *args, timeout=1800, **kwargs):
    """`fn(*args, **kwargs)` (a top-level function of a benchmarks module, JSON arguments and result) in a
    fresh Python process of its own: no NumPy, tinytorch or other threads of this process run beside it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import json, sys\n"
            f"sys.path.insert(0, {root!r})\n"
            f"from {_module_name(fn)} import {fn.__name__} as fn\n"
            "result = fn(*json.loads(sys.argv[1]), **json.loads(sys.argv[2]))\n"
            "print('\\nRESULT ' + json.dumps(result))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args), json.dumps(kwargs)],
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the standalone measurement {fn.__name__} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def spread(timing):
    "The relative interquartile range of a Timing: its noise."
    return (timing.q3 - timing.q1) / timing.median if timing.median > 0 else 0.0


@dataclass
class Check:
    "A PyTorch time measured beside tinytorch against a standalone measurement of the same work."
    in_run: float            # median seconds, measured in the comparison
    standalone: float        # median seconds, measured alone in a fresh process
    tolerance: float         # the relative deviation still counted as noise

    @property
    def deviation(self): return self.in_run / self.standalone - 1.0

    @property
    def noisy(self): return self.tolerance > MAX_NOISE

    @property
    def ok(self): return abs(self.deviation) <= self.tolerance and not self.noisy

    def label(self):
        if self.noisy: return f"FLAGGED too noisy (+-{self.tolerance:.0%})"
        return "ok" if self.ok else f"FLAGGED {self.deviation:+.0%}"


MAX_NOISE = 0.5              # beyond this relative noise no comparison is meaningful


def check_reference(in_run, standalone, floor=0.15):
    """Check a PyTorch Timing from a comparison against a standalone Timing of the same work: they agree if
    their medians differ by at most max(`floor`, twice the larger relative interquartile range), and that
    noise is at most MAX_NOISE."""
    return Check(in_run.median, standalone.median, max(floor, 2 * max(spread(in_run), spread(standalone))))


def ratio_cell(ours, reference, check):
    "tinytorch / PyTorch time, or None (printed '-') when the PyTorch side failed its check."
    if reference is None or not reference: return None
    return None if check is not None and not check.ok else ours / reference


def print_flagged(checks):
    "Say which comparisons failed their self-check, and what to do; return how many failed."
    bad = {name: c for name, c in checks.items() if c is not None and not c.ok}
    if bad:
        print(f"\nFLAGGED: {len(bad)} of {len(checks)} comparisons: their PyTorch time differs from a standalone "
              "PyTorch measurement by more than noise (or the noise is too large), so no ratio is printed for them:")
        for name, c in bad.items():
            print(f"  {name}: {c.in_run * 1e3:.3f} ms in the comparison, {c.standalone * 1e3:.3f} ms alone "
                  f"({c.deviation:+.0%}, noise +-{c.tolerance:.0%}{', too noisy' if c.noisy else ''})")
        print("The machine is busy or the two sides disturb each other; rerun on a quiet machine.")
    return len(bad)


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
    if isinstance(obj, Check): return {**asdict(obj), "deviation": obj.deviation, "noisy": obj.noisy, "ok": obj.ok}
    if isinstance(obj, (np.integer, np.floating)): return obj.item()
    if isinstance(obj, np.ndarray): return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"): return asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
