"""Structured output inside a stream: the plan that watches the answer for partial objects,
validates it once at the end and asks again with the errors (`output_retries`).
See `llmrelay.structured` for the whole feature."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from .. import events as ev
from ..errors import InvalidRequestError, OutputRefusedError, OutputValidationError
from ..messages import Message, TextPart, ToolCall
from .partial_json import MISSING, PartialJSONError, PartialJSONParser
from .spec import OutputSchema, OutputSpec, _Invalid
from ..engine.plan import Emit, Plan, Send, _merge, map_sends
from ..call import Call
from ..protocols.output import mode_for
from ..response import Response

__all__ = ["structured_plan"]

RETRY_PROMPT = "Your answer does not match the required schema:\n{errors}\n{again}"
RETRY_AGAIN = {
    "tool": "Call the {name} tool again with arguments that fix these errors.",
    "other": "Answer again with JSON that fixes these errors.",
}


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
        raw = turns.raw if turns.raw is not None else response.choice.text  # the answering turn, not text before tools
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
            transcript = response.messages if response.messages else [*current.messages, response.to_message()]
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
    final = _merge(turns, answers[-1].messages or [])
    final._text, final._reasoning = answers[-1].text, answers[-1].reasoning  # the rejected answers were reset
    return final

