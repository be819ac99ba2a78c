#!/usr/bin/env python3
"""Scores duet's greedy continuations with Hugging Face transformers.

For the tie-aware greedy check of `duet-hf-compare` (tools/README.md): a
random-weight model such as the `tiny` preset has nearly flat output
distributions, and transformers in bfloat16 returns bf16 logits (8 bits of
mantissa: at a logit of ~2 the spacing is 2^-6 = 0.0156), so its top-2
logits often tie exactly; torch.argmax then takes the lower id while duet,
which computes fp32 logits, may take the other tied token, and the
continuations diverge from there. This script says, step by step, whether
each of duet's tokens is a greedy choice transformers could have made.

Input: the JSON written by `duet-hf-compare --continuations-out FILE`:
  {"cases": [{"prompt": [...], "greedy": [...duet's tokens...]}, ...]}
With --golden (the make_golden.py file duet-hf-compare compared against),
the case count and every prompt are checked against the golden's, by index.

For each case, ONE teacher-forced forward pass over prompt + greedy; the
logits at position len(prompt) - 1 + i predict duet's token i. Per step:
  token          duet's token
  hf_argmax      torch.argmax of transformers' logits row (the lowest id
                 among equal maxima, as in make_golden.py)
  hf_max_logit   transformers' max logit
  hf_token_logit transformers' logit of duet's token
  tie_exact      token != hf_argmax and hf_token_logit == hf_max_logit
  tie            token != hf_argmax and hf_token_logit >= next_down(max),
                 where next_down(max) is the next value below max
                 representable in the model's dtype (--dtype; bf16: one bf16
                 ulp, computed on the bits, so 2.0 -> 2 - 2^-7)
  valid          token == hf_argmax or tie
and per case all_valid (every step valid). Output:
  {"cases": [{"prompt_len": n, "prompt": [...], "greedy": [...],
              "steps": [{...}], "all_valid": bool}, ...], ...}

The tie rule, and why one ulp rather than exact equality only: transformers'
bf16 logits are its fp32 accumulations rounded to bf16. Two tokens whose fp32
values are closer than a bf16 ulp may round to equal values (an exact tie,
where argmax takes the lower id) or to adjacent values, depending on where
the rounding boundary falls; either way transformers' bf16 result does not
order them, while duet's fp32 logits do. Also, the numerics here are not
bit-identical to make_golden.py's: make_golden.py runs a full forward over
the growing sequence for each generated token (M = len(prompt) + i rows),
this script one forward over prompt + continuation. Causal attention makes
row p the same function of tokens[0..p] in exact arithmetic, but the GEMM
and attention shapes differ, so the backend (cuBLAS) may pick other kernels
and the bf16 logits may differ by rounding, typically by one ulp; an exact
tie in make_golden's pass can show up as two adjacent bf16 values here. The
one-ulp rule absorbs that, and is only used to decide ties: a token more
than one bf16 ulp below transformers' max is invalid (at ~2 that is a gap
above 0.0156, at ~10 above 0.0625). A real bug (wrong kernel, layout, RoPE,
norm) moves logits by far more and shows in the cosine check as well; this
rule is meant for random-weight models with flat distributions, where the
plain identical-continuation check mostly measures ties.

Usage (on the GPU machine, torch + transformers; same loading as
make_golden.py: --dtype, --device, eager attention, tf32 off):
  python3 scripts/hf_score_continuations.py --model /tmp/tiny \\
      --continuations /tmp/tiny_cont.json --golden /tmp/tiny_g.json \\
      --out /tmp/tiny_scores.json --dtype bfloat16 --device cuda
"""
import argparse
import json
import struct

import torch
import transformers
from transformers import AutoModelForCausalLM


def next_down(value, dtype):
    """The largest value of `dtype` below `value` (a finite value of dtype).

    Computed on the bit pattern: bf16 is the top 16 bits of an fp32, so both
    go through the fp32 bits (exact for a value representable in dtype).
    """
    if dtype == "bfloat16":
        shift = 16
    elif dtype == "float32":
        shift = 0
    else:
        raise ValueError("unsupported dtype " + dtype)
    bits = struct.unpack(">I", struct.pack(">f", value))[0] >> shift
    if value > 0:
        bits -= 1  # smaller magnitude
    elif value < 0:
        bits += 1  # larger magnitude, sign bit stays set
    else:
        bits = 0x8001 if shift == 16 else 0x80000001  # -(smallest subnormal)
    return struct.unpack(">f", struct.pack(">I", bits << shift))[0]


def score_case(model, prompt, greedy, dtype, device):
    ids = list(prompt) + list(greedy)
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0]
    # Round to the model's dtype (a no-op for bf16 logits, and for logits a
    # transformers version upcasts to fp32 after a bf16 lm_head), then fp32
    # on the CPU, as make_golden.py takes its argmax.
    rows = logits[len(prompt) - 1:len(prompt) - 1 + len(greedy)]
    rows = rows.to(getattr(torch, dtype)).float().cpu()
    steps = []
    for i, token in enumerate(greedy):
        row = rows[i]
        argmax = int(torch.argmax(row))
        top = float(row[argmax])
        mine = float(row[token])
        tie_exact = token != argmax and mine == top
        tie = token != argmax and mine >= next_down(top, dtype)
        steps.append({
            "step": i,
            "token": token,
            "hf_argmax": argmax,
            "hf_max_logit": top,
            "hf_token_logit": mine,
            "tie_exact": tie_exact,
            "tie": tie,
            "valid": token == argmax or tie,
        })
    return {
        "prompt_len": len(prompt),
        "prompt": list(prompt),
        "greedy": list(greedy),
        "steps": steps,
        "all_valid": all(s["valid"] for s in steps),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--continuations", required=True,
                    help="duet-hf-compare --continuations-out file")
    ap.add_argument("--golden",
                    help="make_golden.py file: check the prompts against it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    with open(args.continuations) as f:
        cases = json.load(f)["cases"]
    if args.golden:
        with open(args.golden) as f:
            golden = json.load(f)["cases"]
        if len(golden) != len(cases):
            raise SystemExit("%d continuations but the golden has %d cases" %
                             (len(cases), len(golden)))
        for i, (c, g) in enumerate(zip(cases, golden)):
            if c["prompt"] != g["prompt"]:
                raise SystemExit("case %d: prompt differs from the golden's" % i)

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=getattr(torch, args.dtype),
        attn_implementation="eager").to(args.device)
    model.eval()

    scored = []
    for i, c in enumerate(cases):
        prompt = [int(t) for t in c["prompt"]]
        greedy = [int(t) for t in c["greedy"]]
        if not prompt or not greedy:
            raise SystemExit("case %d: empty prompt or continuation" % i)
        s = score_case(model, prompt, greedy, args.dtype, args.device)
        ties = [st["step"] for st in s["steps"] if st["tie"]]
        bad = [st["step"] for st in s["steps"] if not st["valid"]]
        print("case %d (prompt %d tokens): %s, ties at %s%s" %
              (i, len(prompt), "all valid" if s["all_valid"] else "INVALID",
               ties or "none", ", invalid at %s" % bad if bad else ""))
        scored.append(s)

    out = {
        "generator": "scripts/hf_score_continuations.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": args.dtype,
        "tie_rule": "token != argmax and logit >= next_down(max) in dtype",
        "cases": scored,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", args.out, "with", len(scored), "cases,",
          sum(s["all_valid"] for s in scored), "all valid")


if __name__ == "__main__":
    main()
