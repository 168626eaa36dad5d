"""``tito train`` and ``tito generate``: the main job.

The work is done by the package (``tinytorch.training``, ``tinytorch.checkpoints``, ``tinytorch.generation``); this
file turns flags into a configuration, prints what happens, and turns every foreseeable
problem (bad data, bad checkpoint, bad prompt, a diverging loss, Ctrl-C) into a clear
message and an exit code instead of a traceback. tinytorch is imported only when a
command runs, so ``tito`` keeps working while a learner's package is half built.

Exit codes: 0 done, 1 bad input or failed run, 130 interrupted by Ctrl-C (a checkpoint
was saved; ``--resume`` continues it).
"""
from __future__ import annotations

import codecs
import inspect
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer

INTERRUPTED = 130
_STARTED = time.perf_counter()          # tito was imported just now: the "in all" time counts from here

# Every TrainConfig field is a flag: (field, type, extra flag names (nanoGPT's), help).
HYPERPARAMETERS = (
    ("data", str, (), "Corpus: a text file, 'shakespeare' (the default: Tiny Shakespeare, shipped with "
                      "tinytorch) or 'python-stdlib' (Python's own standard library source)."),
    ("tokenizer", str, (), "'char' (one token per character) or 'gpt2' (GPT-2's byte-level BPE)."),
    ("val_fraction", float, (), "Fraction of the text, at its end, held out for validation."),
    ("context_length", int, ("--block-size",), "Tokens of context the model sees."),
    ("embed_dim", int, ("--n-embd",), "Model width."),
    ("num_layers", int, ("--n-layer",), "Transformer blocks."),
    ("num_heads", int, ("--n-head",), "Attention heads per block."),
    ("mlp_ratio", int, (), "MLP hidden width as a multiple of the model width."),
    ("dropout", float, (), "Dropout probability."),
    ("bias", bool, (), "Biases in the Linear and LayerNorm layers."),
    ("batch_size", int, (), "Sequences per micro-batch."),
    ("grad_accum_steps", int, ("--gradient-accumulation-steps",), "Micro-batches per optimizer step."),
    ("max_iters", int, (), "Optimizer steps to train for."),
    ("learning_rate", float, ("--lr",), "Peak learning rate (after warmup)."),
    ("min_lr", float, (), "Learning rate at the end of the cosine decay."),
    ("warmup_iters", int, (), "Steps of linear warmup."),
    ("lr_decay_iters", int, (), "Step where the cosine reaches min_lr (default: the preset's, or max_iters when --max-iters is given)."),
    ("weight_decay", float, (), "AdamW weight decay, applied to weight matrices only."),
    ("beta1", float, (), "AdamW beta1."),
    ("beta2", float, (), "AdamW beta2."),
    ("grad_clip", float, (), "Clip the global gradient norm to this value (0: no clipping)."),
    ("eval_interval", int, (), "Evaluate, and write a checkpoint, every this many steps."),
    ("eval_iters", int, (), "Batches per split in each evaluation."),
    ("log_interval", int, (), "Steps between progress lines when no progress bar is shown."),
    ("seed", int, (), "Random seed: initialisation, batches and dropout."),
    ("threads", int, (), "Parallel workers: each step's batch is split over them (0: one per core). "
                        "They are processes where the system can fork, else threads."),
)


class JobError(Exception):
    """A problem the user can fix; its message is printed without a traceback."""


def _console(stderr=False):
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True)


def _say(text="", **kw):
    print(text, flush=True, **kw)


def _fail(message: str, code: int = 1):
    _console(stderr=True).print(message, style="red")
    raise typer.Exit(code)


def _import(what: str):
    """Import tinytorch's training or generation module, with a clear message if the package is incomplete."""
    import importlib
    try:
        return importlib.import_module(f"tinytorch.{what}")
    except Exception as e:         # any error importing a learner's package: report, do not crash
        raise JobError(f"tito needs the tinytorch package through module {what} (tinytorch.{what}), but importing it "
                       f"failed: {type(e).__name__}: {e}\nExport the modules first: tito export") from None


