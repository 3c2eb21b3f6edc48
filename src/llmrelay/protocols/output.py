"""How each protocol is asked for structured output: the mechanism (`mode_for`) and the call
reshaped for it (`shape`: an output tool or an instruction added). Encoders call `shape`
through `protocols.base.shaped`; the stream-side plan lives in `llmrelay.structured`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from ..call import Call
from ..errors import InvalidRequestError
from ..messages import Message

if TYPE_CHECKING:
    from ..structured.spec import OutputSchema

__all__ = ["MODES", "mode_for", "shape"]

#: The mechanisms, in fallback order.
MODES = ("json_schema", "json_object", "tool", "prompt")
#: Native (non-tool, non-prompt) mechanisms each protocol has.
_NATIVE: dict[str, tuple[str, ...]] = {
    "openai_chat": ("json_schema", "json_object"),
    "openai_responses": ("json_schema", "json_object"),
    "gemini": ("json_schema", "json_object"),
    "ollama": ("json_schema", "json_object"),
    "cohere": ("json_schema", "json_object"),
    "cohere_v1": ("json_schema", "json_object"),
    "anthropic": (),
    "bedrock": (),
    "bedrock_invoke": (),
}
#: Protocols that can force a call of one named tool (Ollama cannot; Cohere v1 has no tools here).
_FORCED_TOOL = frozenset({"openai_chat", "openai_responses", "anthropic", "gemini", "cohere", "bedrock", "bedrock_invoke"})

PROMPT_INSTRUCTION = (
    "Answer with a single JSON value that matches this JSON schema, and nothing else "
    "(no prose, no Markdown code fence):\n{schema}"
)
JSON_OBJECT_INSTRUCTION = "Answer in JSON: a single JSON object that matches this JSON schema:\n{schema}"
TOOL_INSTRUCTION = "Give your final answer by calling the {name} tool."
TOOL_DESCRIPTION = "Give the final answer: call this tool with the answer as its arguments."


def mode_for(call: Call) -> str:
    """The mechanism used for this call: the provider's `structured`, or the next one its protocol has."""
    wanted = getattr(call.provider, "structured", "json_schema") or "json_schema"
    if wanted not in MODES:
        raise InvalidRequestError(
            f"provider {call.provider.name!r}: structured must be one of {', '.join(MODES)}; got {wanted!r}")
    protocol = call.provider.protocol
    native = _NATIVE.get(protocol, ())
    for mode in MODES[MODES.index(wanted):]:
        if mode in native or mode == "prompt" or (mode == "tool" and protocol in _FORCED_TOOL):
            return mode
    return "prompt"  # pragma: no cover - "prompt" always matches


def shape(call: Call) -> tuple[Call, str | None]:
    """For an encoder: the call to encode (with the output tool or the instruction added),
    and the native mechanism to add to the body ("json_schema" | "json_object") or None."""
    out: OutputSchema = call.output
    mode = mode_for(call)
    if mode == "json_schema":
        return call, mode
    schema_text = json.dumps(out.schema, ensure_ascii=False, separators=(",", ":"))
    if mode == "json_object":
        return _instruct(call, JSON_OBJECT_INSTRUCTION.format(schema=schema_text)), mode
    if mode == "prompt":
        return _instruct(call, PROMPT_INSTRUCTION.format(schema=schema_text)), None
    return _with_output_tool(call, out), None


def _instruct(call: Call, text: str) -> Call:
    """The instruction as a system message, after the caller's leading system messages."""
    messages = list(call.messages)
    at = 0
    while at < len(messages) and messages[at].role == "system":
        at += 1
    messages.insert(at, Message.system(text))
    return replace(call, messages=messages)


def _with_output_tool(call: Call, out: OutputSchema) -> Call:
    from ..tools.tool import Tool

    user_tools = list(call.tools or [])
    if any(t.name == out.name for t in user_tools):
        raise InvalidRequestError(f"a tool is named {out.name!r}, like the output type: rename one of them")
    protocol = call.provider.protocol
    schema, strict = out.openai() if protocol in ("openai_chat", "openai_responses") else (out.schema, False)
    tool = Tool(out.name, out.description or TOOL_DESCRIPTION, schema, strict=strict)
    choice = call.tool_choice
    p = call.params
    thinking = protocol in ("anthropic", "bedrock", "bedrock_invoke") and (
        bool(p.thinking_budget) or p.reasoning_effort not in (None, "none"))
    if thinking:  # Anthropic: with thinking on, tool_choice may only be auto or none
        if choice in (None, "auto", "required"):
            choice = None
        call = _instruct(call, TOOL_INSTRUCTION.format(name=out.name))
    elif not user_tools or choice == "none":
        choice = out.name
    elif choice in (None, "auto"):
        choice = "required"
    return replace(call, tools=[*user_tools, tool], tool_choice=choice)


# -- per model turn: deltas -> partials -------------------------------------------------
