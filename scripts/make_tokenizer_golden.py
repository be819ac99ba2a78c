#!/usr/bin/env python3
"""Tokenizer goldens (and a reference throughput figure) from HF `tokenizers`.

For each tokenizer variant, encodes a deterministic corpus of >= 2,000
strings with the reference Rust `tokenizers` library (through its Python
binding) and records, per string: ids with add_special_tokens False and
True, decode(ids) and decode(ids, skip_special_tokens=True). It also records
the reference decode of random id sequences, many of which cut multi-byte
characters (U+FFFD behaviour). Output: <out-dir>/<variant>.json.gz, read by
tests/tokenizer/golden_test.cc.

Variants: the two shipped tokenizers, plus tokenizers derived from them by a
"patch" (top-level sections replaced, added tokens appended) that is stored in
the golden file so the C++ test can rebuild the same tokenizer:
  qwen3        assets/qwen3/tokenizer.json as is
  llama3       assets/llama3/tokenizer.json with the post_processor of the
               official Llama-3.1 tokenizer.json (ByteLevel + TemplateProcessing
               adding <|begin_of_text|>); the npm copy predates that fix
  qwen3_flags  Qwen3 vocabulary with extra added tokens using single_word /
               lstrip / rstrip / normalized, a Sequence normalizer (NFKC,
               Replace), a Split pre-tokenizer using every delimiter behavior,
               ByteLevel with add_prefix_space, and no decoder
  gpt2_style   Qwen3 vocabulary with GPT-2's ByteLevel-only pre-tokenizer
               (use_regex, add_prefix_space) and a BOS/EOS template

With --bench-text, also times the reference encode of that file, single
threaded (RAYON_NUM_THREADS=1, no encode_batch), and prints tokens/s, MB/s and
an FNV-1a hash of the ids, to compare with duet-tokenizer-bench on the same
file (--bench-per-line: one encode call per line, like the bench's --per_line).

Usage (needs `tokenizers`; it is on the GPU machine):
  python3 scripts/make_tokenizer_golden.py \
      --tokenizer qwen3=assets/qwen3/tokenizer.json \
      --tokenizer llama3=assets/llama3/tokenizer.json \
      --out-dir tests/golden/tokenizer [--bench-text corpus.txt]
  python3 scripts/make_tokenizer_golden.py --print-corpus   # no tokenizers needed
"""
import argparse
import gzip
import io
import json
import os
import random
import statistics
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED = 20251121

# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "Large language models predict the next token given the previous ones.",
    "Prefill and decode run on separate nodes; the KV cache moves between them.",
    "She said, \"Don't forget to bring the umbrella!\" and left.",
    "In 1969, Apollo 11 landed on the Moon (July 20th, 20:17 UTC).",
    "Hello, world! How are you doing today?",
    "Mr. O'Neil's dog barked at 3:45 a.m. -- again.",
    "e-mail me at someone@example.com or visit https://example.org/path?q=1&r=2#frag",
    "The price rose 12.5% to $1,234.56 (up from $1,097.39).",
    "Well... I guess that's it; see you next week?",
    "ALL CAPS SENTENCES ARE SOMETIMES USED FOR EMPHASIS.",
    "camelCaseIdentifiers and snake_case_identifiers and kebab-case-identifiers",
    "Tokenization is the first step: text in, token ids out, and back again.",
    "A\tB\tC\nD\tE\tF\n",
    "naïve café résumé coöperate façade jalapeño",
    "Straße, Grüße, Ärger, Öl, Übermut",
    "The temperature is -3°C (26.6°F) today.",
    "Use the --max-tokens flag; e.g. `duet-run --max-tokens=32`.",
    "He whispered: 'it's over', then walked away.",
]

WORDS = ("the of and to in is was that for it with as on be at by this had not are but "
         "from or have an they which one you were her all she there would their we him "
         "been has when who will more no if out so said what up its about into than them "
         "can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through years "
         "where much your way well down should because each just those people how too "
         "little state good very make world still own see men work long get here between "
         "both life being under never day same another know while last might us great old "
         "year off come since against go came right used take three").split()

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]