def _errors(training):
    """The exception types that mean bad input rather than a bug."""
    from tinytorch.core.layers import CheckpointError, StateDictError
    return (training.DataError, CheckpointError, StateDictError, training.TrainingDiverged, JobError, ValueError,
            OSError)


# ---------------------------------------------------------------------------------- memory ----
GiB = 2 ** 30


def available_memory():
    """(bytes this process can still allocate, where that limit comes from), or (None, None) if unknown.

    The smallest of: the kernel's MemAvailable, the cgroup's memory.max minus its usage, and the
    address-space limit (ulimit -v) minus what the process has mapped already."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:2]}
        if "MemAvailable" in info: limits.append((info["MemAvailable"], "available memory (MemAvailable)"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        top = Path("/sys/fs/cgroup")
        high = (top / "memory.max").read_text().strip()
        if high != "max":
            limits.append((int(high) - int((top / "memory.current").read_text()), "the cgroup memory limit"))
    except (OSError, ValueError):
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
            limits.append((soft - vm, "the address-space limit (ulimit -v)"))
    except (ImportError, OSError, ValueError, StopIteration):
        pass
    return min(limits) if limits else (None, None)


def _gib(n):
    return f"{n / GiB:,.1f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:,.0f} MiB"


def training_memory(config, vocab_size):
    """A rough upper estimate, in bytes, of what training `config` allocates: float32 weights, gradients and
    the two AdamW moments (4 x parameters), plus the activations that backward keeps for one micro-batch."""
    from tinytorch.models.transformer import GPTConfig, count_parameters
    c = config
    params = count_parameters(GPTConfig(vocab_size=vocab_size, max_seq_len=c.context_length, embed_dim=c.embed_dim,
                                        num_layers=c.num_layers, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                                        bias=c.bias))
    tokens = c.batch_size * c.context_length
    per_layer = tokens * c.embed_dim * (16 + 4 * c.mlp_ratio) + 3 * c.batch_size * c.num_heads * c.context_length ** 2
    activations = 4 * (c.num_layers * per_layer + 3 * tokens * vocab_size + 4 * tokens * c.embed_dim)
    return 16 * params, activations


def _check_memory(needed, what, advice, force):
    if force:
        return
    free, source = available_memory()
    if free is not None and needed > free:
        raise JobError(f"{what} needs about {_gib(needed)}, but {source} allows {_gib(max(free, 0))}. {advice}, "
                       "or pass --no-memory-check to try anyway.")


# --------------------------------------------------------------------------------- train ----
def _flag_names(field, extra):
    return (f"--{field.replace('_', '-')}", *extra)


def _next_free(folder: Path) -> Path:
    """``folder`` if it holds no checkpoint yet, else folder-2, folder-3, ..."""
    if not (folder / "ckpt.npz").exists():
        return folder
    n = 2
    while (folder.parent / f"{folder.name}-{n}" / "ckpt.npz").exists():
        n += 1
    return folder.parent / f"{folder.name}-{n}"


def _flag_of(field):
    extra = next((h[2] for h in HYPERPARAMETERS if h[0] == field), ())
    names = _flag_names(field, extra)
    return names[0] + (f" ({', '.join(names[1:])})" if names[1:] else "")


def _config_error(e, given):
    """A TrainConfig error with each field the user set named by its flag, and the others marked as derived."""
    text = str(e)
    for field in sorted(given, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){field}(?![\w-])", f"--{field.replace('_', '-')}", text)
    return JobError(text)


def _build_config(training, preset, resume_ckpt, given):
    for field, value in given.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise JobError(f"{_flag_of(field)} must be a finite number, got {value}")
    cores = os.cpu_count() or 1
    if given.get("threads", 0) > 8 * cores:        # each thread gets a slice of the batch and of the optimizer step
        raise JobError(f"--threads {given['threads']} is far more than this machine's {cores} cores; give at most "
                       f"{8 * cores} (0: one per core)")
    if "max_iters" in given and given["max_iters"] < (1 if resume_ckpt is None else 0):
        raise JobError(f"--max-iters must be at least 1 (the number of optimizer steps to train), got {given['max_iters']}")
    try:
        return _make_config(training, preset, resume_ckpt, given)
    except ValueError as e:
        raise _config_error(e, given) from None


def _make_config(training, preset, resume_ckpt, given):
    if resume_ckpt is not None:
        return _import("checkpoints").resume_config(resume_ckpt["config"], **given)
    base = training.PRESETS.get(preset)
    if base is None:
        raise JobError(f"unknown preset {preset!r}; presets: {', '.join(training.PRESETS)}")
    merged = {**base, **given}
    if "max_iters" in given and "lr_decay_iters" not in given:
        merged["lr_decay_iters"] = merged["max_iters"]          # decay over the whole run, as nanoGPT advises
    defaults = training.TrainConfig()
    decay = merged.get("lr_decay_iters", defaults.lr_decay_iters)
    if "warmup_iters" not in given and merged.get("warmup_iters", defaults.warmup_iters) >= decay:
        merged["warmup_iters"] = decay // 10                     # a short run keeps a short warmup
    return training.TrainConfig(**merged)


def _train(preset: str, out: Optional[Path], resume: Optional[Path], overwrite: bool, sample_tokens: int,
           progress: bool, no_memory_check: bool, **hyper):
    training, checkpoints = _import("training"), _import("checkpoints")
    given = {k: v for k, v in hyper.items() if v is not None}
    if sample_tokens < 0:
        raise JobError(f"--sample-tokens must be >= 0 (0: no sample), got {sample_tokens}")
    ckpt = checkpoints.load_checkpoint(resume) if resume is not None else None
    config = _build_config(training, preset, ckpt, given)
    if ckpt is not None and ckpt["step"] >= config.max_iters:
        _say(f"{ckpt['path']} is a finished run: it has trained {ckpt['step']} of {config.max_iters} steps, so there "
             f"is nothing to train. To train longer: tito train --resume {resume} --max-iters {ckpt['step'] + 1000}; "
             f"to sample: tito generate --checkpoint {resume}")
        return
    tok = ckpt["tokenizer"] if ckpt is not None else None
    vocab = (tok and len(tok.get("chars") or tok.get("lengths", ()))) or (256 if config.tokenizer == "char" else 50257)
    _check_memory(8 * (sample_tokens + config.context_length), f"--sample-tokens {sample_tokens:,} (a buffer of 8 bytes "
                  "a token)", "Ask for fewer tokens (0: no sample)", no_memory_check)
    weights, activations = training_memory(config, vocab)
    _check_memory(weights + activations + 8 * (sample_tokens + config.context_length),
                  f"training this model (parameters and AdamW state {_gib(weights)}, activations for batch "
                  f"{config.batch_size} x context {config.context_length}: {_gib(activations)})",
                  "Lower --batch-size, --context-length, --embed-dim or --num-layers", no_memory_check)
    if ckpt is not None:
        out_dir = Path(out) if out is not None else Path(ckpt["path"]).parent
    elif out is not None:
        out_dir = Path(out)
        if (out_dir / "ckpt.npz").exists() and not overwrite:
            raise JobError(f"{out_dir} already holds a checkpoint. Continue it with --resume {out_dir}, "
                           f"start over with --overwrite, or choose another --out.")
    else:
        out_dir = _next_free(Path("runs") / preset)
    what = "Continuing" if ckpt is not None else "Training"
    kind = "a character-level GPT" if config.tokenizer == "char" else "a GPT on GPT-2 BPE tokens"
    _say(f"{what} {kind} on {config.data} ({'preset ' + preset if ckpt is None else 'checkpoint'}), "
         f"{config.max_iters} steps; output in {out_dir}")
    parallel = _import("parallel")
    trainer, result = checkpoints.run(config, out_dir, resume=ckpt["path"] if ckpt else None, log=_say,
                                   progress="auto" if progress else "none", overwrite=ckpt is not None or overwrite,
                                   runner=lambda model: parallel.data_parallel(model, config.threads))
    if result.status == "interrupted":
        _say(f"Stopped at step {result.step} of {config.max_iters}. Continue with: tito train --resume {out_dir}")
        raise typer.Exit(INTERRUPTED)
    speed = f"{result.ms_per_iter:.1f} ms/iter" if result.steps_run else "no steps run"
    _say(f"Done: step {result.step}, train loss {result.train_loss:.4f}, val loss {result.val_loss:.4f}; "
         f"{result.steps_run} steps in {result.seconds:.0f} s, {speed}")
    _say(f"checkpoint: {out_dir / 'ckpt.npz'}")
    if (out_dir / "loss.png").exists():
        _say(f"loss plot:  {out_dir / 'loss.png'}")
    if sample_tokens > 0:
        _say(f"A sample (temperature 0.8, top-k 200), also in {out_dir / 'sample.txt'}; generate more with: "
             f"tito generate --checkpoint {out_dir}")
        _say("-" * 60)
        generation = _import("generation")
        model, tokenizer, _ = checkpoints.model_from_checkpoint(out_dir / "ckpt.npz")
        prompt = "def " if config.data == "python-stdlib" and config.tokenizer == "char" else ""
        sys.stdout.write(prompt)
        text = _stream(generation, model, tokenizer,
                       tokenizer.encode(prompt) if prompt else _default_prompt(tokenizer),
                       sample_tokens, 0.8, 200, None, config.seed, ())
        _say("-" * 60)
        try:
            checkpoints.write_atomic(out_dir / "sample.txt", lambda f: f.write((prompt + text).encode("utf-8")))
        except OSError as e:
            raise JobError(f"could not write {out_dir / 'sample.txt'}: {e.strerror or e} (the checkpoint is saved)") from None
    _say(f"{time.perf_counter() - _STARTED:.0f} s in all (setup, training, evaluation, files and sample)")


def train_cmd(**kwargs):
    """Train a character-level GPT (default: on Python's standard library source, about 3 minutes on 2 cores)."""
    kwargs["out"] = kwargs["out"] if kwargs.get("out") is not None else kwargs.pop("out_dir", None)
    kwargs.pop("out_dir", None)
    # A diverging run overflows in NumPy (also in worker threads, where np.errstate does not reach); the trainer
    # reports it in one line, so NumPy's floating-point warnings would only bury that line.
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
    try:
        _train(**kwargs)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("\nInterrupted.", INTERRUPTED)
    except Exception as e:
        _handle(e)


def _handle(e):
    "Print a known error as a message (exit 1); re-raise anything else, which is a bug."
    if isinstance(e, MemoryError):
        _fail(f"out of memory{': ' + str(e) if str(e) else ''}. Ask for less (a smaller --batch-size, "
              "--context-length, --embed-dim or --max-new-tokens).")
    try:
        from tinytorch import training
        known = _errors(training)
    except Exception:
        known = (JobError, ValueError, OSError)
    if isinstance(e, known):
        text = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        _fail(" ".join(text.split("\n")) if isinstance(e, OSError) else text)
    raise e


_train_params = [
    inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
        "default", "--preset", help="Named configuration: default (about 3 minutes on 2 cores), shakespeare-char "
                                    "(nanoGPT's CPU run), tiny (seconds).")),
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
        None, "--out", help="Output folder (default: runs/<preset>, or runs/<preset>-2, ... if that holds a run).")),
    inspect.Parameter("out_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
        None, "--out-dir", help="nanoGPT's name for --out.", show_default=False)),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
        None, "--resume", help="Continue this checkpoint (a ckpt.npz or its run folder) exactly where it stopped.")),
    inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--overwrite", help="Start a new run in an --out folder that already holds a checkpoint.")),
    inspect.Parameter("sample_tokens", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=typer.Option(
        300, "--sample-tokens", help="Tokens of the sample printed at the end (0: none).")),
    inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar (on a terminal) or progress lines.")),
    inspect.Parameter("no_memory_check", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--no-memory-check", help="Start even if the estimated memory exceeds what the machine has.")),
]
for _field, _type, _extra, _help in HYPERPARAMETERS:
    _names = (f"--{_field.replace('_', '-')}/--no-{_field.replace('_', '-')}",) if _type is bool else _flag_names(_field, _extra)
    _train_params.append(inspect.Parameter(_field, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[_type],
                                           default=typer.Option(None, *_names, help=_help, show_default=False)))
