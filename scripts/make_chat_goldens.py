#!/usr/bin/env python3
"""Writes the chat-template goldens that tests/chat/chat_template_test.cc
renders byte for byte with duet's own Jinja interpreter (chat/).

For each template (NAME=DIR: a checkpoint/tokenizer directory holding
tokenizer_config.json and/or chat_template.jinja) it builds --count varied
conversations (system prompt or none, multi-turn, reasoning, tool
definitions, tool calls and responses, add_generation_prompt on/off, template
kwargs, unicode, empty content, and a few that make the template raise),
renders each and writes <out-dir>/<NAME>.json with the inputs, the expected
text (or the raise_exception message) and which engine made them.

Engines:
  transformers  AutoTokenizer.from_pretrained(DIR).apply_chat_template(...,
                tokenize=False): the reference. Needs transformers (and a
                tokenizer.json or equivalent in DIR).
  jinja2        plain jinja2 set up the way transformers sets it up
                (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
                loopcontrols; its tojson, raise_exception and strftime_now;
                the special tokens and kwargs it passes). For machines
                without transformers; the lead regenerates with transformers
                and compares.

Usage:
  python3 scripts/make_chat_goldens.py --engine jinja2
  python3 scripts/make_chat_goldens.py --engine transformers
  # Llama-3.1 (the template is not committed, licence; its goldens are):
  # assets/llama3_1/chat_template.jinja holds only the template, so the
  # tokenizer's special tokens are given here (Llama-3.1-8B-Instruct's).
  python3 scripts/make_chat_goldens.py --engine jinja2 --exprs 0 --count 200 \\
      --template llama3_1=assets/llama3_1 \\
      --special-tokens '{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}'
"""

import argparse
import hashlib
import json
import os
import random
import sys
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEMPLATES = ["qwen3=assets/qwen3", "llama3=assets/llama3"]
SPECIAL_TOKEN_NAMES = ["bos_token", "eos_token", "unk_token", "sep_token",
                       "pad_token", "cls_token", "mask_token"]


def load_template(directory):
    """(template source, special tokens map) as transformers sees them."""
    cfg_path = os.path.join(directory, "tokenizer_config.json")
    cfg = {}
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    special = {}
    for name in SPECIAL_TOKEN_NAMES:
        tok = cfg.get(name)
        if isinstance(tok, dict):
            tok = tok.get("content")
        if tok:
            special[name] = tok
    extra = [t.get("content") if isinstance(t, dict) else t
             for t in cfg.get("additional_special_tokens") or []]
    if extra:
        special["additional_special_tokens"] = extra
    jinja_path = os.path.join(directory, "chat_template.jinja")
    if os.path.exists(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return f.read(), special
    source = cfg.get("chat_template")
    if isinstance(source, list):
        source = {t["name"]: t["template"] for t in source}["default"]
    if not isinstance(source, str):
        sys.exit(f"{directory}: no chat template")
    return source, special


class Jinja2Engine:
    """transformers' _compile_jinja_template and render, with plain jinja2."""

    name = "jinja2"

    def __init__(self, directory, special_override=None):
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.version = jinja2.__version__
        self.source, self.special = load_template(directory)
        self.special.update(special_override or {})

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None,
                   sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        def strftime_now(format):  # noqa: A002 (transformers' name)
            return datetime.now().strftime(format)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        self.template = env.from_string(self.source)
        self.error_type = jinja2.exceptions.TemplateError

    def render(self, messages, tools, add_generation_prompt, kwargs):
        template_kwargs = {**self.special, **kwargs}
        return self.template.render(
            messages=messages, tools=tools, documents=None,
            add_generation_prompt=add_generation_prompt, **template_kwargs)


class TransformersEngine:
    name = "transformers"

    def __init__(self, directory, special_override=None):
        import jinja2
        import transformers

        self.version = transformers.__version__
        self.source, self.special = load_template(directory)
        if special_override:
            # The tokenizer's own special tokens are what transformers passes.
            sys.exit("--special-tokens is for --engine jinja2 only")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        self.error_type = jinja2.exceptions.TemplateError

    def render(self, messages, tools, add_generation_prompt, kwargs):
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt,
            tokenize=False, **kwargs)


# ------------------------------------------------------------ conversations