CHINESE = [
    "我们今天讨论大型语言模型的推理效率。",
    "分词器把文本切成词元，然后模型逐个预测下一个词元。",
    "北京的天气很好，适合出去散步。",
    "这个问题的答案并不简单，需要仔细思考。",
    "人工智能正在改变世界的许多行业，包括医疗、金融和教育。",
    "《红楼梦》是中国古典小说的巅峰之作。",
    "他说：“你好！”然后笑了。",
    "价格是１２３元，折扣后为９８．５元。",
    "请把文件发送到我的邮箱：test@example.com。",
    "繁體中文與簡體中文在字形上有所不同。",
]

JAPANESE = [
    "東京は日本の首都です。",
    "今日はとても良い天気ですね。",
    "トークナイザーはテキストを分割します。",
    "ありがとうございました！また会いましょう。",
    "ｶﾀｶﾅの半角文字も使われることがあります。",
    "吾輩は猫である。名前はまだ無い。",
]

OTHER_SCRIPTS = [
    "안녕하세요, 만나서 반갑습니다.",
    "Привет, как дела? Всё хорошо.",
    "Γειά σου Κόσμε! Ελληνικά γράμματα.",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Xin chào thế giới! Tiếng Việt có nhiều dấu.",
    "Dzień dobry, jak się masz? Zażółć gęślą jaźń.",
    "Türkçe: ığüşöç İstanbul ISTANBUL istanbul",
    "ትግርኛ ኣማርኛ ፊደል",
    "ᚠᛇᚻ᛫ᛒᛦᚦ ᚱᚢᚾᛖ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝐛𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐",
]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
    "#include <iostream>\nint main() {\n  std::cout << \"Hello\" << std::endl;\n  return 0;\n}\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "func main() {\n\tfmt.Println(\"hello\")\n\tif err != nil {\n\t\treturn\n\t}\n}\n",
    "const f = async (x) => { const r = await fetch(`/api/${x}`); return r.json(); };",
    "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id;",
    "<html>\n  <body class=\"main\">\n    <p id='x'>Hi &amp; bye</p>\n  </body>\n</html>\n",
    "{\"name\": \"duet\", \"version\": \"0.1.0\", \"tags\": [\"llm\", \"server\"], \"n\": 3.14e-10}",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares\r\n",
    "public static void main(String[] args) { System.out.println(args.length); }",
    "    \tmixed_indent = True\n  \t  # tabs and spaces\n",
    "a+=b;c-=d;e*=f;g/=h;i%=j;k<<=1;l>>=2;m&=n;o|=p;q^=r;",
    "if (x != null && y !== undefined || z >= 10) { return !flag; }",
    "matrix = [[1, 2, 3],\n          [4, 5, 6]]\n",
    "\\begin{equation} E = mc^2 \\end{equation} % LaTeX",
    "@decorator\nclass Foo(Bar, metaclass=Meta):\n    __slots__ = ('a', 'b')\n",
    "<?php echo $var['key'] ?? 'default'; ?>",
    "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,4 @@\n",
]

EMOJI = [
    "😀", "😂🤣", "👍", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿", "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏽‍🚀",
    "🏳️‍🌈", "🏴‍☠️", "❤️", "❤️‍🔥", "🇯🇵🇺🇸🇩🇪", "🤖 robots", "✨✨✨", "I ❤ NY", "☕️ time",
    "🙇‍♀️", "👁️‍🗨️", "🫠", "🦀 Rust", "1️⃣2️⃣3️⃣", "#️⃣", "🏄🏿‍♂️", "👩🏻‍🤝‍👩🏾",
]

WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r",
    " \n", "\n ", " \n ", "a  b", "a   b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\r\nb",
    "  leading", "trailing  ", "  both  ", "a \n b", "a\u3000b", "a\u00a0b", "\u00a0",
    "a\u0085b", "\u0085", "a\u2028b", "a\u2029b", "a\x0bb", "a\x0cb", "a\u2003b",
    "a\u200bb", "a\u180eb", "a\u202fb", "a\u205fb", "a\u1680b", "end.\n", "x \t \n y",
    "a\x1cb", "a\x1fb", "\x1c\x1d\x1e\x1f", " \x85 ", "\x85\x85x", "x\x85\n",
    "line1\nline2\n\n\nline5", "  \t\n  \t\n", "word   \n   word", "a" + " " * 17 + "b",
    "\n" * 12, " " * 40, "\t" * 9 + "x", "x" + " \r\n" * 5,
]

