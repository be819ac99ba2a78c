#!/usr/bin/env python3
"""Golden outputs from Hugging Face transformers for a duet checkpoint.

Loads the checkpoint written by `duet-make-model` with transformers
(AutoModelForCausalLM: Qwen3ForCausalLM / LlamaForCausalLM) in fp32 on the
CPU with eager attention, and records for several prompt lengths:
  - logits at a few positions of a full forward pass (a strided sample of the
    vocabulary plus the top 10), and
  - a 32-token greedy continuation (EOS ignored), with the logits sample of the
    last step.
The checkpoint files' FNV-1a 64 hashes are recorded so the C++ test can prove
it regenerated the very same bytes.

Usage (on a machine with torch + transformers, e.g. the GPU machine):
  python3 scripts/make_golden.py --model /tmp/tiny --out tests/golden/tiny.json
For the CUDA backend's whole-model check (bf16 on the GPU, 10 prompts):
  python3 scripts/make_golden.py --model /tmp/qwen3-4b --out /tmp/q4b.json \
      --dtype bfloat16 --device cuda --no-hash \
      --lengths 1,5,17,33,64,100,128,200,257,300 --new-tokens 16
  duet-hf-compare --model /tmp/qwen3-4b --golden /tmp/q4b.json
Tie-aware greedy check for random-weight models with flat distributions
(tools/README.md): golden as above, then compare writing duet's
continuations, score them with transformers, and compare again with the
scores (a continuation that differs only by taking bf16-tied tokens counts):
  python3 scripts/make_golden.py --model /tmp/tiny --out /tmp/tiny_g.json \
      --dtype bfloat16 --device cuda --no-hash \
      --lengths 1,5,17,33,64,100,128,200,257,300 --new-tokens 16
  duet-hf-compare --model /tmp/tiny --golden /tmp/tiny_g.json \
      --continuations-out /tmp/tiny_cont.json
  python3 scripts/hf_score_continuations.py --model /tmp/tiny \
      --continuations /tmp/tiny_cont.json --golden /tmp/tiny_g.json \
      --out /tmp/tiny_scores.json --dtype bfloat16 --device cuda
  duet-hf-compare --model /tmp/tiny --golden /tmp/tiny_g.json \
      --tie-aware-scores /tmp/tiny_scores.json
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM

PROMPT_LENGTHS = [1, 17, 100, 300]
NEW_TOKENS = 32
VOCAB_STRIDE = 97
TOP_K = 10


def fnv1a64(path):
    h = 0xCBF29CE484222325
    with open(path, "rb") as f:
        data = f.read()
    # Chunked pure-python FNV is slow for 40 MB; numpy-free but bounded work.
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def prompt_ids(length, vocab_limit):
    """Deterministic pseudo-random ids (a 32-bit LCG), same as the C++ test."""
    x = 12345 + length
    ids = []
    for _ in range(length):
        x = (1103515245 * x + 12345) & 0x7FFFFFFF
        ids.append(x % vocab_limit)
    return ids


def sample(row):
    top = torch.topk(row, TOP_K)
    return {
        "stride_values": row[::VOCAB_STRIDE].tolist(),
        "top_ids": top.indices.tolist(),
        "top_values": top.values.tolist(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-limit", type=int, default=100000,
                    help="prompt ids are drawn below this")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-hash", action="store_true",
                    help="skip the checkpoint hashes (slow for GB files)")
    ap.add_argument("--lengths", default=",".join(map(str, PROMPT_LENGTHS)))
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=getattr(torch, args.dtype),
        attn_implementation="eager").to(args.device)
    model.eval()
    lengths = [int(x) for x in args.lengths.split(",") if x]
    new_tokens = args.new_tokens

    cases = []
    with torch.no_grad():
        for n in lengths:
            ids = prompt_ids(n, args.vocab_limit)
            logits = model(torch.tensor([ids], device=args.device)).logits[0]
            logits = logits.float().cpu()
            positions = sorted({0, n // 2, n - 1})
            seq = list(ids)
            for _ in range(new_tokens):
                last = model(torch.tensor([seq], device=args.device)).logits[0, -1]
                last = last.float().cpu()
                seq.append(int(torch.argmax(last)))
            cases.append({
                "prompt": ids,
                "positions": positions,
                "logits": [sample(logits[p]) for p in positions],
                "greedy": seq[n:],
                "greedy_last_logits": sample(last),
            })

    files = {}
    for name in sorted(os.listdir(args.model)):
        if args.no_hash:
            break
        if name.endswith(".safetensors") or name == "config.json":
            files[name] = fnv1a64(os.path.join(args.model, name))
    out = {
        "generator": "scripts/make_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": args.dtype,
        "vocab_stride": VOCAB_STRIDE,
        "files_fnv1a64": files,
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", args.out, "with", len(cases), "cases")


if __name__ == "__main__":
    main()