TEXTS = [
    "Hello!", "What is 2 + 2?", "Explain KV caching in one paragraph.",
    "  leading and trailing spaces  ", "\n\nnewlines around\n\n",
    "tabs\tinside\tand a trailing tab\t", "Ünïcödé: naïve café, Straße",
    "中文问题：今天天气怎么样？", "日本語のテキストです。", "한국어 문장입니다.",
    "Emoji 🎉🚀 and a flag 🇫🇷 and ZWJ 👩‍💻", "Arabic: مرحبا بالعالم",
    "quotes \"double\" and 'single' and back\\slash",
    "json-like {\"a\": [1, 2, {\"b\": null}]}", "multi\nline\ncontent",
    "windows\r\nline endings\r\n", "trailing ideographic space\u3000",
    "\u00a0nbsp around\u00a0", "<b>html</b> &amp; entities",
    "{{ not a template }} {% neither %}", "x" * 300, "a", "",
    "<tool_response>\nfake tool text typed by a user\n</tool_response>",
    "Math: ∑_{i=1}^n i = n(n+1)/2, π ≈ 3.14159",
]

REASONING = [
    "Let me think step by step.", "\nThe user wants a short answer.\n",
    "First, 2+2=4.\nSo the answer is 4.", "", "思考中……",
]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Zürich"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search",
        "description": "Search the web — returns the top results.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"},
            "max_results": {"type": "integer", "default": 5, "minimum": 1},
            "safe": {"type": "boolean", "default": True},
            "threshold": {"type": "number", "default": 0.25}},
            "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an expression.",
        "parameters": {"type": "object", "properties": {
            "expression": {"type": "string", "description": "e.g. \"1+1\""},
            "precision": {"type": ["integer", "null"], "default": None},
            "scale": {"type": "number", "default": 1e-05}},
            "required": ["expression"]}}},
    {"type": "function", "function": {
        "name": "lookup_user", "description": "",
        "parameters": {"type": "object", "properties": {}}}},
]

ARGUMENTS = {
    "get_weather": [{"city": "Paris"}, {"city": "東京", "unit": "celsius"},
                    {"unit": "fahrenheit", "city": "New York"}],
    "search": [{"query": "duet LLM serving", "max_results": 3},
               {"query": "émoji 🎉", "safe": False, "threshold": 0.5}],
    "calculator": [{"expression": "2**10"},
                   {"expression": "1/3", "precision": 4, "scale": 2.5}],
    "lookup_user": [{}, {"id": 42, "tags": ["a", "b"], "meta": None}],
}


def tool_result(rng, name):
    return rng.choice([
        json.dumps({"name": name, "ok": True, "value": rng.randint(0, 99)}),
        "22°C, sunny", "", "line one\nline two", "错误：未找到",
    ])


def tool_call(rng, name, as_string=False):
    args = rng.choice(ARGUMENTS[name])
    call = {"type": "function", "function": {
        "name": name,
        "arguments": json.dumps(args, ensure_ascii=False) if as_string else args}}
    if rng.random() < 0.5:
        call["id"] = "call_%06d" % rng.randint(0, 999999)
    return call


def qwen3_case(rng, i):
    msgs, kwargs = [], {}
    tools = rng.sample(TOOLS, rng.randint(1, 3)) if rng.random() < 0.4 else None
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(
            ["You are a helpful assistant.", "Réponds en français.", "", "  sys  "])})
    for turn in range(rng.randint(1, 4)):
        msgs.append({"role": "user", "content": rng.choice(TEXTS)})
        last = turn == 0 or rng.random() < 0.3
        if tools and rng.random() < 0.6:
            names = [t["function"]["name"] for t in tools]
            calls = [tool_call(rng, rng.choice(names), rng.random() < 0.3)
                     for _ in range(rng.randint(1, 2))]
            content = rng.choice(["", "Let me check.", "<think>\nneed a tool\n</think>\n\nCalling."])
            msg = {"role": "assistant", "content": content, "tool_calls": calls}
            if rng.random() < 0.3:
                msg["reasoning_content"] = rng.choice(REASONING)
            msgs.append(msg)
            for c in calls:
                msgs.append({"role": "tool", "content": tool_result(rng, c["function"]["name"])})
            if rng.random() < 0.5:
                break
        if rng.random() < 0.75 or not last:
            content = rng.choice(TEXTS)
            style = rng.random()
            msg = {"role": "assistant", "content": content}
            if style < 0.3:
                msg["content"] = "<think>\n%s\n</think>\n\n%s" % (rng.choice(REASONING), content)
            elif style < 0.5:
                msg["reasoning_content"] = rng.choice(REASONING)
            elif style < 0.55:
                msg["reasoning_content"] = None
            msgs.append(msg)
    if rng.random() < 0.1 and len(msgs) > 2:
        msgs.insert(len(msgs) - 1, {"role": "system", "content": "A mid-conversation system note."})
    r = rng.random()
    if r < 0.3:
        kwargs["enable_thinking"] = False
    elif r < 0.5:
        kwargs["enable_thinking"] = True
    return msgs, tools, rng.random() < 0.6, kwargs


