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
from dataclasses import replace
from typing import Any, Callable

from . import events as ev
from .errors import InvalidRequestError, OutputRefusedError, OutputValidationError
from .messages import Message, TextPart, ToolCall
from .partial_json import MISSING, PartialJSONError, PartialJSONParser
from .outputspec import OutputSchema, OutputSpec, _Invalid
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
RETRY_PROMPT = "Your answer does not match the required schema:\n{errors}\n{again}"
RETRY_AGAIN = {
    "tool": "Call the {name} tool again with arguments that fix these errors.",
    "other": "Answer again with JSON that fixes these errors.",
}

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

