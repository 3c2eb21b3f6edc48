"""Fallback across models, before and after content has been shown, and cascades.

`model=["anthropic:claude-…", "openai:gpt-…"]` (or `Router([...], mode=...)`)
anywhere a model is accepted. Each model turn goes to the first model; when it
fails (status error, cut connection, in-band error, timeout, malformed chunk,
missing API key…) the next one answers:

- Before any content reached the caller: the next model simply answers
  (a `FallbackEvent` with mode "fresh" says so).
- After content was shown, `mode` decides (default "prefill"):
  - "prefill": the original messages plus an assistant message holding the
    text shown so far (trailing whitespace trimmed, as providers require), sent
    only to providers that continue a prefilled assistant turn; elsewhere it
    becomes "user_turn" and the `FallbackEvent` says so. The caller sees the
    continuation only, never the text again.
  - "user_turn": original messages + assistant(partial) + user(`resume_prompt`).
  - "restart": the next model answers from the start; a `Reset` event comes
    first so the caller can discard what it showed. `text_stream` cannot carry
    a reset, so in this mode it raises `StreamResetError` instead of repeating text.
  - "none" (what a cascade alias uses): fail over only before first content;
    after it, the error is raised as is.

The final response says which model answered (`provider`, `model`), every
attempt and why it failed (`attempts`), and whether it resumed from partial
text (`resumed`). If every model fails: `AllModelsFailedError`, an exception
group holding each attempt's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from ..errors import AllModelsFailedError, APIError, InvalidRequestError, LLMRelayError
from ..events import FallbackEvent, Reset, TextDelta
from ..messages import Message, TextPart
from .middleware import Middleware, SendFn
from ..engine.plan import Emit, Plan
from ..call import Call
from ..response import Attempt, Response
from .retry import content_shown

MODES = ("prefill", "user_turn", "restart", "none")
DEFAULT_RESUME_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "without repeating anything and without any preamble."
)


@dataclass
class Router:
    """An ordered list of models to fall back through. See the module docstring for `mode`."""

    models: Sequence[str]
    mode: str = "prefill"
    resume_prompt: str = DEFAULT_RESUME_PROMPT
    #: Errors that move to the next model (anything else is raised at once).
    fallback_on: tuple[type[BaseException], ...] = field(default=(LLMRelayError,))

    def __post_init__(self) -> None:
        if isinstance(self.models, str) or not self.models:
            raise InvalidRequestError("model: a fallback list needs at least one model string")
        self.models = list(self.models)
        if self.mode not in MODES:
            raise InvalidRequestError(f"fallback_mode must be one of {', '.join(MODES)}; got {self.mode!r}")


def model_label(call: Call) -> str:
    return f"{call.provider.name}:{call.model}"


class FallbackMiddleware(Middleware):
    """The `Router` at work for one stream: `retarget(call, model)` builds the call for another model."""

    def __init__(self, router: Router, retarget: Callable[[Call, str], Call], skipped: Sequence[Attempt] = ()):
        self.router = router
        self.retarget = retarget
        self.skipped = list(skipped)  # models that could not even be prepared (e.g. no API key)

    def turn(self, call: Call, send: SendFn) -> Plan:
        router = self.router
        attempts = list(self.skipped)
        errors: list[BaseException] = [a.error for a in attempts if a.error is not None]
        start = len(attempts)
        shown = ""  # answer text the caller has seen, across failed attempts
        seen_content = False
        previous: tuple[str, BaseException] | None = None
        for i, skipped in enumerate(attempts):  # models that could not be prepared (no API key...)
            to = attempts[i + 1].model if i + 1 < len(attempts) else model_label(call)
            assert skipped.error is not None  # a skipped model always has its reason
            yield Emit(FallbackEvent(skipped.model, to, skipped.error, "fresh"))
        for index in range(start, len(router.models)):
            model = router.models[index]
            try:
                target = call if index == start else self.retarget(call, model)
            except router.fallback_on as error:
                if previous is not None:
                    yield Emit(FallbackEvent(previous[0], model, previous[1], router.mode if seen_content else "fresh"))
                attempts.append(Attempt(model, None, error))
                errors.append(error)
                previous = (model, error)
                continue
            mode = "fresh"
            note = None
            if seen_content:
                mode = router.mode
                if mode == "prefill" and not target.provider.supports_prefill:
                    mode, note = "user_turn", f"{target.provider.name} cannot continue a prefilled answer"
                target = _continue(target, call, mode, shown, router.resume_prompt)
            if previous is not None:
                yield Emit(FallbackEvent(previous[0], model_label(target), previous[1], mode, note))
            if mode == "restart":
                yield Emit(Reset(shown))
                shown = ""
            observer = _trim_leading(shown) if mode in ("prefill", "user_turn") and shown[-1:].isspace() else None
            try:
                response = yield from send(target, on_event=observer)
            except router.fallback_on as error:
                attempts.extend(getattr(error, "retried", ()))  # this model's retries that failed first
                attempts.append(Attempt(model_label(target), getattr(error, "partial", None), error))
                errors.append(error)
                if isinstance(error, APIError) and content_shown(error):
                    if router.mode == "none":
                        raise
                    seen_content = True
                    text = error.partial.text if error.partial is not None else ""
                    shown += text.lstrip() if observer is not None else text  # the caller never saw that whitespace
                previous = (model_label(target), error)
                continue
            if mode in ("prefill", "user_turn") and shown:
                _stitch(response, shown)
                response.resumed = True
            # retries of this model that failed first (recorded by `Retry`), then the answer
            attempts.extend(response.attempts or [Attempt(model_label(target), response, None)])
            response.attempts = attempts
            return response
        raise AllModelsFailedError(
            f"all {len(router.models)} models failed: "
            + "; ".join(f"{a.model}: {type(a.error).__name__}" for a in attempts),
            errors,
            attempts=attempts,
        )


def _continue(target: Call, original: Call, mode: str, shown: str, resume_prompt: str) -> Call:
    if mode == "restart" or not shown:
        return target
    messages = [*original.messages, Message.assistant(shown.rstrip() if mode == "prefill" else shown)]
    if mode == "user_turn":
        messages.append(Message.user(resume_prompt))
    return replace(target, messages=messages)


def _trim_leading(shown: str) -> Callable[[Any], Any]:
    """The caller saw trailing whitespace the prefill dropped: drop the continuation's leading whitespace."""
    state = {"done": False}

    def observer(event: Any) -> Any:
        if state["done"] or type(event) is not TextDelta:
            return event
        text = event.text.lstrip()
        if not text:
            return None
        state["done"] = True
        return replace(event, text=text)

    return observer


def _stitch(response: Response, shown: str) -> None:
    """The final text is what the caller saw plus the continuation, exactly as streamed."""
    parts = response.choices[0].parts
    for i, part in enumerate(parts):
        if isinstance(part, TextPart):
            text = part.text.lstrip() if shown[-1:].isspace() else part.text
            parts[i] = replace(part, text=shown + text)
            return
    parts.insert(0, TextPart(shown))