def llama3_case(rng, i):
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(TEXTS)})
    for _ in range(rng.randint(1, 4)):
        msgs.append({"role": "user", "content": rng.choice(TEXTS)})
        if rng.random() < 0.7:
            msgs.append({"role": "assistant", "content": rng.choice(TEXTS)})
    return msgs, None, rng.random() < 0.6, {}


def llama31_case(rng, i):
    """Llama-3.1 Instruct: tools as JSON functions (in the system or the first
    user message), builtin tools (ipython environment, <|python_tag|> calls,
    <|eom_id|>), tool/ipython responses, date_string, and its raises."""
    msgs, kwargs = [], {}
    if rng.random() < 0.8:  # else the template's own default date
        kwargs["date_string"] = rng.choice(["26 Jul 2024", "01 Jan 2025", "29 Feb 2028"])
    tools = rng.sample(TOOLS, rng.randint(1, 3)) if rng.random() < 0.5 else None
    if tools is not None and rng.random() < 0.1:
        tools = []
    if rng.random() < 0.4:
        kwargs["tools_in_user_message"] = rng.random() < 0.5
    if rng.random() < 0.15 and tools:
        kwargs["custom_tools"], tools = tools, None
    builtin = rng.random() < 0.25
    if builtin:
        kwargs["builtin_tools"] = rng.choice(
            [["brave_search", "wolfram_alpha"], ["code_interpreter", "brave_search"],
             ["wolfram_alpha"], ["code_interpreter"]])
    if rng.random() < 0.6:
        msgs.append({"role": "system", "content": rng.choice(TEXTS)})
    for turn in range(rng.randint(1, 3)):
        msgs.append({"role": "user", "content": rng.choice(TEXTS)})
        avail = tools or kwargs.get("custom_tools")
        searchable = [t for t in kwargs.get("builtin_tools", []) if t != "code_interpreter"]
        if avail and rng.random() < 0.6:
            name = rng.choice([t["function"]["name"] for t in avail])
            n = 2 if rng.random() < 0.05 else 1  # the template raises on 2
            # OpenAI clients send arguments as a JSON string: tojson quotes it.
            calls = [tool_call(rng, name, rng.random() < 0.2) for _ in range(n)]
            msg = {"role": "assistant", "tool_calls": calls}
            if rng.random() < 0.3:
                msg["content"] = rng.choice([None, ""])
            msgs.append(msg)
            content = tool_result(rng, name)
            r = rng.random()
            if r < 0.2:
                content = {"result": content, "n": 1.5, "ok": None}
            elif r < 0.3:
                content = [content, 2, {"k": "v"}]
            msgs.append({"role": rng.choice(["tool", "ipython"]), "content": content})
        elif searchable and rng.random() < 0.6:
            name = rng.choice(searchable)
            args = rng.choice([{"query": "weather in Zürich"}, {"query": "2+2"},
                               {"query": "café", "lang": "fr"}])
            msgs.append({"role": "assistant", "tool_calls": [{"type": "function", "function": {
                "name": name, "arguments": args}}]})
            msgs.append({"role": "ipython", "content": rng.choice(
                ["result text", "{\"answer\": 4}", {"answer": 4}, ""])})
        if rng.random() < 0.7:
            msgs.append({"role": "assistant", "content": rng.choice(TEXTS)})
        elif rng.random() < 0.05:
            msgs.append({"role": "assistant", "content": None})  # trim(None): "None"
    if rng.random() < 0.05:
        # No user message to put the tools in: raises when they go there.
        msgs = [m for m in msgs[:1] if m["role"] == "system"]
    return msgs, tools, rng.random() < 0.6, kwargs


# ------------------------------------------------- random expression goldens

