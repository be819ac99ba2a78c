#!/usr/bin/env python3
"""The Hugging Face transformers peer for duet-model-bench, same GPU, same run.

Builds the model from a duet/HF checkpoint's config.json with random bf16
weights (timing does not depend on the values; loading 8 GB would only cost
time), then measures:
  - decode: per-token time of greedy generation with a static KV cache and
    torch.compile (the fastest documented transformers setup), batch B,
    context C: (time of generate(C-prompt, N new) - time of generate(1 new))
    / (N - 1);
  - prefill: one forward of a T-token prompt (sdpa attention, no cache).
Prints one JSON object.

  python3 scripts/bench_hf.py --config DIR/config.json --decode 1:512,1:2048
      --prefill 512,2048,8192
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def timed(fn, iters):
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--decode", default="1:512", help="batch:context,...")
    ap.add_argument("--prefill", default="512,2048,8192")
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(args.config)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(),
           "decode": [], "prefill": []}

    with torch.inference_mode():
        for t in [int(x) for x in args.prefill.split(",") if x]:
            ids = torch.randint(0, 100000, (1, t), device="cuda")
            fwd = lambda: model(ids, use_cache=False, logits_to_keep=1)
            fwd()
            out["prefill"].append({"tokens": t, "time_ms": 1e3 * timed(fwd, 3)})

        model.forward = torch.compile(model.forward, mode="reduce-overhead",
                                      fullgraph=True)
        for spec in [x for x in args.decode.split(",") if x]:
            batch, ctx = (int(v) for v in spec.split(":"))
            ids = torch.randint(0, 100000, (batch, ctx), device="cuda")

            def gen(n):
                return model.generate(
                    ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                    cache_implementation="static", pad_token_id=0)

            for _ in range(2):  # compile + warm-up
                gen(args.new_tokens)
            full = timed(lambda: gen(args.new_tokens), 2)
            one = timed(lambda: gen(1), 2)
            out["decode"].append({
                "batch": batch, "context": ctx,
                "step_ms": 1e3 * (full - one) / (args.new_tokens - 1)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