NUMBERS_FIXED = [
    "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "3.14159", "-2.5",
    "1,000,000", "1e10", "0x1F", "2024-01-15", "12:30:45", "v1.2.3", "+1 (555) 123-4567",
    "１２３４５", "٣٤٥", "۱۲۳", "²³", "Ⅻ", "½ ¾", "①②③", "10th", "3rd", "2nd place",
    "99 bottles", "007", "0.000001", "1/3", "100%",
]

SPECIAL_EMBEDDED = [
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<|im_start|><|im_end|>",
    "<|im_start",
    "<|im_start|",
    "im_start|>",
    " <|im_end|> ",
    "<|im_end|><|im_end|><|im_end|>",
    "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
    "<think></think>",
    "< think >",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|begin_of_text|>Hello",
    "<|eot_id|>",
    "<|reserved_special_token_5|> and <|reserved_special_token_250|>",
    "<|vision_start|><|image_pad|><|vision_end|>",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "<|<|im_start|>|>",
    "<<|endoftext|>>",
    "x<|im_start|>y",
    "<|IM_START|>",
    "e\u0301<|im_end|>\u0301",
]

NFC_CASES = [
    "e\u0301", "cafe\u0301", "A\u030a", "\u212b", "\u2126", "\u0301", "\u0301abc",
    "abc\u0301", "\u0308\u0301", "o\u0308\u0301", "\u1100\u1161\u11a8", "\u1100\u1161",
    "\uac00\u11a8", "\uf900", "\uf91d\uf9ff", "\u0041\u0300\u0301", "\u1e9b\u0323",
    "\u00c5", "\u0065\u0323\u0302", "\u0915\u093c", "\u05d0\u05b7", "fi \ufb01",
    "\u2163", "\u00bd", "\u3300", "\uff21\uff22", "\u0130", "\u03a3\u03a3", "\u1f71",
    "n\u0303o", "\u0390", "\u0344", "\u0958", "\u2000\u2001", "\u2329\u232a",
    "\u0f73", "\u0f77", "\U0001d15e", "\u2adc", "\u0e33",
]


def random_unicode_string(rng, length):
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
        (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F),
        (0x2190, 0x23FF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
        (0xF900, 0xFAFF), (0xFB00, 0xFB4F), (0xFE00, 0xFE0F), (0xFF00, 0xFFEF),
        (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0x1D400, 0x1D7FF), (0x20000, 0x2A6DF),
        (0xE000, 0xE0FF), (0xFFF0, 0xFFFD), (0x0, 0x1F), (0x7F, 0x9F),
    ]
    out = []
    for _ in range(length):
        lo, hi = rng.choice(blocks)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0x41
        out.append(chr(cp))
    return "".join(out)


def random_word(rng, lo=2, hi=12):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(lo, hi)))