EXPR_STRINGS = ["", "a", "abc", "  pad  ", "\tx\n", "Hello, World", "a,b,,c",
                "x.y.z", "café", "中文字符", "🎉 ok", "O'Neil", 'say "hi"',
                "back\\slash", "\u3000wide\u00a0", "line1\nline2\r\nline3",
                "MiXeD cAsE wOrDs", "ÉLAN vital", "Привет Мир", "ΑΒΓ αβγ"]


def rand_scalar(rng):
    r = rng.random()
    if r < 0.2:
        return rng.choice([0, 1, -1, 7, 42, -13, 10**12, 3])
    if r < 0.35:
        return rng.choice([0.5, 2.5, -1.25, 0.1, 1e-05, 1e20, 3.0, 123456.789, 1e16, 0.0001])
    if r < 0.75:
        return rng.choice(EXPR_STRINGS)
    if r < 0.88:
        return rng.choice([True, False])
    return None


def rand_value(rng, depth=0):
    r = rng.random()
    if depth < 2 and r < 0.15:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 2 and r < 0.25:
        return {rng.choice(["a", "b", "name", "ü", "k k"]) + str(i): rand_value(rng, depth + 1)
                for i in range(rng.randint(0, 3))}
    return rand_scalar(rng)


def rand_list(rng, kind=None):
    n = rng.randint(0, 5)
    if kind == "int":
        return [rng.randint(-5, 9) for _ in range(n)]
    if kind == "str":
        return [rng.choice(EXPR_STRINGS[:14]) for _ in range(n)]
    return [rand_value(rng, 1) for _ in range(n)]


def rand_slice(rng):
    part = lambda: rng.choice(["", "", "0", "1", "2", "-1", "-2", "5", "-9", "none"])
    step = rng.choice(["", "", "1", "2", "-1", "-2", "3"])
    return part() + ":" + part() + ((":" + step) if step or rng.random() < 0.3 else "")


