#!/usr/bin/env python3
"""The Hugging Face transformers peer for duet-model-bench, same GPU, same run.

Builds the model from a duet/HF checkpoint's config.json with random bf16
weights (timing does not depend on the values; loading 8 GB would only cost
time), then measures:
  - decode: per-token time of greedy generation with a static KV cache,
    batch B, context C: (time of generate(C-prompt, N new) - time of
    generate(1 new)) / (N - 1); first eager (generate's disable_compile),
    then with torch.compile the way transformers documents it for static
    caches: generate() compiles the decoding forward itself (its
    CompileConfig: fullgraph, mode "reduce-overhead", i.e. CUDA graphs).
    Wrapping model.forward in torch.compile by hand instead fails in
    transformers 5 ("accessing tensor output of CUDAGraphs that has been
    overwritten", in the static cache's index_copy_), because generate()
    then compiles it a second time;
  - prefill: one forward of a T-token prompt (sdpa attention, no cache).
Prints one JSON object per measurement; "compiled" says whether generate()
really ran a compiled forward. Compiled decode needs a long warm-up (the
compile and the CUDA graph captures of generate's paths): with two warm-up
generations and two timed ones it read 5.0 to 8.5 ms/step at batch 1 x 512
on one H100 depending on what ran before, hence three of each.

  python3 scripts/bench_hf.py --config DIR/config.json --decode 1:512,1:2048
      --prefill 512,2048,8192
"""
import argparse
import json
import sys
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


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--decode", default="1:512", help="batch:context,...")
    ap.add_argument("--prefill", default="512,2048,8192")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--decode-modes", default="eager,compile",
                    help="which decode setups to time, in this order")
    args = ap.parse_args()

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(args.config)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    # One JSON object per line, printed as soon as measured, so a run cut
    # short by a time limit still reports what it got.
    emit = lambda d: print(json.dumps(d), flush=True)
    emit({"torch": torch.__version__, "device": torch.cuda.get_device_name()})

    decode_specs = [tuple(int(v) for v in x.split(":"))
                    for x in args.decode.split(",") if x]

    def decode(tag, compile_forward):
        for batch, ctx in decode_specs:
            ids = torch.randint(0, 100000, (batch, ctx), device="cuda")

            def gen(n):
                return model.generate(
                    ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                    cache_implementation="static", pad_token_id=0,
                    disable_compile=not compile_forward)

            log(f"decode {tag} batch {batch} context {ctx}: warm-up")
            for _ in range(3):
                gen(args.new_tokens)
                gen(1)
            full = timed(lambda: gen(args.new_tokens), 3)
            one = timed(lambda: gen(1), 3)
            emit({"decode": tag, "batch": batch, "context": ctx,
                  "step_ms": 1e3 * (full - one) / (args.new_tokens - 1),
                  "compiled": hasattr(model, "_compiled_call")})

    with torch.inference_mode():
        for t in [int(x) for x in args.prefill.split(",") if x]:
            ids = torch.randint(0, 100000, (1, t), device="cuda")
            fwd = lambda: model(ids, use_cache=False, logits_to_keep=1)
            fwd()
            emit({"prefill": "eager", "tokens": t,
                  "time_ms": 1e3 * timed(fwd, 3)})
        for mode in args.decode_modes.split(","):
            if mode == "compile":
                decode("static_cache+compile", compile_forward=True)
            elif mode == "eager":
                decode("static_cache", compile_forward=False)
            elif mode:
                sys.exit(f"unknown decode mode {mode!r} (compile, eager)")
    log("done")


if __name__ == "__main__":
    main()