train_cmd.__signature__ = inspect.Signature(_train_params)


# ------------------------------------------------------------------------------ generate ----
def _default_prompt(tokenizer):
    """A newline for a character tokenizer that has one (nanoGPT's start), else the end-of-text token or id 0."""
    if hasattr(tokenizer, "stoi"):
        return [tokenizer.stoi["\n"]] if "\n" in tokenizer.stoi else [0]
    special = getattr(tokenizer, "special_tokens", {}) or {}
    return [special["<|endoftext|>"]] if "<|endoftext|>" in special else [0]


def _piece_decoder(tokenizer):
    """A function id -> text that never splits a UTF-8 character of a byte-level tokenizer in two."""
    if hasattr(tokenizer, "decode_bytes"):
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda i: dec.decode(tokenizer.decode_bytes([i]))
    return lambda i: tokenizer.decode([i])


def _stream(generation, model, tokenizer, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, stop):
    "Print the sampled text as it comes; return it."
    piece, parts = _piece_decoder(tokenizer), []
    for i in generation.generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k, top_p=top_p, seed=seed, stop_tokens=stop, stream=True):
        parts.append(piece(int(i)))
        sys.stdout.write(parts[-1])
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)


def _generate(checkpoint: Optional[Path], prompt: str, max_new_tokens: int, temperature: float, top_k: Optional[int],
              top_p: Optional[float], seed: Optional[int], num_samples: int, stop: List[str], no_memory_check: bool,
              hf: Optional[str] = None):
    if num_samples < 1:
        raise JobError(f"--num-samples must be at least 1, got {num_samples}")
    if max_new_tokens < 0:
        raise JobError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    if seed is not None and seed < 0:
        raise JobError(f"--seed must be an integer >= 0, got {seed}")
    for flag, value in (("--temperature", temperature), ("--top-p", top_p)):
        if value is not None and not math.isfinite(value):
            raise JobError(f"{flag} must be a finite number, got {value}")
    _check_memory(8 * (max_new_tokens + len(prompt) + 1), f"--max-new-tokens {max_new_tokens:,} (a buffer of 8 bytes a token)",
                  "Ask for fewer tokens", no_memory_check)
    checkpoints = _import("checkpoints")
    generation = _import("generation")
    model, tokenizer = _model_to_generate(checkpoints, checkpoint, hf)
    try:
        prompt_ids = tokenizer.encode(prompt) if prompt else _default_prompt(tokenizer)
    except (KeyError, ValueError) as e:
        raise JobError(f"the prompt cannot be encoded with this checkpoint's tokenizer: {e}") from None
    stop_ids = []
    for s in stop:
        try:
            ids = tokenizer.encode(s)
        except (KeyError, ValueError) as e:
            raise JobError(f"--stop {s!r} cannot be encoded with this checkpoint's tokenizer: {e}") from None
        if len(ids) != 1:
            raise JobError(f"--stop {s!r} is {len(ids)} tokens; a stop token must be exactly one token")
        stop_ids.append(ids[0])
    try:                                                             # check the sampling options before printing
        generation.sampling_probs([0.0], temperature, top_k, top_p)
    except ValueError as e:
        raise JobError(re.sub(r"^(temperature|top_k|top_p)\b", lambda m: "--" + m[1].replace("_", "-"), str(e))) from None
    for n in range(num_samples):
        if num_samples > 1:
            _say(f"--- sample {n + 1} of {num_samples}")
        sys.stdout.write(prompt)
        _stream(generation, model, tokenizer, prompt_ids, max_new_tokens, temperature, top_k, top_p,
                None if seed is None else seed + n, stop_ids)