def expr_case(rng):
    """A small template over a random context, and that context."""
    ctx = {"s": rng.choice(EXPR_STRINGS), "t": rng.choice(EXPR_STRINGS),
           "n": rng.randint(-20, 20), "m": rng.choice([1, 2, 3, -4, 7, 0]),
           "f": rng.choice([0.5, 1.5, 2.5, 2.25, -3.5, 1e-05, 10.0, 0.1, 2.675]),
           "l": rand_list(rng, rng.choice(["int", "str", None])),
           "v": rand_value(rng), "w": rand_value(rng),
           "d": {"role": rng.choice(["user", "tool"]), "content": rng.choice(EXPR_STRINGS),
                 "n": rng.randint(0, 3)}}
    strm = rng.choice([
        "s.strip()", "s.lstrip()", "s.rstrip()", "s.strip('a ')", "s.split()",
        "s.split(',')", "s.split('.', 1)", "s.rsplit(',', 1)", "s.rsplit(None, 1)",
        "s.replace('a', 'A')", "s.replace('', '-')", "s.startswith('a')",
        "s.endswith(('c', 'd'))", "s.upper()", "s.lower()", "s.title()",
        "s.capitalize()", "s.find('b')", "s.count('a')", "', '.join(l|map('string'))",
        "s.splitlines()", "s.isdigit()", "s.isspace()"])
    filt = rng.choice([
        "v|tojson", "v|tojson(indent=2)", "l|tojson(indent=4)", "s|tojson",
        "v|tojson(separators=(',', ':'))", "d|tojson(sort_keys=true)",
        "s|trim", "s|length", "l|length", "d|length", "l|first", "l|last", "s|first",
        "s|last", "l|join('-')", "l|join", "s|upper", "s|lower", "s|capitalize",
        "s|title", "l|reverse|list", "s|reverse", "l|unique|list", "l|sort",
        "l|sort(reverse=true)", "undefined_var|default('dflt')", "s|default('x', true)",
        "s|replace('a', '_')", "s|list", "d|items|list", "d|list", "n|abs",
        "f|round", "f|round(1)", "n|round", "(f * 3)|round(0, 'floor')", "n|float", "s|int", "f|int", "l|sum",
        "l|min", "l|max", "l|select|list", "l|reject('none')|list",
        "l|select('string')|list", "l|reject('equalto', 1)|list",
        "[d, d]|map(attribute='role')|list", "[d]|selectattr('role', 'equalto', 'user')|list",
        "l|map('string')|join(',')", "s|indent(2)", "s|indent(2, true)", "s|string",
        "v|string", "l|count"])
    test = rng.choice(["defined", "undefined", "none", "string", "number", "integer",
                       "float", "boolean", "mapping", "iterable", "sequence", "true",
                       "false", "odd", "even", "divisibleby(3)", "equalto(1)", "in(l)",
                       "lower", "upper", "sameas(none)", "callable"])
    arith = rng.choice(["n + m", "n - m", "n * m", "n / m", "n // m", "n % m", "m ** 3",
                        "f * 2", "f + n", "f / 4", "-n", "n ~ s", "s ~ f", "s + t",
                        "l + l", "s * 2", "0.1 + 0.2", "n // -3", "-7 % 3", "2 ** -1",
                        "f // 0.5", "1e16 * 10", "f - f"])
    cmpx = rng.choice(["n < m", "n >= m", "n == m", "n != f", "s < t", "s == t",
                       "s in t", "'a' in s", "n in l", "s not in l", "1 < n < 10",
                       "n and s", "n or s", "not v", "v and w", "v or w",
                       "s if n > 0 else t", "(s if n) is defined", "l == l[:]",
                       "d.role == 'user'", "'content' in d", "d.missing is defined",
                       "d['n'] + 1", "d.get('nope', 5)", "d.keys()|list",
                       "d.values()|list|length", "v == w", "[1, 2] < [1, 3]"])
    shape = rng.choice(["strm", "filt", "test", "arith", "cmp", "slice", "print",
                        "loop", "ns", "macro", "ws", "set"])
    if shape == "strm":
        src = "{{ %s }}" % strm
    elif shape == "filt":
        src = "{{ %s }}" % filt
    elif shape == "test":
        src = "{{ v is %s }}|{{ w is not %s }}|{{ n is %s }}" % (test, test, test)
    elif shape == "arith":
        src = "{{ %s }}" % arith
    elif shape == "cmp":
        src = "{{ %s }}" % cmpx
    elif shape == "slice":
        src = "{{ s[%s] }}|{{ l[%s] }}|{{ l[%d] is defined }}" % (
            rand_slice(rng), rand_slice(rng), rng.randint(-6, 6))
    elif shape == "print":
        src = "{{ v }}|{{ w }}|{{ [v, w] }}|{{ {'k': v} }}"
    elif shape == "loop":
        src = rng.choice([
            "{% for x in l %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}"
            "{{ loop.first }}{{ loop.last }}{{ loop.length }}({{ loop.previtem }}/"
            "{{ loop.nextitem }}){% else %}empty{% endfor %}",
            "{% for x in l if x %}[{{ x }}]{% if loop.index > 2 %}{% break %}{% endif %}{% endfor %}",
            "{% for x in l %}{% if x is string %}{% continue %}{% endif %}{{ x }},{% endfor %}",
            "{% for k, v2 in d.items() %}{{ k }}={{ v2 }};{% endfor %}",
            "{% for k in d %}{{ k }}{{ loop.cycle('<', '>') }}{% endfor %}",
            "{% for x in l[::-1] %}{% set y = x %}{{ y }}{% endfor %}{{ y is defined }}",
            "{% for i in range(n % 5) %}{{ i }}{% endfor %}|{{ range(1, 7, 2)|list }}",
        ])
    elif shape == "ns":
        src = ("{% set ns = namespace(total=0, seen=[]) %}{% for x in l %}"
               "{% set ns.total = ns.total + 1 %}{% set ns.seen = ns.seen + [x] %}"
               "{% endfor %}{{ ns.total }}:{{ ns.seen }}")
    elif shape == "macro":
        src = rng.choice([
            "{% macro m(a, b='B') %}<{{ a }}|{{ b }}>{% endmacro %}{{ m(s) }}{{ m(n, b=t) }}",
            "{{ w2(v) }}{% macro w2(x) %}{{ x|tojson }}{% endmacro %}",
        ])
    elif shape == "set":
        src = rng.choice([
            "{% set a, b = l[:2] if l|length >= 2 else [1, 2] %}{{ a }}{{ b }}",
            "{% set block %}  {{ s }}\n{% endset %}[{{ block }}]",
            "{% if n > 0 %}{% set z = 'pos' %}{% else %}{% set z = 'neg' %}{% endif %}{{ z }}",
            "{% set messages = l[1:] %}{{ messages|length }}",
        ])
    else:
        pieces = ["\n", "  ", "\n  ", "text", " \t", "\n\n"]
        tags = ["{% if n %}", "{%- if n %}", "{% if n -%}", "{%+ if n %}",
                "{{ s }}", "{{- s }}", "{{ s -}}", "{# c #}", "{#- c -#}", "{% set q = 1 %}",
                "{%- set q = 2 -%}", "{% raw %}{{ raw }}{% endraw %}"]
        src = ""
        depth = 0
        for _ in range(rng.randint(3, 9)):
            src += rng.choice(pieces)
            tag = rng.choice(tags + (["{% endif %}", "{%- endif %}", "{% endif -%}"] if depth else []))
            if "if n" in tag:
                depth += 1
            elif "endif" in tag:
                depth -= 1
            src += tag
        src += "{% endif %}" * depth + rng.choice(pieces)
    return src, ctx


