"""Structured output: `output=` gives a validated object from every provider, and partial
objects while the stream is still running.

    class Weather(BaseModel):
        city: str
        temperature: float

    r = llmrelay.complete("openai:gpt-4o", "Weather in Paris?", output=Weather)
    r.output                      # Weather(city='Paris', temperature=18.0)

    with llmrelay.stream("anthropic:claude-sonnet-4-5", "...", output=Weather) as s:
        for p in s.partial_stream:
            print(p.value)        # {'city': 'Par'}, {'city': 'Paris'}, {'city': 'Paris', 'temperature': 18.0}
        s.response.output         # Weather(...)

`output` is a pydantic model, a dataclass, a TypedDict, any type pydantic can
validate (`list[Item]`, `int`, `Literal[...]`...), or a JSON schema dict (also the
OpenAI `{"name", "schema", "strict"}` shape). Types are validated by a pydantic
`TypeAdapter` (in JSON mode, like the provider's JSON), schema dicts by
`llmrelay.tools.schema_errors`. pydantic is imported only when `output=` is used.

How each provider is asked (`Provider.structured`, a profile field; a mechanism
the protocol lacks falls back along json_schema -> json_object -> tool -> prompt):

| provider (protocol)                 | structured  | request                                                       |
|-------------------------------------|-------------|---------------------------------------------------------------|
| openai, OpenAI-compatibles (chat)   | json_schema | `response_format: {type: json_schema, json_schema: {name, schema, strict}}` |
| groq, deepseek (chat)               | json_object | `response_format: {type: json_object}` + schema in a system message |
| openai-responses                    | json_schema | `text: {format: {type: json_schema, name, schema, strict}}`   |
| anthropic                           | tool        | an output tool + `tool_choice: {type: tool, name}`; the JSON streams as its `input_json_delta` |
| gemini                              | json_schema | `generationConfig: {responseMimeType: application/json, responseJsonSchema}` |
| ollama                              | json_schema | `format: <schema>` (`"json"` for json_object)                  |
| cohere (v2)                         | json_schema | `response_format: {type: json_object, json_schema}`           |
| cohere-v1                           | json_schema | `response_format: {type: json_object, schema}`                |

- `strict` is true when the schema can be made strict: a schema built from a
  type gets `additionalProperties: false` and every property required (optional
  fields then come back as null or their default), `default` dropped, `oneOf` as
  `anyOf`; a free-form `dict` field makes it non-strict. A schema dict is sent
  as given, strict only if it already is.
- A root that is not an object (`list[Item]`, `int`...) is wrapped, because
  most providers want an object: `{"items": [...]}` for arrays, `{"value": ...}`
  otherwise; `output` and every partial are unwrapped.
- Tool mode: with your own tools the model must call *some* tool
  (`tool_choice` "required"), and the turn that calls the output tool is the
  final answer (its other calls are not run). With Anthropic extended thinking
  (which allows only `tool_choice` auto), the tool is offered and the model is
  told to call it. The output tool's events reach you as `TextDelta`s of the
  JSON (so `text_stream` and `response.text` are the JSON on every provider).
- "prompt" mode reads the JSON leniently (anything before the first `{`/`[` and
  after the value is ignored: prose, code fences); the other modes strictly.

Streams: besides the usual events, `PartialOutput(value)` after each chunk that
changes what can be read (see `llmrelay.partial_json` for exactly what a partial
shows), and for `list[Item]`, `OutputItem(index, item)` once per item, validated,
when it is complete. `Stream.partial_stream` / `AsyncStream.partials` give only
the partials. At the end the whole object is validated once: `response.output`.

Failures: a refusal (OpenAI `refusal`, or a turn ended by the content filter with
no answer) raises `OutputRefusedError`; JSON that is not valid for the type
raises `OutputValidationError` (alias `StructuredOutputValidationError`) with the
raw text and the errors. `output_retries=N` asks again up to N times, sending the
errors back as a user message (a `Reset` event first: discard the partials shown;
usage counts every answer). A turn cut by `max_tokens` is not asked again.

With tools the loop runs as usual and the final turn is validated; a final turn
that still holds calls for you to run (manual mode) has `output` None. With a
fallback list, whichever model answers is validated (each in its own
mechanism); a fallback after content restarts the answer (mode "restart":
a JSON document cannot be continued by another model).
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass, replace
from typing import Any, Callable

from . import events as ev
from .errors import InvalidRequestError, OutputRefusedError, OutputValidationError
from .messages import Message, TextPart, ToolCall
from .partial_json import MISSING, PartialJSONError, PartialJSONParser
from .plan import Emit, Plan, Send, _merge, map_sends
from .protocols._base import Call
from .response import Response

__all__ = ["OutputSchema", "OutputSpec", "mode_for", "shape", "structured_plan", "MODES"]

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
}
#: Protocols that can force a call of one named tool (Ollama cannot; Cohere v1 has no tools here).
_FORCED_TOOL = frozenset({"openai_chat", "openai_responses", "anthropic", "gemini", "cohere"})

PROMPT_INSTRUCTION = (
    "Answer with a single JSON value that matches this JSON schema, and nothing else "
    "(no prose, no Markdown code fence):\n{schema}"
)
JSON_OBJECT_INSTRUCTION = "Answer in JSON: a single JSON object that matches this JSON schema:\n{schema}"
TOOL_INSTRUCTION = "Give your final answer by calling the {name} tool."
TOOL_DESCRIPTION = "Give the final answer: call this tool with the answer as its arguments."
RETRY_PROMPT = "Your answer does not match the required schema:\n{errors}\n{again}"
RETRY_AGAIN = {
    "tool": "Call the {name} tool again with arguments that fix these errors.",
    "other": "Answer again with JSON that fixes these errors.",
}

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


# -- what the encoders read ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutputSchema:
    """`Call.output`: what a protocol encoder needs to ask for structured output."""

    name: str
    #: The JSON schema (an object at the root), as portable as possible.
    schema: dict[str, Any]
    #: True when `strict_schema` exists (OpenAI strict mode).
    strict: bool = False
    strict_schema: dict[str, Any] | None = None
    description: str = ""

    def openai(self) -> tuple[dict[str, Any], bool]:
        """(schema, strict) for OpenAI's `json_schema` / strict tools."""
        if self.strict and self.strict_schema is not None:
            return self.strict_schema, True
        return self.schema, False


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
    from .tools import Tool

    user_tools = list(call.tools or [])
    if any(t.name == out.name for t in user_tools):
        raise InvalidRequestError(f"a tool is named {out.name!r}, like the output type: rename one of them")
    protocol = call.provider.protocol
    schema, strict = out.openai() if protocol in ("openai_chat", "openai_responses") else (out.schema, False)
    tool = Tool(out.name, out.description or TOOL_DESCRIPTION, schema, strict=strict)
    choice = call.tool_choice
    p = call.params
    thinking = protocol == "anthropic" and (
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


# -- the caller's type -------------------------------------------------------------------
class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(_format_errors(errors))
        self.errors = errors


def _format_errors(errors: list[dict[str, Any]]) -> str:
    lines = []
    for e in errors[:20]:
        loc = ".".join(str(x) for x in e.get("loc", ()) or ())
        lines.append(f"- {loc + ': ' if loc else ''}{e.get('msg', e)}")
    if len(errors) > 20:
        lines.append(f"- ... and {len(errors) - 20} more")
    return "\n".join(lines)


class OutputSpec:
    """The caller's `output=`: the schema to ask for, and the validators (built once per call)."""

    def __init__(self, output: Any):
        self.output = output
        self._adapter: Any = None  # pydantic TypeAdapter (a type) or None (a schema dict)
        self._item_adapter: Any = None
        self._user_schema: dict[str, Any] | None = None
        self._item_schema: Any = None
        strict_given: bool | None = None
        if isinstance(output, dict):
            schema, name, description, strict_given = _from_schema_dict(output)
            self._user_schema = schema
            root = schema
            if root.get("type") == "array":
                self._item_schema = root.get("items") if isinstance(root.get("items"), dict) else {}
        else:
            schema, name, description = self._from_type(output)
            root = schema
        self.wrap: str | None = None
        if root.get("type") != "object":
            self.wrap = "items" if root.get("type") == "array" else "value"
            schema = _wrap(schema, self.wrap)
        #: Where the streamed items are (None: not a list output).
        self.items_path: tuple[str, ...] | None = ("items",) if self.wrap == "items" else None
        if self._user_schema is not None:
            strict_schema = schema if strict_given is not False and _strict_copy(schema, fix=False) is not None else None
        else:
            strict_schema = _strict_copy(schema, fix=True)
        self.schema = schema
        self.name = name
        self.wire = OutputSchema(name, schema, strict_schema is not None, strict_schema, description)

    @classmethod
    def of(cls, output: Any) -> OutputSpec:
        return output if isinstance(output, OutputSpec) else cls(output)

    def _from_type(self, tp: Any) -> tuple[dict[str, Any], str, str]:
        try:
            from pydantic import TypeAdapter

            from .tools import _tidy_schema

            self._adapter = TypeAdapter(tp)
            schema = _root_inlined(_tidy_schema(self._adapter.json_schema()))
        except Exception as exc:
            raise InvalidRequestError(f"output={tp!r}: cannot build a JSON schema for it: {exc}") from None
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        item: Any = None
        if origin in (list, set, frozenset) and len(args) == 1:
            item = args[0]
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        if item is not None:
            from pydantic import TypeAdapter

            self._item_adapter = TypeAdapter(item)
        elif schema.get("type") == "array":  # e.g. a fixed tuple: items checked against their schema
            self._item_schema = schema.get("items") if isinstance(schema.get("items"), dict) else None
        if isinstance(tp, type):
            name = tp.__name__
        elif item is not None and isinstance(item, type):
            name = f"{item.__name__}_list"
        else:
            name = "output"
        description = schema.get("description") if isinstance(schema.get("description"), str) else ""
        return schema, _NAME_CHARS.sub("_", name)[:64] or "output", description or ""

    # -- reading answers ------------------------------------------------------------------
    def view(self, snapshot: Any) -> Any:
        """A partial snapshot as the caller sees it (unwrapped)."""
        if self.wrap is None or snapshot is MISSING:
            return snapshot
        if isinstance(snapshot, dict):
            return snapshot.get(self.wrap, MISSING)
        return snapshot  # a bare array/value where a wrapper was asked for: taken as it is

    def _unwrap(self, value: Any) -> Any:
        if self.wrap is not None and isinstance(value, dict) and self.wrap in value and (
            len(value) == 1 or self._user_schema is None
        ):
            return value[self.wrap]
        return value

    def validate(self, raw: str, *, lenient: bool = False) -> Any:
        """The answer's JSON text -> the validated object; raises `_Invalid`."""
        value = _load(raw, lenient)
        value = self._unwrap(value)
        if self._adapter is not None:
            return self._pydantic(self._adapter, value)
        from .tools import schema_errors

        problems = schema_errors(value, self._user_schema)
        if problems:
            raise _Invalid([{"type": "schema", "loc": (), "msg": p} for p in problems])
        return value

    def validate_item(self, value: Any) -> Any:
        if self._item_adapter is not None:
            return self._pydantic(self._item_adapter, value)
        if self._item_schema is not None:
            from .tools import schema_errors

            problems = schema_errors(value, self._item_schema)
            if problems:
                raise _Invalid([{"type": "schema", "loc": (), "msg": p} for p in problems])
        return value

    @staticmethod
    def _pydantic(adapter: Any, value: Any) -> Any:
        from pydantic import ValidationError

        try:
            # JSON mode, as the provider's JSON would be read (strict models accept ISO dates...)
            return adapter.validate_json(json.dumps(value, ensure_ascii=False))
        except ValidationError as exc:
            raise _Invalid([dict(e) for e in exc.errors(include_url=False)]) from None


def _from_schema_dict(output: dict[str, Any]) -> tuple[dict[str, Any], str, str, bool | None]:
    """A JSON schema, or the OpenAI `{"name", "schema", "strict"?, "description"?}` shape
    (also inside `{"type": "json_schema", "json_schema": {...}}`)."""
    if output.get("type") == "json_schema" and isinstance(output.get("json_schema"), dict):
        output = output["json_schema"]
    strict: bool | None = None
    if isinstance(output.get("schema"), dict) and "properties" not in output:
        schema = output["schema"]
        name = output.get("name") or schema.get("title") or "output"
        description = output.get("description") or ""
        if isinstance(output.get("strict"), bool):
            strict = output["strict"]
    else:
        schema = output
        name = schema.get("title") or "output"
        description = schema.get("description") if isinstance(schema.get("description"), str) else ""
    if not isinstance(name, str):
        name = "output"
    return schema, _NAME_CHARS.sub("_", name)[:64] or "output", description or "", strict


def _root_inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A recursive model's schema is `{"$ref": "#/$defs/X", "$defs": ...}`: the root becomes X
    itself (its inner `$ref`s still resolve), so an object stays an object."""
    ref, defs = schema.get("$ref"), schema.get("$defs")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and isinstance(defs, dict) and len(schema) == 2:
        target = defs.get(ref[len("#/$defs/"):])
        if isinstance(target, dict) and "$ref" not in target:
            return {**target, "$defs": defs}
    return schema


def _wrap(schema: dict[str, Any], key: str) -> dict[str, Any]:
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    out: dict[str, Any] = {"type": "object", "properties": {key: inner}, "required": [key], "additionalProperties": False}
    if "$defs" in schema:
        out["$defs"] = schema["$defs"]
    return out


class _NotStrict(Exception):
    pass


_NOT_STRICT_KEYS = frozenset({"patternProperties", "if", "then", "else", "not", "dependentRequired",
                              "dependentSchemas", "unevaluatedProperties", "propertyNames"})
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _strict_copy(schema: dict[str, Any], *, fix: bool) -> dict[str, Any] | None:
    """The schema in OpenAI's strict form (every object closed, every property required), or
    None when it cannot be. `fix=False`: only check (a caller's schema is sent as given)."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if _NOT_STRICT_KEYS & node.keys():
            raise _NotStrict
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: walk(sub) for name, sub in v.items()}
            elif k == "$defs" and isinstance(v, dict):
                out[k] = {name: walk(sub) for name, sub in v.items()}
            elif k in _SUBSCHEMA_LISTS or k in ("items", "additionalProperties"):
                out[k] = walk(v)
            elif k == "default" or k == "discriminator":
                if not fix:
                    raise _NotStrict
            else:
                out[k] = v
        if fix and "oneOf" in out:
            out["anyOf"] = out.pop("oneOf")
        kind = out.get("type")
        is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in out
        if is_object:
            props = out.get("properties")
            extra = out.get("additionalProperties")
            if not isinstance(props, dict) or (extra is not None and extra is not False):
                raise _NotStrict  # a free-form dict
            if fix:
                out["additionalProperties"] = False
                out["required"] = list(props)
            elif extra is not False or sorted(out.get("required") or []) != sorted(props):
                raise _NotStrict
        return out

    try:
        return walk(schema)
    except (_NotStrict, RecursionError):
        return None


def _load(raw: str, lenient: bool) -> Any:
    """JSON text -> value; lenient: the first JSON object/array in the text, the rest ignored."""
    try:
        if not lenient:
            return json.loads(raw)
        m = re.search(r"[\[{]", raw)
        if m is None:
            raise ValueError("no JSON object or array in the answer")
        value, _ = json.JSONDecoder().raw_decode(raw, m.start())
        return value
    except ValueError as exc:  # json.JSONDecodeError is one
        msg = "the answer is empty" if not raw.strip() else f"the answer is not valid JSON: {exc}"
        raise _Invalid([{"type": "json_invalid", "loc": (), "msg": msg}]) from None


# -- per model turn: deltas -> partials -------------------------------------------------
class _ChoiceState:
    __slots__ = ("parser", "failed")

    def __init__(self, parser: PartialJSONParser):
        self.parser = parser
        self.failed = False


class _Watcher:
    """The observer of one model turn: turns the answer's JSON deltas (text, or the output
    tool's arguments) into `PartialOutput` / `OutputItem` events after the delta."""

    __slots__ = ("spec", "mode", "lenient", "states", "tool_index", "name")

    def __init__(self, spec: OutputSpec, mode: str):
        self.spec = spec
        self.mode = mode
        self.lenient = mode == "prompt"
        self.states: dict[int, _ChoiceState] = {}
        self.tool_index: dict[int, int] = {}  # choice -> index of the output tool call
        self.name = spec.name

    def __call__(self, e: Any) -> Any:
        t = type(e)
        if t is ev.TextDelta:
            if self.mode == "tool":
                return e
            return self._feed(e.choice, e.text, e)
        if self.mode == "tool":
            if t is ev.ToolCallDelta:
                if self.tool_index.get(e.choice) == e.index:
                    return self._feed(e.choice, e.arguments, ev.TextDelta(e.arguments, e.choice))
            elif t is ev.ToolCallStart:
                if e.name == self.name and e.choice not in self.tool_index:
                    self.tool_index[e.choice] = e.index
                    return None
            elif t is ev.ToolCallEnd:
                if self.tool_index.get(e.choice) == e.index:
                    return None
        return e

    def _feed(self, choice: int, text: str, event: Any) -> Any:
        state = self.states.get(choice)
        if state is None:
            spec = self.spec
            state = self.states[choice] = _ChoiceState(
                PartialJSONParser(lenient=self.lenient, watch=spec.items_path, watch_root_array=spec.items_path is not None))
        if state.failed:
            return event
        parser = state.parser
        try:
            changed = parser.feed(text)
        except PartialJSONError:
            state.failed = True  # not JSON: no more partials; the end says why
            return event
        out: list[Any] | None = None
        if changed:
            value = self.spec.view(parser.snapshot())
            if value is not MISSING:
                out = [event, ev.PartialOutput(value, choice)]
        if parser.items:
            if out is None:
                out = [event]
            for index, item in parser.items:
                try:
                    out.append(ev.OutputItem(index, self.spec.validate_item(item), choice))
                except _Invalid:
                    pass  # an invalid item is never reported; the final validation says why
            parser.items.clear()
        return out if out is not None else event


# -- the plan ----------------------------------------------------------------------------
class _Turns:
    """Drives one inner plan (a whole answer: the tool loop, fallback, retries), watching each
    model turn and folding the output tool's call into text before the inner plan sees it."""

    def __init__(self, spec: OutputSpec, wire: OutputSchema, partials: bool):
        self.spec = spec
        self.wire = wire
        self.partials = partials
        self.mode = "json_schema"
        self.raw: str | None = None  # the output tool's arguments, in tool mode

    def drive(self, plan: Plan) -> Plan:
        return (yield from map_sends(plan, self._send))

    def _send(self, action: Send) -> Plan:
        call = action.call
        if call.output is None:  # a fallback target, built without it
            call.output = self.wire
        self.mode = mode_for(call)
        self.raw = None
        observers = action.observers
        if self.partials:
            observers = (*observers, _Watcher(self.spec, self.mode))
        response = yield Send(call, observers)
        return self._fold(response)

    def _fold(self, response: Response) -> Response:
        """Tool mode: the output tool's call becomes the answer's text (so the tool loop ends
        here, and the transcript reads as an answer); the turn's other calls are dropped."""
        if self.mode != "tool":
            return response
        name = self.spec.name
        for choice in response.choices:
            parts = choice.parts
            call = next((p for p in parts if isinstance(p, ToolCall) and p.name == name), None)
            if call is None:
                continue
            if choice.index == 0:
                self.raw = call.raw_arguments
            folded: list[Any] = []
            for p in parts:
                if p is call:
                    folded.append(TextPart(call.raw_arguments))
                elif not isinstance(p, ToolCall):
                    folded.append(p)
            choice.parts = folded
            if choice.finish_reason == "tool_calls":
                choice.finish_reason = "stop"
        return response


def structured_plan(
    call: Call,
    make_plan: Callable[[Call], Plan],
    spec: OutputSpec,
    *,
    retries: int = 0,
    partials: bool = True,
) -> Plan:
    """The answer (`make_plan(call)`: single turn or tool loop, through the middleware), validated
    at the end; asks again up to `retries` times with the validation errors. See the module docstring.
    `partials=False` (for `complete`) skips the per-chunk partial parsing."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidRequestError(f"output_retries must be a non-negative integer, got {retries!r}")
    return _structured(call, make_plan, spec, retries, partials)


def _structured(call: Call, make_plan: Callable[[Call], Plan], spec: OutputSpec, retries: int, partials: bool) -> Plan:
    wire = call.output if call.output is not None else spec.wire
    answers: list[Response] = []
    current = call
    while True:
        turns = _Turns(spec, wire, partials)
        response = yield from turns.drive(make_plan(current))
        answers.append(response)
        if any(isinstance(p, ToolCall) for p in response.parts):
            # calls for the caller to run (manual mode, schema-only tools) or cut by max_tokens: no answer yet
            return _combined(answers)
        if response.refusal:
            raise OutputRefusedError(response.refusal, response=_combined(answers))
        from_tool = turns.raw is not None
        raw = turns.raw if from_tool else response.text
        if response.finish_reason == "content_filter" and not raw.strip():
            raise OutputRefusedError("", response=_combined(answers), reason="content_filter")
        lenient = turns.mode == "prompt" or (turns.mode == "tool" and not from_tool)
        try:
            value = spec.validate(raw, lenient=lenient)
        except _Invalid as invalid:
            if len(answers) > retries or response.finish_reason == "length":
                why = " (cut by max_tokens)" if response.finish_reason == "length" else ""
                raise OutputValidationError(
                    f"the answer is not a valid {spec.name}{why}"
                    + (f" after {len(answers)} attempts" if len(answers) > 1 else "") + ":\n" + str(invalid),
                    raw=raw, errors=invalid.errors, response=_combined(answers), attempts=len(answers),
                ) from None
            yield Emit(ev.Reset(response.text))
            again = RETRY_AGAIN["tool" if from_tool else "other"].format(name=spec.name)
            transcript = response.messages if response.messages is not None else [*current.messages, response.to_message()]
            current = replace(call, messages=[*transcript, Message.user(RETRY_PROMPT.format(errors=invalid, again=again))])
            continue
        final = _combined(answers)
        final.output = value
        return final


def _combined(answers: list[Response]) -> Response:
    """One response for every answer asked: the last one, usage summed over every request."""
    if len(answers) == 1:
        return answers[0]
    turns = [t for r in answers for t in (r.turns or [r])]
    return _merge(turns, answers[-1].messages or [])