def build_corpus():
    rng = random.Random(SEED)
    corpus = []
    add = corpus.append

    # Empty string and every single ASCII character, plus a few controls.
    add("")
    for c in range(0x20, 0x7F):
        add(chr(c))
    for c in [0x00, 0x01, 0x07, 0x08, 0x1B, 0x7F, 0x80, 0x9F]:
        add(chr(c))

    for s in ENGLISH:
        add(s)
        add(s.lower())
        add(s.upper())
        add(" " + s)
    for _ in range(250):
        n = rng.randint(1, 30)
        words = [rng.choice(WORDS) if rng.random() > 0.1 else random_word(rng) for _ in range(n)]
        sep = rng.choice([" ", " ", " ", "  ", "\n", ", "])
        s = sep.join(words)
        if rng.random() < 0.5:
            s = s.capitalize() + rng.choice([".", "!", "?", "...", ""])
        add(s)

    # Contractions in every case.
    for word in ["don", "it", "we", "they", "I", "you", "she", "he", "can", "won"]:
        for c in CONTRACTIONS:
            s = word + c
            add(s)
            add(s.upper())
    for s in ["DON'T", "it's", "It'S", "IT'S", "we'Ll", "I'M", "y'all", "'s", "'S", " 's",
              "rock'n'roll", "it\u2019s", "don\u2019t", "''", "'''s", "the dog's bone's",
              "'ll've", "O'Reilly", "isn't it's", "'\u017f", "'\u212a"]:
        add(s)
        add("He said " + s + " twice")

    for s in CHINESE + JAPANESE + OTHER_SCRIPTS:
        add(s)
        add(s + " " + s)
    for _ in range(120):
        parts = [rng.choice(CHINESE + JAPANESE + OTHER_SCRIPTS + ENGLISH) for _ in range(rng.randint(1, 3))]
        add(rng.choice(["", " ", "\n"]).join(parts))

    for s in CODE:
        add(s)
        add(s.replace("    ", "\t"))
        add(s.strip())
    for _ in range(80):
        s = rng.choice(CODE)
        i = rng.randint(0, len(s))
        j = rng.randint(i, len(s))
        add(s[i:j])

    for s in EMOJI:
        add(s)
        add("text " + s + " text")
        add(s * 3)
    for _ in range(60):
        add("".join(rng.choice(EMOJI) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(1, 6))))

    for s in WHITESPACE:
        add(s)
        add("x" + s + "y")
    for _ in range(120):
        add("".join(rng.choice([" ", "\t", "\n", "\r\n", "\r", "a", "1", ".", "\u3000", "\u00a0"])
                    for _ in range(rng.randint(1, 25))))

    for s in NUMBERS_FIXED:
        add(s)
        add("x " + s + " y")
    for n in range(1, 41):
        digits = "".join(rng.choice("0123456789") for _ in range(n))
        add(digits)
        add("abc" + digits)
        add(digits + "." + digits[::-1])
        add("$" + format(int(digits), ","))

    for s in SPECIAL_EMBEDDED:
        add(s)
        add("prefix " + s + " suffix")
        add(s + s)

    for s in NFC_CASES:
        add(s)
        add("word" + s + "word")
        add(" " + s + " ")

    # Very long words and runs.
    long_items = [
        "a" * 1000, "ab" * 600, "abc" * 500, "xyzzy" * 300, "0" * 500, "1234567890" * 60,
        " " * 2000, "\n" * 1000, "\t" * 300, "-" * 800, "=" * 500, "." * 1000,
        "我" * 600, "😀" * 300, "\u0301" * 200, "e\u0301" * 300,
        "https://example.com/" + "/".join(random_word(rng) for _ in range(100)),
        "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                for _ in range(3000)),
        "Supercalifragilisticexpialidocious" * 20,
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
    ]
    for _ in range(10):
        long_items.append(random_word(rng, 200, 2000))
    for s in long_items:
        add(s)
        add("start " + s + " end")

    # Random Unicode and random mixtures of everything above.
    for _ in range(400):
        add(random_unicode_string(rng, rng.randint(1, 30)))
    fragments = (ENGLISH + CHINESE + JAPANESE + OTHER_SCRIPTS + CODE + EMOJI + WHITESPACE +
                 NUMBERS_FIXED + SPECIAL_EMBEDDED + NFC_CASES + CONTRACTIONS)
    for _ in range(400):
        add("".join(rng.choice(fragments) for _ in range(rng.randint(1, 6))))
    return corpus


