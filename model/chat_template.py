"""Render a Jinja chat template to exactly the text `transformers`' `apply_chat_template` produces.

Same environment as transformers: sandboxed, `trim_blocks`, `lstrip_blocks`, loop controls, a `tojson`
that does not HTML-escape, `raise_exception` and `strftime_now`. Templates from model files are
untrusted code, hence the sandbox.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ember.model.errors import EmberError

Message = dict[str, Any]


class ChatTemplateError(EmberError):
    """The model's chat template failed to render these messages."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not parse: {e}") from e


def render_chat(template: str, messages: list[Message], *, add_generation_prompt: bool = True,
                tools: list[dict[str, Any]] | None = None, **special_tokens: Any) -> str:
    """The prompt text for `messages` (dicts with `role` and `content`)."""
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise ChatTemplateError(f"each message needs a 'role' (got {m!r})")
    try:
        return compile_template(template).render(
            messages=messages, tools=tools, documents=None,
            add_generation_prompt=add_generation_prompt, **special_tokens,
        )
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template rejected these messages: {e}") from e
