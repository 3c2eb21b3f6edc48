"""One assembler for every protocol: folds typed events into a `Response`.

Text pieces are compacted into blocks every 8 pieces: O(n) time, and
memory that tracks the text itself (a plain list of small `str` pieces costs
~60 bytes per chunk whatever the text; `io.StringIO` keeps the pieces alive too),
also for the thousands of short answers a server has in flight (bench/bench_scale.py). Parts keep their order and
their opaque signatures: a signature (or redacted data) closes the current
part, so the next delta starts a new one, exactly as providers expect it back.
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..messages import ReasoningPart, TextPart, ToolCall
from ..response import Choice, Response
from ..usage import Usage

_TEXT, _REASONING, _TOOL = 0, 1, 2


class _PartBuilder:
    """One part of a choice. A text or reasoning part is its own append-only string builder, whose
    memory is the characters, not the pieces (no builder object and bound method per stream in
    flight): one list holds the compacted blocks (the first `done` items), then the pieces not yet
    compacted. A tool part keeps its argument fragments in `pieces`."""

    __slots__ = ("kind", "pieces", "done", "signature", "redacted", "tool")

    def __init__(self, kind: int):
        self.kind = kind
        self.pieces: list[str] = []
        self.done = 0  # items of `pieces` that are compacted blocks (one list per part, not two)
        self.signature: str | None = None
        self.redacted: str | None = None
        self.tool: dict[str, Any] | None = None

    def write(self, s: str) -> None:
        pieces = self.pieces
        pieces.append(s)
        done = self.done
        if len(pieces) - done >= 8:
            pieces[done:] = ["".join(pieces[done:])]
            self.done = done + 1

    def getvalue(self) -> str:
        pieces = self.pieces
        if len(pieces) > 1:
            text = "".join(pieces)
            pieces[:] = [text]  # keep one copy, not the blocks plus the joined text
            self.done = 1
            return text
        return pieces[0] if pieces else ""


class _ChoiceBuilder:
    __slots__ = ("_parts", "current", "tools", "refusal", "finish_reason", "raw_finish_reason")

    def __init__(self) -> None:
        self._parts: list[_PartBuilder] | None = None  # made when a second part opens (most answers have one)
        self.current: _PartBuilder | None = None  # the last part opened
        self.tools: dict[int, _PartBuilder] | None = None  # by tool-call index, once a call starts
        self.refusal: list[str] | None = None
        self.finish_reason: str | None = None
        self.raw_finish_reason: str | None = None

    @property
    def parts(self) -> list[_PartBuilder]:
        """Every part, in order."""
        if self._parts is not None:
            return self._parts
        return [self.current] if self.current is not None else []

    def open(self, kind: int) -> _PartBuilder:
        part = _PartBuilder(kind)
        if self.current is not None:
            if self._parts is None:
                self._parts = [self.current]
            self._parts.append(part)
        self.current = part
        return part


class Assembler(_ChoiceBuilder):
    """Per stream in flight: choice 0 is the assembler itself (no builder object of its own);
    other choices, tool calls and provider events in containers made when first needed (a small
    dict keyed by ints costs 224 bytes)."""

    __slots__ = ("_more", "_usage", "id", "model", "provider_events")

    def __init__(self) -> None:
        super().__init__()
        self._more: dict[int, _ChoiceBuilder] | None = None  # choices other than 0 (n > 1)
        self._usage: Usage | None = None  # made when read or when the usage arrives (at the end)
        self.id: str | None = None
        self.model: str | None = None
        self.provider_events: list[Any] | None = None

    @property
    def usage(self) -> Usage:
        """The usage reported so far (one object, updated in place)."""
        if self._usage is None:
            self._usage = Usage()
        return self._usage

    def add(self, event: Any) -> None:
        _HANDLERS[type(event)](self, event)

    @staticmethod
    def _bad(e: Any, field: str) -> TypeError:
        return TypeError(f"{type(e).__name__}.{field} must be a string, got {type(getattr(e, field)).__name__}")

    # -- handlers -----------------------------------------------------------
    def _choice(self, index: int) -> _ChoiceBuilder:
        if index == 0:
            return self
        more = self._more
        if more is None:
            more = self._more = {}
        cb = more.get(index)
        if cb is None:
            cb = more[index] = _ChoiceBuilder()
        return cb

    def _text(self, e: ev.TextDelta) -> None:
        if type(e.text) is not str:
            raise self._bad(e, "text")
        cb = self if e.choice == 0 else self._choice(e.choice)
        cur = cb.current
        if cur is None or cur.kind != _TEXT or cur.signature is not None:
            cur = cb.open(_TEXT)
        cur.write(e.text)
        if e.signature is not None:
            cur.signature = e.signature

    def _reasoning(self, e: ev.ReasoningDelta) -> None:
        if type(e.text) is not str:
            raise self._bad(e, "text")
        cb = self._choice(e.choice)
        cur = cb.current
        if (
            cur is None
            or cur.kind != _REASONING
            or cur.signature is not None
            or cur.redacted is not None
            or e.redacted is not None
        ):
            cur = cb.open(_REASONING)
        if e.text:
            cur.write(e.text)
        if e.signature is not None:
            cur.signature = e.signature
        if e.redacted is not None:
            cur.redacted = e.redacted

    def _refusal(self, e: ev.RefusalDelta) -> None:
        if type(e.text) is not str:
            raise self._bad(e, "text")
        cb = self._choice(e.choice)
        if cb.refusal is None:
            cb.refusal = []
        cb.refusal.append(e.text)

    def _tool_start(self, e: ev.ToolCallStart) -> None:
        cb = self._choice(e.choice)
        part = cb.open(_TOOL)
        part.tool = {"id": e.id, "name": e.name, "signature": e.signature, "end": None}
        if cb.tools is None:
            cb.tools = {}
        cb.tools[e.index] = part

    def _tool_delta(self, e: ev.ToolCallDelta) -> None:
        if type(e.arguments) is not str:
            raise self._bad(e, "arguments")
        cb = self._choice(e.choice)
        part = cb.tools.get(e.index) if cb.tools is not None else None
        if part is None:  # a delta with no start: keep it rather than drop it
            self._tool_start(ev.ToolCallStart(e.index, None, "", e.choice))
            part = cb.tools[e.index]  # type: ignore[index]  # made by _tool_start
        part.pieces.append(e.arguments)

    def _tool_end(self, e: ev.ToolCallEnd) -> None:
        cb = self._choice(e.choice)
        part = cb.tools.get(e.index) if cb.tools is not None else None
        if part is None:
            self._tool_start(ev.ToolCallStart(e.index, e.id, e.name, e.choice, e.signature))
            part = cb.tools[e.index]  # type: ignore[index]  # made by _tool_start
        assert part.tool is not None
        part.tool["end"] = e

    def _usage_event(self, e: ev.UsageEvent) -> None:
        self.usage.merge(e.usage)

    def _finish(self, e: ev.Finish) -> None:
        cb = self._choice(e.choice)
        cb.finish_reason = e.reason
        cb.raw_finish_reason = e.raw_reason

    def _start(self, e: ev.StreamStart) -> None:
        if e.id and not self.id:
            self.id = e.id
        if e.model:
            self.model = e.model

    def _provider(self, e: ev.ProviderEvent) -> None:
        if self.provider_events is None:
            self.provider_events = []
        self.provider_events.append(e)

    # -- output -------------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(p.getvalue() for p in self.parts if p.kind == _TEXT)

    def open_tool_calls(self) -> bool:
        tools = self.tools
        return tools is not None and any(p.tool is not None and p.tool["end"] is None for p in tools.values())

    def build(self, response: Response | None = None) -> Response:
        """A fresh `Response` from everything folded so far (safe to call mid-stream)."""
        r = response if response is not None else Response()
        r.id = self.id
        r.model = self.model or r.model
        r.usage = Usage()
        if self._usage is not None:
            r.usage.merge(self._usage)
        r.provider_events = list(self.provider_events or ())
        choices: dict[int, _ChoiceBuilder] = {0: self, **self._more} if self._more else {0: self}
        r.choices = [self._build_choice(i, choices[i]) for i in sorted(choices)]
        return r

    @staticmethod
    def _build_choice(index: int, cb: _ChoiceBuilder) -> Choice:
        parts: list[Any] = []
        for p in cb.parts:
            if p.kind == _TEXT:
                parts.append(TextPart(p.getvalue(), p.signature))
            elif p.kind == _REASONING:
                parts.append(ReasoningPart(p.getvalue(), p.signature, p.redacted))
            else:
                assert p.tool is not None
                end: ev.ToolCallEnd | None = p.tool["end"]
                raw = "".join(p.pieces)
                if end is not None:
                    parts.append(
                        ToolCall(
                            id=end.id or p.tool["id"],
                            name=end.name or p.tool["name"],
                            arguments=end.arguments,
                            raw_arguments=end.raw_arguments,
                            error=end.error,
                            signature=end.signature or p.tool["signature"],
                        )
                    )
                else:
                    parts.append(
                        ToolCall(
                            id=p.tool["id"],
                            name=p.tool["name"],
                            arguments=None,
                            raw_arguments=raw,
                            error="incomplete: the stream ended before this tool call finished",
                            signature=p.tool["signature"],
                        )
                    )
        return Choice(
            index=index,
            parts=parts,
            refusal="".join(cb.refusal) if cb.refusal is not None else None,
            finish_reason=cb.finish_reason,
            raw_finish_reason=cb.raw_finish_reason,
        )


_HANDLERS: dict[type, Any] = {  # one table for every assembler (not bound methods per stream)
    ev.TextDelta: Assembler._text,
    ev.ReasoningDelta: Assembler._reasoning,
    ev.RefusalDelta: Assembler._refusal,
    ev.ToolCallStart: Assembler._tool_start,
    ev.ToolCallDelta: Assembler._tool_delta,
    ev.ToolCallEnd: Assembler._tool_end,
    ev.UsageEvent: Assembler._usage_event,
    ev.Finish: Assembler._finish,
    ev.StreamStart: Assembler._start,
    ev.ProviderEvent: Assembler._provider,
}