def generate_cmd(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="A checkpoint written by tito train (ckpt.npz or its run "
                                                   "folder) (default: the newest runs/*/ckpt.npz)."),
    prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue (default: a new line)."),
    max_new_tokens: int = typer.Option(500, "--max-new-tokens", "-n", help="Tokens to generate."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="Sampling temperature; 0 is greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only from the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample only from the most likely tokens "
                                                                "holding this much probability (nucleus)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for a reproducible sample."),
    num_samples: int = typer.Option(1, "--num-samples", help="Independent samples to print."),
    stop: List[str] = typer.Option([], "--stop", help="Stop when this token is generated (repeatable)."),
    hf: Optional[str] = typer.Option(None, "--hf", help="A Hugging Face GPT-2 folder, or a model name in the local "
                                                        "Hugging Face cache (e.g. gpt2); never downloads."),
    no_memory_check: bool = typer.Option(False, "--no-memory-check",
                                         help="Start even if the estimated memory exceeds what the machine has."),
):
    """Generate text from a trained checkpoint, streamed as it is produced."""
    try:
        _generate(checkpoint, prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples, stop,
                  no_memory_check, hf)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        raise typer.Exit(INTERRUPTED)
    except BrokenPipeError:                     # `tito generate | head`: the reader has seen enough
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise typer.Exit(0)
    except Exception as e:
        _handle(e)


