"""Continue training a tinytorch GPT in PyTorch, data-parallel with DistributedDataParallel.

A tinytorch run exported as a Hugging Face folder (`tito export-hf RUN DIR`, or
`GPT.save_pretrained(DIR, tokenizer)`) is a `transformers.GPT2LMHeadModel`. This script loads it,
trains it further with PyTorch's DistributedDataParallel over N processes (CPU processes with the
gloo backend, or one process per GPU with NCCL), and writes a folder in the same format, which
`GPT.from_pretrained(OUT)` and `tito generate --hf OUT` load back.

    tito train --preset shakespeare-char --out runs/shakespeare-char
    tito export-hf runs/shakespeare-char hf/shakespeare-char
    torchrun --standalone --nproc_per_node 2 examples/continue_in_pytorch.py \\
        hf/shakespeare-char --data runs/shakespeare-char --out hf/shakespeare-char-torch --max-iters 500
    tito generate --hf hf/shakespeare-char-torch

`python examples/continue_in_pytorch.py ...` without torchrun trains in one process.

The data: a tinytorch run folder, or its `data/` folder (the token files train.bin, val.bin and
meta.json that `tito train` writes), or a corpus as `tito train --data` takes it ('shakespeare',
'python-stdlib' or a UTF-8 text file), encoded with the folder's tokenizer and split as tinytorch
splits it (the first 1 - val_fraction of the text trains, the rest validates); a corpus needs the
tinytorch package, token files need only NumPy.

The recipe is tinytorch's: AdamW (weight decay on weight matrices only), linear warmup then cosine
decay, global gradient-norm clipping, gradient accumulation. `--batch-size` counts the sequences
of one optimizer step over all processes; the global batch of step s is drawn from a generator
seeded with (seed, s), and process r takes its r-th share, so a run does not depend on the number
of processes (up to float summation order). Besides the model and tokenizer files, the output
folder holds `train_log.json`: the loss and learning rate of every step and the evaluations.
"""
import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

TOKENIZER_FILES = ("char_vocab.json", "vocab.json", "merges.txt", "tokenizer_config.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="The Hugging Face GPT-2 folder to continue (tito export-hf RUN DIR).")
    p.add_argument("--data", required=True, help="A tinytorch run folder or its data/ folder (token files), or a "
                                                 "corpus: 'shakespeare', 'python-stdlib' or a text file.")
    p.add_argument("--out", required=True, help="The folder to write the trained model to.")
    p.add_argument("--overwrite", action="store_true", help="Replace a model already in --out.")
    p.add_argument("--val-fraction", type=float, default=0.1, help="For a corpus: the part held out, at its end.")
    p.add_argument("--context-length", type=int, default=None, help="Tokens per sequence (default: n_positions).")
    p.add_argument("--batch-size", type=int, default=12, help="Sequences per optimizer step, over all processes.")
    p.add_argument("--grad-accum-steps", type=int, default=1, help="Micro-batches per process and step.")
    p.add_argument("--max-iters", type=int, default=500, help="Optimizer steps.")
    p.add_argument("--learning-rate", "--lr", type=float, default=3e-4,
                   help="Peak learning rate (lower than a run from scratch: the model is trained, AdamW's state new).")
    p.add_argument("--min-lr", type=float, default=3e-5, help="Learning rate at the end of the cosine.")
    p.add_argument("--warmup-iters", type=int, default=None, help="Linear warmup steps (default: max-iters // 10, "
                                                                  "at most 100).")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--grad-clip", type=float, default=1.0, help="Global gradient-norm clip (0: none).")
    p.add_argument("--eval-interval", type=int, default=250, help="Evaluate every this many steps (and at the end).")
    p.add_argument("--eval-iters", type=int, default=20, help="Validation batches per evaluation.")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="'cpu', 'cuda' or 'auto' (CUDA when there is a GPU).")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="Autocast dtype of the forward pass on CUDA (the weights stay float32).")
    args = p.parse_args(argv)
    for name in ("batch_size", "grad_accum_steps", "max_iters", "eval_interval", "eval_iters"):
        if getattr(args, name) < 1: p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.val_fraction < 1.0: p.error("--val-fraction must be in [0, 1)")
    if args.warmup_iters is None: args.warmup_iters = min(100, args.max_iters // 10)
    if not 0 <= args.warmup_iters < args.max_iters: p.error("--warmup-iters must be in [0, max-iters)")
    if not 0.0 <= args.min_lr <= args.learning_rate: p.error("need 0 <= --min-lr <= --learning-rate")
    return args


# ------------------------------------------------------------------------------------ data ----
def read_token_files(folder):
    "(train, val) token arrays from the train.bin, val.bin and meta.json that tinytorch's prepare_data writes."
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    out = []
    for split in ("train", "val"):
        tokens = np.fromfile(folder / f"{split}.bin", dtype=dtype)
        if tokens.size != meta[f"{split}_tokens"]:
            raise ValueError(f"{folder / (split + '.bin')} holds {tokens.size} tokens, meta.json says "
                             f"{meta[split + '_tokens']}")
        out.append(tokens.astype(np.int64))
    return tuple(out)


def load_tokens(data, model_dir, val_fraction):
    "(train, val) token arrays: a run's token files, or a corpus encoded with the model folder's tokenizer."
    path = Path(data)
    for folder in (path / "data", path):
        if (folder / "meta.json").is_file(): return read_token_files(folder)
    if path.is_dir():
        raise FileNotFoundError(f"{path} holds no token files (meta.json, train.bin, val.bin) and no data/ folder")
    from tinytorch.data import load_text                       # a corpus: tinytorch reads and tokenizes it
    from tinytorch.models.hf import tokenizer_from_pretrained
    text, tokenizer = load_text(data), tokenizer_from_pretrained(model_dir)
    cut = int(len(text) * (1.0 - val_fraction))
    return tuple(np.asarray(tokenizer.encode(part), dtype=np.int64) for part in (text[:cut], text[cut:]))


def get_batch(data, step, batch_size, context_length, seed):
    "The global batch of step `step`: `batch_size` random windows (x, y), the same for any number of processes."
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(data) - context_length, size=batch_size)
    window = data[starts[:, None] + np.arange(context_length + 1)]
    return window[:, :-1], window[:, 1:]


