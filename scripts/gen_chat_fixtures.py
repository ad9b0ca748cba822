#!/usr/bin/env python3
"""Writes tests/fixtures/chat/jinja2_cases.json: chat templates written for this project that
exercise the Hugging Face Jinja dialect, rendered by Python Jinja2 set up the way transformers sets it
up (`_compile_jinja_template` in transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks and loopcontrols; `tojson` = json.dumps(ensure_ascii=False, ...);
`raise_exception`; `strftime_now` (here pinned to NOW, UTC, so the output is reproducible).

Generated with Jinja2 3.1.6 / Python 3. Rerun after changing a case:
    python3 scripts/gen_chat_fixtures.py
"""
import datetime
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = 1721743509  # 2024-07-23 14:05:09 UTC


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


TEMPLATES = {
    # Block tags on their own, indented lines: trim_blocks + lstrip_blocks decide the whitespace.
    "whitespace": """{% for message in messages %}
    {% if message['role'] == 'system' %}
<<{{ message['content'] }}>>
    {% else %}
[{{ message['role'] }}] {{ message['content'] }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
[assistant]
{% endif %}""",
    # Python string/dict methods (minijinja-contrib pycompat).
    "pycompat": """{% for m in messages %}
{{ m.role.upper() }}|{{ m.content.strip() }}|{{ m.content.split()|length }}|{{ m.content.startswith('What') }}|{{ m.content.endswith('?') }}|{{ m.content.replace('a', 'A') }}|{{ m.content.lower() }}|{{ m.content.rstrip('.?') }}|{{ m.content.lstrip() }}|{{ m.role.title() }}
{% for k, v in m.items() %}{{ k }}={{ v|length }};{% endfor %}{{ m.get('role') }},{{ m.get('missing', 'dflt') }}
{% endfor %}""",
    # Loop controls, loop variables, namespace, slicing, filters, tests.
    "loops": """{% set ns = namespace(n=0, last='') %}
{% for m in messages %}
{% if m.role == 'system' %}{% continue %}{% endif %}
{% if loop.index > 4 %}{% break %}{% endif %}
{% set ns.n = ns.n + 1 %}
{{ loop.index }}/{{ loop.length }} {{ 'first ' if loop.first }}{{ 'last ' if loop.last }}{{ m.role }}{% if loop.previtem is defined %} after {{ loop.previtem.role }}{% endif %}

{% set ns.last = m.content %}
{% endfor %}
n={{ ns.n }} last={{ ns.last|trim }} users={{ messages|selectattr('role', 'equalto', 'user')|list|length }}
roles={{ messages|map(attribute='role')|join(',') }} rest={{ messages[1:]|length }} first={{ (messages|first).role }} {{ messages[0]['content'] is string }} {{ foo is defined }} {{ 'sea' in messages[-1].content }}
{{ range(3)|list }} {{ tools is none }} {{ tools is defined }} {{ tools is iterable }} {{ messages is iterable }} {{ undefined_thing|length }} {{ none }} {{ true }} {{ false }} {{ 'x' ~ 3 ~ 'y' }} {{ [1, 2, 3]|reverse|join('') }} {{ '-' * 5 }}""",
    # tojson with Python's json.dumps spacing, indent, separators, sort_keys, unicode and floats.
    "tojson": """{{ messages|tojson }}
{{ {'name': 'get_weather', 'parameters': {'type': 'object', 'required': ['city'], 'x': 0.5, 'big': 1e20, 'one': 1.0, 'tiny': 0.00001, 'n': none, 'b': true}}|tojson }}
{{ {'b': 1, 'a': [1, 2, {'c': []}], 'e': {}}|tojson(indent=2) }}
{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ [1, {'a': 'q"uote\\\\back'}]|tojson(separators=(',', ':')) }}
{{ 'é\\n\\t\\u0001'|tojson }} {{ 'é'|tojson(ensure_ascii=true) }}""",
    # raise_exception when roles do not alternate, strftime_now, bos/eos.
    "checks": """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set sys = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set sys = '' %}{% endif %}
Today is {{ strftime_now('%d %b %Y') }}.
{% for message in loop_messages %}
{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{% endif %}
{{ message['role'] }}: {{ (sys + '\\n\\n' if loop.first and sys else '') + message['content'] | trim }}{{ eos_token if message['role'] == 'assistant' }}
{% endfor %}
{% if add_generation_prompt %}assistant:{% endif %}""",
}

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is the boiling point of water?"}],
    "multi": [
        {"role": "system", "content": "  You are terse.  "},
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    "unicode": [
        {"role": "user", "content": "Ça va? \"quotes\" and \\backslash\\\nnew line — 日本語 🦀"},
        {"role": "assistant", "content": "Très bien.\ttab"},
    ],
    "bad_order": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ],
}


def main():
    env = make_env()
    cases = []
    for tname, src in TEMPLATES.items():
        tmpl = env.from_string(src)
        for cname, msgs in CONVERSATIONS.items():
            for agp in (False, True):
                case = {
                    "template": tname,
                    "conversation": cname,
                    "add_generation_prompt": agp,
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                }
                try:
                    # As transformers' render_jinja_template calls it: tools and documents None when absent.
                    case["expected"] = tmpl.render(
                        messages=msgs,
                        tools=None,
                        documents=None,
                        add_generation_prompt=agp,
                        bos_token="<s>",
                        eos_token="</s>",
                    )
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = {
        "generator": "scripts/gen_chat_fixtures.py, Jinja2 " + jinja2.__version__,
        "now_unix": NOW,
        "templates": TEMPLATES,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "chat", "jinja2_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