# --------------------------------------------------------------- Hugging Face folders ----
def _hf_module():
    hf = _import("models.hf")
    try:
        hf._safetensors()
    except ImportError as e:
        raise JobError(str(e)) from None
    return hf


def _load_hf_folder(hf, name_or_path):
    folder = hf.resolve_pretrained(name_or_path)
    _console(stderr=True).print(f"(model {folder})")
    return hf.from_pretrained(folder), hf.tokenizer_from_pretrained(folder)


def _model_to_generate(checkpoints, checkpoint, hf_name):
    """(model, tokenizer): --hf's folder, else --checkpoint, else the newest runs/*/ckpt.npz, else the shipped model."""
    if hf_name is not None:
        if checkpoint is not None:
            raise JobError("give either --checkpoint or --hf, not both")
        return _load_hf_folder(_hf_module(), hf_name)
    if checkpoint is None:
        found = sorted(Path("runs").glob("*/ckpt.npz"), key=lambda p: p.stat().st_mtime)
        if not found:
            hf = _hf_module()
            if hf.PRETRAINED_DIR.joinpath("shakespeare-char", "config.json").is_file():
                return _load_hf_folder(hf, hf.PRETRAINED_DIR / "shakespeare-char")
            raise JobError("no checkpoint found under runs/: train one with 'tito train', or pass --checkpoint PATH")
        checkpoint = found[-1]
        _console(stderr=True).print(f"(checkpoint {checkpoint})")
    model, tokenizer, _ = checkpoints.model_from_checkpoint(checkpoints.load_checkpoint(checkpoint))
    return model, tokenizer


