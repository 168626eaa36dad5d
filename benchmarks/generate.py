"""Generation speed: tokens/s at context 64, 256 and 1024, with and without the KV cache, tinytorch and PyTorch.

Run from the repository root (about a minute):

    python -m benchmarks.generate
    python -m benchmarks.generate --quick                          # fewer tokens per measurement
    python -m benchmarks.generate --checkpoint runs/default        # a trained model instead of random weights

The model is the reference configuration A (vocab 65, width 128, 4 layers, 4 heads, biases,
tanh GELU) with room for 1024 positions, in float32. PyTorch runs the same architecture
(benchmarks/_torch_gpt.py) with the SAME weights, copied from the tinytorch model, and the same
algorithm: a preallocated key/value cache per layer, one new position per step, the last
position's logits, greedy argmax.

For each context length L the prompt has L - N tokens and N tokens are generated (decode only:
the prefill of the prompt is not timed), so the measured tokens see contexts from L - N to L.
"no cache" re-runs the model over the whole context for every token, as generation did before
KV caches. With the cache the cost of a token grows only with the attention over the cached
positions, linearly in L; without it, each token costs a full forward over L positions.

The two frameworks alternate in rounds, with a pause whenever the side changes; afterwards PyTorch
runs every cell again alone in a fresh process, and a cell whose PyTorch time beside tinytorch
differs from that by more than noise is flagged and gets no ratio.

Printed: ms per token and tokens/s for each framework and mode, the ratio tinytorch / PyTorch
(time; below 1 is faster), the speedup of the cache, and how many greedy tokens the two frameworks
agree on. Results go to benchmarks/results/generate.json.
"""
import argparse
import time

import numpy as np

from benchmarks._common import (check_reference, environment, interleave, print_environment, print_flagged,
                                print_table, ratio_cell, run_standalone, summarize, torch_or_none, write_results)
from tinytorch import manual_seed, no_grad
from tinytorch.generation import make_kv_caches
from tinytorch.models.transformer import GPT

CONTEXTS = (64, 256, 1024)


def tinytorch_decode(model, prompt, n, cache):
    "Seconds for n greedy tokens after `prompt` (1, T), prefill excluded; and the tokens."
    model.eval()
    seq = np.empty((1, prompt.shape[1] + n), dtype=np.int64)
    seq[:, :prompt.shape[1]] = prompt
    t = prompt.shape[1]
    with no_grad():
        caches = make_kv_caches(model, 1) if cache else None
        logits = model._next_logits(seq[:, :t], caches, 0)
        start = time.perf_counter()
        for i in range(n):
            seq[:, t] = logits.argmax(-1)
            t += 1
            if i == n - 1: break
            logits = (model._next_logits(seq[:, t - 1:t], caches, t - 1) if cache
                      else model._next_logits(seq[:, :t]))
        return time.perf_counter() - start, seq[0, prompt.shape[1]:].tolist()


