#!/usr/bin/env python3
"""Regenerates the seed corpora under fuzz/corpus/ (committed; rerun after a
format change). Needs python3 and protoc (the build's protobuf-compiler);
config seeds come from duet-make-model when a build has one (--make-model).

  fuzz/make_corpus.py [--make-model build/tools/duet-make-model]
"""
import argparse
import copy
import json
import os
import shutil
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- safetensors -------------------------------------------------------------

DTYPE_SIZE = {"F32": 4, "BF16": 2, "F16": 2}


def safetensors(tensors, metadata=None, align=8):
    """tensors: [(name, dtype, shape)] in file order; data bytes are a ramp."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape in tensors:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + n]}
        data += bytes((len(data) + i) % 251 for i in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % align)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_corpus():
    write("fuzz_safetensors", "qwen3_like.safetensors", safetensors([
        ("model.embed_tokens.weight", "BF16", [8, 4]),
        ("model.layers.0.input_layernorm.weight", "BF16", [4]),
        ("model.layers.0.self_attn.q_proj.weight", "BF16", [4, 4]),
        ("model.layers.0.self_attn.q_norm.weight", "BF16", [2]),
        ("model.norm.weight", "BF16", [4]),
    ], metadata={"format": "pt"}))
    write("fuzz_safetensors", "mixed_dtypes.safetensors", safetensors([
        ("a", "F32", [2, 3]), ("b", "F16", [3]), ("c", "BF16", [1, 1, 2]),
    ]))
    write("fuzz_safetensors", "zero_size.safetensors", safetensors([
        ("empty", "F32", [0, 4]), ("scalar", "F32", []), ("x", "F16", [5]),
    ], metadata={}))
    write("fuzz_safetensors", "no_tensors.safetensors", safetensors([]))
    # Unaligned writer (no padding), odd-sized tensor first.
    write("fuzz_safetensors", "unaligned.safetensors", safetensors([
        ("odd", "BF16", [3]), ("next", "F32", [1]),
    ], align=1))


def index_corpus():
    s1, s2 = ("model-00001-of-00002.safetensors",
              "model-00002-of-00002.safetensors")
    write("fuzz_safetensors_index", "valid.json", json.dumps({
        "metadata": {"total_size": 18},
        "weight_map": {"a": s1, "b": s1, "c": s2}}, indent=2))
    write("fuzz_safetensors_index", "valid_compact.json", json.dumps(
        {"weight_map": {"c": s2, "b": s1, "a": s1}}, separators=(",", ":")))
    write("fuzz_safetensors_index", "one_shard_missing_tensor.json",
          json.dumps({"weight_map": {"a": s1, "b": s1}}))
    write("fuzz_safetensors_index", "escaping_name.json",
          json.dumps({"weight_map": {"a": "../" + s1, "b": "sub/" + s1}}))


# --- config.json / generation_config.json ------------------------------------

QWEN3_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
    "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
    "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 40960, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000, "rope_scaling": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "hidden_act": "silu", "attention_bias": False,
    "bos_token_id": 151643, "eos_token_id": 151645,
}
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
                     "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192,
                     "rope_type": "llama3"},
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "mlp_bias": False,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
}


def config_corpus(make_model):
    def both(name, config, gen):
        text = json.dumps(config, indent=2).encode()
        if gen is not None:
            text += b"\0" + json.dumps(gen, indent=2).encode()
        write("fuzz_model_config", name, text)

    both("qwen3_0.6b.json", QWEN3_CONFIG,
         {"bos_token_id": 151643, "eos_token_id": [151645, 151643],
          "do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95})
    both("llama3.2_1b.json", LLAMA_CONFIG,
         {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})
    nested = copy.deepcopy(QWEN3_CONFIG)
    del nested["rope_theta"]
    nested["rope_parameters"] = {"rope_theta": 1000000.0, "rope_type": "default"}
    nested["dtype"] = "float32"
    del nested["architectures"]
    both("qwen3_rope_parameters.json", nested, None)
    if make_model and os.access(make_model, os.X_OK):
        for preset in ("tiny", "tiny-llama"):
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([make_model, "--preset", preset, "--out", tmp],
                               check=True, stdout=subprocess.DEVNULL)
                with open(os.path.join(tmp, "config.json"), "rb") as f:
                    text = f.read()
                gen = os.path.join(tmp, "generation_config.json")
                if os.path.exists(gen):
                    with open(gen, "rb") as f:
                        text += b"\0" + f.read()
                write("fuzz_model_config", "make_model_%s.json" % preset, text)


# --- tokenizer.json ----------------------------------------------------------

def qwen3_cut(max_id=600):
    """The real Qwen3 tokenizer cut to its first `max_id` tokens (the 256
    byte-level characters and the earliest merges), added tokens renumbered
    after them."""
    with open(os.path.join(ROOT, "assets", "qwen3", "tokenizer.json")) as f:
        j = json.load(f)
    vocab = {t: i for t, i in j["model"]["vocab"].items() if i < max_id}
    merges = []
    for m in j["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append([a, b])
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = merges
    added = []
    for k, t in enumerate(j["added_tokens"][:4] + j["added_tokens"][-2:]):
        t = dict(t)
        t["id"] = max_id + k
        added.append(t)
    j["added_tokens"] = added
    return j


def tokenizer_corpus():
    base = qwen3_cut()
    ids = {t["content"]: t["id"] for t in base["added_tokens"]}
    write("fuzz_tokenizer", "qwen3_cut.json", json.dumps(base, ensure_ascii=False))

    gpt2 = copy.deepcopy(base)
    gpt2["normalizer"] = None
    gpt2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True,
                             "trim_offsets": True, "use_regex": True}
    gpt2["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
            name: {"id": name, "ids": [ids[name]], "tokens": [name]}
            for name in ("<|im_start|>", "<|im_end|>")}}
    gpt2["model"]["merges"] = [" ".join(m) for m in gpt2["model"]["merges"]]
    write("fuzz_tokenizer", "gpt2_style.json", json.dumps(gpt2))

    flags = copy.deepcopy(base)
    flags["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "NFKC"},
        {"type": "Replace", "pattern": {"String": "``"}, "content": "\""},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    flags["pre_tokenizer"]["pretokenizers"][1:1] = [
        {"type": "Split", "pattern": {"String": "-"},
         "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[0-9]"},
         "behavior": "Contiguous", "invert": True},
        {"type": "Split", "pattern": {"String": "x"}, "behavior": "Removed",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "[aeiou]"},
         "behavior": "MergedWithNext", "invert": False}]
    flags["pre_tokenizer"]["pretokenizers"][-1]["add_prefix_space"] = True
    flags["decoder"] = None
    n = 600 + len(flags["added_tokens"])
    flags["added_tokens"] += [
        {"id": n, "content": "<tag>", "single_word": False, "lstrip": True,
         "rstrip": False, "normalized": False, "special": False},
        {"id": n + 1, "content": "</tag>", "single_word": False,
         "lstrip": False, "rstrip": True, "normalized": True,
         "special": False},
        {"id": n + 2, "content": "[MASK]", "single_word": True,
         "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}]
    write("fuzz_tokenizer", "qwen3_flags.json", json.dumps(flags))

    llama = copy.deepcopy(base)
    llama["normalizer"] = None
    llama["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
         "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
         "special_tokens": {"<|endoftext|>": {
             "id": "<|endoftext|>", "ids": [ids["<|endoftext|>"]],
             "tokens": ["<|endoftext|>"]}}}]}
    llama["model"]["ignore_merges"] = True
    write("fuzz_tokenizer", "llama3_style.json", json.dumps(llama))

    # tests/tokenizer/tokenizer_test.cc's TinyBpe, merges as pairs.
    write("fuzz_tokenizer", "tiny_bpe.json", json.dumps({
        "version": "1.0",
        "added_tokens": [{"id": 6, "content": "<s>", "single_word": False,
                          "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE",
                  "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4,
                            "\u0120": 5},
                  "merges": [["a", "b"], ["ab", "c"]]}}))


# --- protos ------------------------------------------------------------------

def encode(message, text):
    return subprocess.run(
        ["protoc", "-I", os.path.join(ROOT, "proto"),
         "--encode=duet.v1." + message, "duet/v1/node.proto",
         "duet/v1/client.proto"],
        input=text.encode(), check=True, capture_output=True).stdout


LAYOUT = ("num_layers: 2 num_kv_heads: 2 head_dim: 16 block_size: 16 "
          "dtype: DTYPE_F32 tp_size: 1")
SAMPLING = "temperature: 0.7 top_k: 20 top_p: 0.9 seed: 42 max_tokens: 16 " \
           "stop_token_ids: 151645"


def proto_corpus():
    ucx = ("destination { block_ids: [0, 3, 5] layout { %s } "
           "transport: KV_TRANSPORT_UCX num_blocks: 64 ranks { tp_rank: 0 "
           "ucx_worker_address: \"\\001\\002\\003\\004worker\" "
           "rkeys: \"rkey-layer-0\" rkeys: \"rkey-layer-1\" "
           "remote_base_addresses: [140737488355328, 140737488617472] } }"
           % LAYOUT)
    write("fuzz_node_rpc", "prefill_ucx.pb", encode(
        "PrefillRequest",
        "request_id: 7 prompt_token_ids: [1, 2, 3, 151644] sampling { %s } "
        "%s deadline_ms: 30000" % (SAMPLING, ucx)))
    write("fuzz_node_rpc", "prefill_in_process.pb", encode(
        "PrefillRequest",
        "request_id: 8 prompt_token_ids: [9, 8, 7] sampling { seed: 1 "
        "max_tokens: 4 } destination { block_ids: [0] layout { %s } "
        "transport: KV_TRANSPORT_IN_PROCESS num_blocks: 1 "
        "decode_node_address: \"decode-1\" ranks { tp_rank: 0 } }" % LAYOUT))
    handle = "\\377" * 64
    write("fuzz_node_rpc", "prefill_cuda_ipc.pb", encode(
        "PrefillRequest",
        "request_id: 9 prompt_token_ids: [5] sampling { seed: 3 "
        "max_tokens: 1 } destination { block_ids: [1, 0] layout { %s } "
        "transport: KV_TRANSPORT_CUDA_IPC num_blocks: 2 ranks { tp_rank: 0 "
        "cuda_ipc_handles: \"%s\" cuda_ipc_handles: \"%s\" "
        "host_id: \"0b7c2d4e-boot-id\" gpu_uuid: \"GPU-0123456789ab\" } }"
        % (LAYOUT, handle, handle)))
    write("fuzz_node_rpc", "reserve.pb", encode(
        "ReserveRequest",
        "request_id: 10 num_prompt_tokens: 100 max_new_tokens: 20 "
        "expected_layout { %s } reservation_ttl_ms: 60000 "
        "kv_transport: KV_TRANSPORT_CUDA_IPC" % LAYOUT))
    write("fuzz_node_rpc", "decode.pb", encode(
        "DecodeRequest",
        "request_id: 11 first_token: 42 sampling { %s ignore_eos: true } "
        "deadline_ms: 1000 prompt_token_ids: [1, 2, 3]" % SAMPLING))

    gen = "GenerateRequest"
    write("fuzz_router_generate", "text.pb", encode(
        gen, "request_id: \"r1\" prompt: \"Hello, world! It's a test.\" "
        "sampling { max_tokens: 16 temperature: 0.8 top_p: 0.95 top_k: 40 "
        "stop: \"\\n\" stop: \"world\" } return_text: true"))
    write("fuzz_router_generate", "text_unicode.pb", encode(
        gen, "prompt: \"<|im_start|>user\\nh\\303\\251llo "
        "\\344\\270\\255\\346\\226\\207 \\360\\237\\231\\202<|im_end|>\\n\" "
        "sampling { max_tokens: 8 seed: 5 ignore_eos: true }"))
    write("fuzz_router_generate", "ids.pb", encode(
        gen, "prompt_token_ids: [9707, 11, 1879, 0, 151645, 1879] "
        "sampling { max_tokens: 32 stop_token_ids: [151643] }"))
    write("fuzz_router_generate", "ids_stop.pb", encode(
        gen, "prompt_token_ids: [9707, 11, 1879, 0, 9707, 11, 1879] "
        "sampling { max_tokens: 4 stop: \", w\" stop: \"ld!\" } "
        "return_text: true"))
    write("fuzz_router_generate", "too_long.pb", encode(
        gen, "prompt_token_ids: [1, 2, 3] sampling { max_tokens: 5000 }"))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--make-model",
                    default=os.path.join(ROOT, "build", "tools",
                                         "duet-make-model"))
    args = ap.parse_args()
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    safetensors_corpus()
    index_corpus()
    config_corpus(args.make_model)
    tokenizer_corpus()
    proto_corpus()


if __name__ == "__main__":
    main()