FLAGS_EXTRA_CORPUS = [
    "<tag>", " <tag>", "   <tag>x", "a<tag>", "a <tag> b", "\t\n<tag>", "<tag><tag>", "  <tag>  <tag>",
    "</tag>", "</tag>   x", "x</tag>\n\ny", "</tag></tag>", "<tag> </tag>", "<tag>   </tag>  end",
    "word", "a word.", "words", "sword", "word_", "_word", "word1", "1word", "(word)", "word-word",
    "wordword", "é word", "éword", "word\u0301", "\u0301word", " word ", "word!", "Word", "WORD",
    "[MASK]", " [MASK] ", "  [MASK]  x", "a[MASK]b", "[MASK][MASK]", "x   [MASK]\n\n\ny",
    "\ufb01x", "fix", "prefix", "fixed", "FIX", "\ufb01xing \ufb01x", "ab", "ab ab", "cab", "abc",
    " ab", "ab\n", "x  ab", "hello", "hello world", "Hello", "helloworld", "say hello",
    "``quoted''", "a    b     c", "don't-stop", "x-y-z", "--", "a--b", "2024-01-15",
    "xylophone box", "aeiou", "queue", "AEIOU", "1234 5678", "a1b2c3",
    "<think>x</think>", "<|im_start|>user\nword<|im_end|>", "\u00a0word\u00a0", "\ufb01",
    "<tag>word</tag>", "[MASK]word[MASK]", "ab[MASK]ab", "word<tag>", "word</tag>word",
]


def build_fuzz_corpus(n, seed):
    """Random strings built from the characters that steer pre-tokenization:
    letters of several scripts and cases, digits of several kinds, marks,
    every kind of whitespace, punctuation, symbols, emoji parts, apostrophes,
    and pieces of special tokens."""
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "éüßøÅÉÑçİıſKΣσςλЖжאبअ한글漢字かなカナ",
        "0123456789٠١٢٣۴۵०१２３²³½Ⅻ①",
        "\u0300\u0301\u0308\u0323\u093c\u05b7\u20dd\u3099\ufe0f\u200d",
        " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2007\u200a\u2028\u2029\u202f\u205f\u3000\u200b\x1c",
        ".,;:!?-_()[]{}<>|/\\@#$%^&*+=~`\"\u2019\u201c\u2014\u3002\uff01",
        "'",
        "😀👍🏽👨👩👧🇯🇵❤✨🤖🏳",
    ]
    words = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
             "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|", "|>",
             "'s", "'S", "'ll", "'LL", "'re", "'Ve", "'d", "'M", "'t", "http://x.y/z",
             "e\u0301", "\r\n", "  ", "\n\n", "1234567", "the", " the", "Hello"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.15:
                parts.append(rng.choice(words))
            else:
                pool = rng.choice(pools)
                parts.append(rng.choice(pool))
        out.append("".join(parts))
    return out


# --------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA31_POST_PROCESSOR = {
    "type": "Sequence",
    "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {
                "<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                      "tokens": ["<|begin_of_text|>"]},
            },
        },
    ],
}


def flags_patch(base):
    vocab = base["model"]["vocab"]
    next_id = max(t["id"] for t in base["added_tokens"]) + 1

    def tok(content, **kw):
        nonlocal next_id
        d = {"id": next_id, "content": content, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False}
        d.update(kw)
        next_id += 1
        return d

    extra = [
        tok("<tag>", lstrip=True),
        tok("</tag>", rstrip=True),
        tok("word", single_word=True, normalized=True),
        tok("[MASK]", lstrip=True, rstrip=True, special=True),
        tok("\ufb01x", normalized=True),  # NFKC turns the pattern into "fix"
        tok("ab", single_word=True, lstrip=True),
    ]
    # A special added token that is also a vocabulary entry keeps its id.
    extra.append({"id": vocab["hello"], "content": "hello", "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True})
    return {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"String": "``"}, "content": "\""},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithPrevious", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[0-9]"}, "behavior": "Contiguous", "invert": True},
            {"type": "Split", "pattern": {"String": "x"}, "behavior": "Removed", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "MergedWithNext", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": False},
        ]},
        "decoder": None,
        "added_tokens_extra": extra,
    }


GPT2_PATCH = {
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}},
        ],
        "pair": [
            {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
            {"SpecialToken": {"id": "<|im_end|>", "type_id": 1}},
        ],
        "special_tokens": {
            "<|im_start|>": {"id": "<|im_start|>", "ids": [151644], "tokens": ["<|im_start|>"]},
            "<|im_end|>": {"id": "<|im_end|>", "ids": [151645], "tokens": ["<|im_end|>"]},
        },
    },
}


def apply_patch(base, patch):
    """The same rule golden_test.cc applies: replace sections, append tokens."""
    out = dict(base)
    for key, value in patch.items():
        if key == "added_tokens_extra":
            out["added_tokens"] = list(base["added_tokens"]) + value
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------