def expr_env():
    """transformers' compiled-template environment (falls back to jinja2)."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        import transformers
        return (lambda src: _compile_jinja_template(src)), "transformers", transformers.__version__
    except ImportError:
        import jinja2
        engine = Jinja2Engine.__new__(Jinja2Engine)
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        return env.from_string, "jinja2", jinja2.__version__


def make_expr_goldens(count, seed, out_dir):
    compile_template, engine, version = expr_env()
    rng = random.Random("exprs/%d" % seed)
    cases, errors = [], 0
    for i in range(count):
        src, ctx = expr_case(rng)
        case = {"name": "expr_%04d" % i, "template": src, "context": ctx}
        try:
            case["expected"] = compile_template(src).render(**ctx)
        except Exception as e:  # noqa: BLE001 (any Jinja runtime error)
            case["error"] = "%s: %s" % (type(e).__name__, e)
            errors += 1
        cases.append(case)
    path = os.path.join(out_dir, "jinja_exprs.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"engine": engine, "engine_version": version, "cases": cases},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("jinja_exprs: %d cases (%d raise) by %s %s -> %s"
          % (len(cases), errors, engine, version, os.path.relpath(path, ROOT)))


def family(source):
    if "<|im_start|>" in source:
        return qwen3_case
    if "tools_in_user_message" in source:
        return llama31_case
    return llama3_case


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["transformers", "jinja2"], default="transformers")
    ap.add_argument("--template", action="append",
                    help="NAME=DIR (default: %s)" % " ".join(DEFAULT_TEMPLATES))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests/golden/chat"))
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--seed", type=int, default=20250101)
    ap.add_argument("--special-tokens", type=json.loads, default=None,
                    help="JSON object of special tokens (bos_token, ...) to pass, "
                    "for a DIR without tokenizer_config.json (jinja2 engine)")
    ap.add_argument("--exprs", type=int, default=600,
                    help="random expression goldens (jinja_exprs.json); 0: none")
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    for spec in args.template or DEFAULT_TEMPLATES:
        name, directory = spec.split("=", 1)
        full_dir = directory if os.path.isabs(directory) else os.path.join(ROOT, directory)
        engine_cls = TransformersEngine if args.engine == "transformers" else Jinja2Engine
        engine = engine_cls(full_dir, args.special_tokens)
        make_case = family(engine.source)
        rng = random.Random("%s/%d" % (name, args.seed))
        cases, errors = [], 0
        for i in range(args.count):
            messages, tools, agp, kwargs = make_case(rng, i)
            case = {"name": "%s_%03d" % (name, i), "messages": messages, "tools": tools,
                    "add_generation_prompt": agp, "kwargs": kwargs}
            try:
                case["expected"] = engine.render(messages, tools, agp, kwargs)
            except engine.error_type as e:
                case["error"] = str(e)
                errors += 1
            cases.append(case)
        out = {
            "template": name,
            "template_dir": directory,
            "template_sha256": hashlib.sha256(engine.source.encode()).hexdigest(),
            "engine": engine.name,
            "engine_version": engine.version,
            "special_tokens": engine.special,
            "cases": cases,
        }
        path = os.path.join(args.out_dir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("%s: %d cases (%d raise) by %s %s -> %s"
              % (name, len(cases), errors, engine.name, engine.version,
                 os.path.relpath(path, ROOT)))
    if args.exprs:
        make_expr_goldens(args.exprs, args.seed, args.out_dir)


if __name__ == "__main__":
    main()