def export_hf_cmd(
    run: Path = typer.Argument(..., help="A checkpoint written by tito train (ckpt.npz or its run folder)."),
    directory: Path = typer.Argument(..., help="The Hugging Face model folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the model in a folder that already holds one."),
):
    """Write a trained model as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer files)."""
    try:
        checkpoints = _import("checkpoints")
        hf = _hf_module()
        if directory.exists():
            if not directory.is_dir():
                raise JobError(f"{directory} exists and is not a folder")
            if (directory / "config.json").exists() and not overwrite:
                raise JobError(f"{directory} already holds a model; replace it with --overwrite or choose another folder")
            if any(directory.iterdir()) and not (directory / "config.json").exists():
                raise JobError(f"{directory} is not empty and holds no model; choose an empty or new folder")
        model, tokenizer, _ = checkpoints.model_from_checkpoint(checkpoints.load_checkpoint(run))
        hf.save_pretrained(model, directory, tokenizer)
        _say(f"Wrote {directory}: " + ", ".join(sorted(p.name for p in directory.iterdir())))
        _say(f"Load it with GPT.from_pretrained('{directory}') or transformers' "
             f"GPT2LMHeadModel.from_pretrained('{directory}'); sample it with: tito generate --hf {directory}")
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("\nInterrupted.", INTERRUPTED)
    except Exception as e:
        _handle(e)