def torch_decode(torch, model, prompt, n, cache):
    "The same loop in PyTorch with benchmarks/_torch_gpt.py's preallocated LayerCache."
    from benchmarks._torch_gpt import LayerCache
    seq = torch.empty((1, prompt.shape[1] + n), dtype=torch.long)
    seq[:, :prompt.shape[1]] = torch.from_numpy(prompt)
    t = prompt.shape[1]
    width = model.wte.weight.shape[1]
    with torch.no_grad():
        caches = [LayerCache(1, model.heads, model.block_size, width // model.heads) for _ in model.blocks] if cache else None
        logits = model(seq[:, :t], caches=caches)[:, -1]
        start = time.perf_counter()
        for i in range(n):
            seq[:, t] = logits.argmax(-1)
            t += 1
            if i == n - 1: break
            logits = (model(seq[:, t - 1:t], caches=caches, start=t - 1)[:, -1] if cache
                      else model(seq[:, :t])[:, -1])
        return time.perf_counter() - start, seq[0, prompt.shape[1]:].tolist()


def torch_copy(torch, model):
    "benchmarks/_torch_gpt.GPT with the tinytorch model's weights."
    from benchmarks._torch_gpt import GPT as TorchGPT
    c = model.config
    ref = TorchGPT(c.vocab_size, c.embed_dim, c.num_layers, c.num_heads, c.max_seq_len).eval()
    sd = model.state_dict()
    names = {"wte.weight": "token_embedding.weight", "wpe.weight": "position_embedding.weight",
             "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}
    for i in range(c.num_layers):
        for theirs, ours in (("ln1", "ln1"), ("ln2", "ln2"), ("qkv", "attn.qkv_proj"), ("proj", "attn.out_proj"),
                             ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{theirs}.{kind}"] = f"blocks.{i}.{ours}.{kind}"
    with torch.no_grad():
        for theirs, p in ref.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(sd[names[theirs]])))
    return ref


def load_model(checkpoint):
    if checkpoint:
        from tinytorch.checkpoints import model_from_checkpoint
        model, _, _ = model_from_checkpoint(checkpoint)
        if model.config.max_seq_len < max(CONTEXTS) or not model.config.bias:
            raise SystemExit(f"{checkpoint}: the benchmark needs max_seq_len >= {max(CONTEXTS)} and biases "
                             f"(got max_seq_len {model.config.max_seq_len}, bias {model.config.bias})")
        return model
    manual_seed(0)
    return GPT(65, 128, 4, 4, max_seq_len=max(CONTEXTS))


MODES = {"cache": True, "no_cache": False}


def prompts(vocab_size, n):
    "[(context, prompt)]: for each context length a random prompt of context - n tokens (the same in every process)."
    rng = np.random.default_rng(0)
    return [(context, rng.integers(0, vocab_size, size=(1, context - n))) for context in CONTEXTS]


def torch_alone(checkpoint, n, repeat):
    "PyTorch's seconds per token of every cell, measured with nothing else running: {'context|mode': samples}."
    import torch
    model = load_model(checkpoint)
    ref = torch_copy(torch, model)
    out = {}
    for context, prompt in prompts(model.config.vocab_size, n):
        for mode, cache in MODES.items():
            torch_decode(torch, ref, prompt, n, cache)                     # warm-up
            out[f"{context}|{mode}"] = [torch_decode(torch, ref, prompt, n, cache)[0] / n for _ in range(repeat)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=48, help="Tokens generated per measurement.")
    ap.add_argument("--repeat", type=int, default=3, help="Measurements per cell (the median is reported).")
    ap.add_argument("--quick", action="store_true", help="16 tokens, one measurement.")
    ap.add_argument("--checkpoint", help="Use a trained checkpoint (max_seq_len >= 1024, with biases).")
    args = ap.parse_args()
    n, repeat = (16, 1) if args.quick else (args.tokens, args.repeat)
    info = environment()
    print_environment(info)
    torch = torch_or_none()
    model = load_model(args.checkpoint)
    ref = torch_copy(torch, model) if torch is not None else None
    rows, results, checks = [], [], {}
    cells = []
    for context, prompt in prompts(model.config.vocab_size, n):
        cell = {"context": context, "new_tokens": n}
        samplers = {}
        for mode, cache in MODES.items():
            cell[f"tinytorch_{mode}_tokens"] = tinytorch_decode(model, prompt, n, cache)[1]      # also a warm-up
            samplers[("tinytorch", mode)] = lambda p=prompt, c=cache: tinytorch_decode(model, p, n, c)[0] / n
            if ref is not None:
                torch_tokens = torch_decode(torch, ref, prompt, n, cache)[1]
                cell[f"agree_{mode}"] = sum(a == b for a, b in zip(cell[f"tinytorch_{mode}_tokens"], torch_tokens))
                samplers[("torch", mode)] = lambda p=prompt, c=cache: torch_decode(torch, ref, p, n, c)[0] / n
        assert cell["tinytorch_cache_tokens"] == cell["tinytorch_no_cache_tokens"], "cache changed the tokens"
        samples = interleave(samplers, rounds=repeat, per_round=1, side=lambda key: key[0])
        cells.append((cell, {key: summarize(v) for key, v in samples.items()}))
    alone = ({k: summarize(v) for k, v in run_standalone(torch_alone, args.checkpoint, n, max(repeat, 3)).items()}
             if ref is not None else {})
    for cell, timings in cells:
        context = cell["context"]
        for mode in MODES:
            cell[f"tinytorch_{mode}_ms_per_token"] = 1000 * timings[("tinytorch", mode)].median
            if ref is not None:
                th = timings[("torch", mode)]
                cell[f"torch_{mode}_ms_per_token"] = 1000 * th.median
                cell[f"torch_{mode}_alone_ms_per_token"] = 1000 * alone[f"{context}|{mode}"].median
                checks[f"context {context} {mode}"] = cell[f"check_{mode}"] = \
                    check_reference(th, alone[f"{context}|{mode}"])
        results.append(cell)
        tt_c, tt_n = cell["tinytorch_cache_ms_per_token"], cell["tinytorch_no_cache_ms_per_token"]
        th_c, th_n = cell.get("torch_cache_ms_per_token"), cell.get("torch_no_cache_ms_per_token")
        rows.append([context, tt_c, 1000 / tt_c, th_c, ratio_cell(tt_c, th_c, cell.get("check_cache")),
                     tt_n, th_n, ratio_cell(tt_n, th_n, cell.get("check_no_cache")), tt_n / tt_c,
                     None if ref is None else f"{cell['agree_cache']}/{n}"])
    print_table(["context", "tt cache ms/tok", "tt tok/s", "torch cache ms/tok", "ratio", "tt no-cache ms/tok",
                 "torch no-cache ms/tok", "ratio", "cache speedup", "same tokens"], rows,
                title=f"Greedy decoding, {n} new tokens per context (ratio = tinytorch time / PyTorch time)")
    print_flagged(checks)
    c0, c1 = results[0]["tinytorch_cache_ms_per_token"], results[-1]["tinytorch_cache_ms_per_token"]
    print(f"\nWith the cache, a token at context {CONTEXTS[-1]} costs {c1 / c0:.2f}x one at context {CONTEXTS[0]} "
          f"({CONTEXTS[-1] // CONTEXTS[0]}x the context); tinytorch's cached and uncached tokens are identical.")
    path = write_results("generate", {"config": model.config.to_dict(), "results": results}, info)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