def eval_batches(data, eval_iters, batch_size, context_length, seed):
    "The fixed validation batches of every evaluation."
    return [get_batch(data, (1 << 32) + i, batch_size, context_length, seed) for i in range(eval_iters)]


# ---------------------------------------------------------------------------------- training ----
def lr_at(step, args):
    "tinytorch's (and nanoGPT's) schedule: linear warmup, cosine decay to min_lr at max_iters."
    if step < args.warmup_iters: return args.learning_rate * (step + 1) / (args.warmup_iters + 1)
    ratio = (step - args.warmup_iters) / (args.max_iters - args.warmup_iters)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.learning_rate - args.min_lr)


def lm_loss(model, x, y, autocast):
    with autocast():
        logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def setup():
    "(rank, world size, local rank): torchrun's environment, or one process without it."
    if "RANK" not in os.environ: return 0, 1, 0
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    return rank, world, local


def main(argv=None):
    args = parse_args(argv)
    rank, world, local_rank = setup()
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    try:
        train(args, rank, world, device, say)
    finally:
        if world > 1: dist.destroy_process_group()


def train(args, rank, world, device, say):
    import transformers
    transformers.utils.logging.disable_progress_bar()
    model_dir, out = Path(args.model), Path(args.out)
    if rank == 0 and (out / "config.json").exists() and not args.overwrite:
        raise SystemExit(f"{out} already holds a model; pass --overwrite or choose another --out")
    per_process, rest = divmod(args.batch_size, world * args.grad_accum_steps)
    if rest or not per_process:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of processes x --grad-accum-steps "
                         f"({world} x {args.grad_accum_steps})")
    train_data, val_data = load_tokens(args.data, model_dir, args.val_fraction)
    torch.manual_seed(args.seed)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir).to(device)
    cfg = model.config
    T = args.context_length or cfg.n_positions
    if T > cfg.n_positions: raise SystemExit(f"--context-length {T} exceeds the model's n_positions {cfg.n_positions}")
    for name, data in (("training", train_data), ("validation", val_data)):
        if len(data) < T + 1: raise SystemExit(f"the {name} data has {len(data)} tokens, too few for context {T}")
        if data.max() >= cfg.vocab_size:
            raise SystemExit(f"the {name} data holds token {data.max()}, but the model's vocabulary has "
                             f"{cfg.vocab_size}: the data was not tokenized for this model")
    say(f"{model_dir}: GPT-2 with {sum(p.numel() for p in model.parameters()):,} parameters ({cfg.n_layer} layers, "
        f"{cfg.n_head} heads, width {cfg.n_embd}); {len(train_data):,} train and {len(val_data):,} val tokens")
    backend = "no" if world == 1 else "NCCL" if device.type == "cuda" else "gloo"
    say(f"{world} process(es) on {device.type} ({backend} all-reduce), {per_process} sequences x "
        f"{args.grad_accum_steps} micro-batches each per step, context {T}")
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(args.beta1, args.beta2))
    autocast = ((lambda: torch.autocast("cuda", dtype=getattr(torch, args.dtype)))
                if device.type == "cuda" and args.dtype != "float32" else contextlib.nullcontext)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and args.dtype == "float16")
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    val_batches = eval_batches(val_data, args.eval_iters, per_process * world, T, args.seed)
    log = {"model": str(model_dir), "data": str(args.data), "world_size": world, "device": device.type,
           "args": vars(args), "step": [], "loss": [], "lr": [], "eval_step": [], "eval_val": []}

    def all_mean(value):
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        if world > 1: dist.all_reduce(t)
        return t.item() / world

    def evaluate(step):
        model.eval()
        with torch.no_grad():
            local = np.mean([lm_loss(model, to(x[rank::world]), to(y[rank::world]), autocast).item()
                             for x, y in val_batches])
        model.train()
        loss = all_mean(local)
        log["eval_step"].append(step); log["eval_val"].append(loss)
        say(f"step {step}: val loss {loss:.4f}")

    model.train()
    evaluate(0)
    start = time.perf_counter()
    for step in range(args.max_iters):
        lr = lr_at(step, args)
        for group in optimizer.param_groups: group["lr"] = lr
        x, y = get_batch(train_data, step, args.batch_size, T, args.seed)
        mine = slice(rank * per_process * args.grad_accum_steps, (rank + 1) * per_process * args.grad_accum_steps)
        x, y = x[mine], y[mine]
        total = 0.0
        for micro in range(args.grad_accum_steps):
            part = slice(micro * per_process, (micro + 1) * per_process)
            last = micro == args.grad_accum_steps - 1
            sync = ddp.no_sync() if world > 1 and not last else contextlib.nullcontext()
            with sync:
                loss = lm_loss(ddp, to(x[part]), to(y[part]), autocast) / args.grad_accum_steps
                scaler.scale(loss).backward()
            total += loss.item()
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss = all_mean(total)
        log["step"].append(step); log["loss"].append(loss); log["lr"].append(lr)
        if step % 10 == 0 or step == args.max_iters - 1:
            ms = 1000 * (time.perf_counter() - start) / (step + 1)
            say(f"step {step}: loss {loss:.4f}, lr {lr:.2e}, {ms:.0f} ms/step")
        if (step + 1) % args.eval_interval == 0 or step + 1 == args.max_iters:
            evaluate(step + 1)
    check_replicas_agree(model, world, device)
    if rank == 0:
        save(model, model_dir, out, log)
        say(f"wrote {out}: load it with GPT.from_pretrained('{out}') or sample it with tito generate --hf {out}")


def check_replicas_agree(model, world, device):
    "Every process must end with the same weights (DDP's promise); a mismatch would make the saved model arbitrary."
    if world == 1: return
    with torch.no_grad():
        mine = torch.stack([p.double().sum() for p in model.parameters()]).to(device)
        first = mine.clone()
        dist.broadcast(first, 0)
        if not torch.equal(mine, first):
            raise RuntimeError("the processes ended with different weights")


def save(model, model_dir, out, log):
    "The trained model as a Hugging Face folder, with the tokenizer files of the folder it came from."
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:                               # no tokenizer file of another kind is left behind
        if (out / name).exists(): (out / name).unlink()
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file(): shutil.copyfile(model_dir / name, out / name)
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