def fnv1a64_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for k in range(4):
            h ^= (i >> (8 * k)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def decode_sequences(rng, tok, corpus_ids, vocab_size, special_ids):
    # Ids of the 256 single-byte tokens (byte-level alphabet), when present.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_ids = [i for i in (tok.token_to_id(chr(c)) for c in cs) if i is not None]
    high_byte_ids = [tok.token_to_id(chr(c)) for b, c in zip(bs, cs) if b >= 0x80]
    high_byte_ids = [i for i in high_byte_ids if i is not None]
    seqs = []
    for _ in range(300):  # uniform over the whole vocabulary, specials included
        seqs.append([rng.randrange(vocab_size) for _ in range(rng.randint(1, 20))])
    for _ in range(300):  # raw bytes: mostly broken UTF-8
        pool = high_byte_ids if rng.random() < 0.7 else byte_ids
        seqs.append([rng.choice(pool) for _ in range(rng.randint(1, 12))])
    for _ in range(300):  # slices of real encodings: cut multi-byte characters
        ids = rng.choice(corpus_ids)
        if not ids:
            continue
        i = rng.randrange(len(ids))
        j = rng.randint(i + 1, min(len(ids), i + 40))
        s = ids[i:j]
        if rng.random() < 0.3 and special_ids:
            s.insert(rng.randrange(len(s) + 1), rng.choice(special_ids))
        seqs.append(s)
    seqs.append([])
    return seqs


def make_golden(name, base_path, base, patch, corpus, tokenizers):
    tok_json = apply_patch(base, patch) if patch else base
    tok = tokenizers.Tokenizer.from_str(json.dumps(tok_json))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    cases = []
    all_ids = []
    for text in corpus:
        enc = tok.encode(text, add_special_tokens=False).ids
        enc_special = tok.encode(text, add_special_tokens=True).ids
        all_ids.append(enc_special)
        cases.append({
            "text": text,
            "ids": enc,
            "ids_special": enc_special,
            "decoded": tok.decode(enc_special, skip_special_tokens=False),
            "decoded_skip": tok.decode(enc_special, skip_special_tokens=True),
        })
    special_ids = sorted({tok.token_to_id(t["content"]) for t in tok_json["added_tokens"]
                          if t.get("special")} - {None})
    rng = random.Random(SEED + len(name))
    decode_cases = []
    for ids in decode_sequences(rng, tok, all_ids, vocab_size, special_ids):
        decode_cases.append({
            "ids": ids,
            "text": tok.decode(ids, skip_special_tokens=False),
            "text_skip": tok.decode(ids, skip_special_tokens=True),
        })
    probe = ["Ġthe", "hello", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>",
             "<think>", "[MASK]", "<tag>", "not-a-token-at-all"]
    return {
        "variant": name,
        "base": base_path,
        "patch": patch or {},
        "tokenizers_version": tokenizers.__version__,
        "vocab_size": vocab_size,
        "token_to_id": {p: tok.token_to_id(p) for p in probe},
        "special_ids": special_ids,
        "cases": cases,
        "decode_cases": decode_cases,
    }


def write_gz(path, obj):
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as f:
        # mtime=0: identical inputs give identical bytes.
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as gz:
            gz.write(data)
    return len(data), os.path.getsize(path)


def split_lines(text):
    """Lines with their '\n' kept (same split as duet-tokenizer-bench --per_line)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def bench(name, path, text_path, iterations, tokenizers, per_line=False):
    with open(text_path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    inputs = split_lines(text) if per_line else [text]
    tok = tokenizers.Tokenizer.from_file(path)

    def encode_all():  # one encode call per input; never encode_batch
        ids = []
        for s in inputs:
            ids.extend(tok.encode(s, add_special_tokens=False).ids)
        return ids

    ids = encode_all()  # warm-up (fills the word cache)
    wall, cpu = [], []
    for _ in range(iterations):
        c0, t0 = time.process_time(), time.perf_counter()
        got = encode_all()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert len(got) == len(ids)
    med = statistics.median(wall)
    mode = f"{len(inputs)} lines, one encode call each" if per_line else "one encode call"
    print(f"[{name}] text: {len(raw)} bytes ({text_path}), {mode}")
    print(f"[{name}] ids: {len(ids)}, fnv1a64 0x{fnv1a64_ids(ids):016x}")
    print(f"[{name}] encode: {iterations} iterations, median {med * 1e3:.2f} ms, best "
          f"{min(wall) * 1e3:.2f} ms, cpu/wall {statistics.median(cpu) / med:.2f}")
    print(f"[{name}] reference tokenizers {tokenizers.__version__} encode (1 thread, median): "
          f"{len(raw) / 1e6 / med:.2f} MB/s, {len(ids) / med:.0f} tokens/s")
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", action="append", default=[], help="NAME=PATH (qwen3, llama3)")
    ap.add_argument("--out-dir", default="tests/golden/tokenizer")
    ap.add_argument("--bench-text", default="")
    ap.add_argument("--bench-iterations", type=int, default=20)
    ap.add_argument("--bench-ids-out", default="", help="write the reference bench ids (.json.gz)")
    ap.add_argument("--bench-per-line", action="store_true",
                    help="time one encode call per line instead of one for the whole text")
    ap.add_argument("--skip-goldens", action="store_true", help="only run the benchmark")
    ap.add_argument("--fuzz", type=int, default=0,
                    help="also write <name>_fuzz variants with this many random strings")
    ap.add_argument("--print-corpus", action="store_true")
    args = ap.parse_args()

    corpus = build_corpus()
    if args.print_corpus:
        for s in corpus:
            print(json.dumps(s, ensure_ascii=False))
        print(f"{len(corpus)} strings", file=sys.stderr)
        return

    import tokenizers  # only needed from here on

    paths = dict(t.split("=", 1) for t in args.tokenizer)
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"tokenizers {tokenizers.__version__}, corpus {len(corpus)} strings, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS')}")
    bases = {}
    for name, path in paths.items():
        with open(path, encoding="utf-8") as f:
            bases[name] = json.load(f)
    rel = {"qwen3": "assets/qwen3/tokenizer.json", "llama3": "assets/llama3/tokenizer.json"}
    variants = []
    if "qwen3" in bases:
        variants.append(("qwen3", "qwen3", None, corpus))
        small = corpus[::4] + FLAGS_EXTRA_CORPUS
        variants.append(("qwen3_flags", "qwen3", flags_patch(bases["qwen3"]), small))
        variants.append(("gpt2_style", "qwen3", GPT2_PATCH, corpus[1::4] + FLAGS_EXTRA_CORPUS))
    if "llama3" in bases:
        variants.append(("llama3", "llama3", {"post_processor": LLAMA31_POST_PROCESSOR}, corpus))
    if args.fuzz:
        for name in [n for n in ("qwen3", "llama3") if n in bases]:
            patch = {"post_processor": LLAMA31_POST_PROCESSOR} if name == "llama3" else None
            variants.append((name + "_fuzz", name, patch,
                             build_fuzz_corpus(args.fuzz, SEED + len(name))))
    if args.skip_goldens:
        variants = [v for v in variants if v[0].endswith("_fuzz")]
    for name, base_name, patch, strings in variants:
        t0 = time.perf_counter()
        try:
            golden = make_golden(name, rel[base_name], bases[base_name], patch, strings, tokenizers)
        except Exception:  # keep going: one broken variant must not cost the others
            import traceback
            traceback.print_exc()
            continue
        raw, packed = write_gz(os.path.join(args.out_dir, name + ".json.gz"), golden)
        print(f"{name}: {len(golden['cases'])} strings, {len(golden['decode_cases'])} decode "
              f"sequences, {raw} bytes JSON, {packed} gzipped, {time.perf_counter() - t0:.1f} s")

    if args.bench_text:
        bench_ids = {}
        for name, path in paths.items():
            bench_ids[name] = bench(name, path, args.bench_text, args.bench_iterations, tokenizers,
                                    args.bench_per_line)
        if args.bench_ids_out:
            write_gz(args.bench_ids_out, bench_ids)


if __name__ == "__main__":
    main()
