"""The exception tree. Names follow the openai SDK so `except RateLimitError` reads as users expect.

Every error raised once a stream has started carries `partial`: the `Response`
assembled so far (text, reasoning, tool calls, usage). Nothing received is lost.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .response import Response
    from .usage import Usage


class LLMRelayError(Exception):
    """Base of every error llmrelay raises."""


class InvalidRequestError(LLMRelayError, ValueError):
    """The call itself is malformed (bad message, bad parameter value). Names what was wrong."""


class MissingAPIKeyError(LLMRelayError):
    def __init__(self, provider: str, env_vars: tuple[str, ...]):
        self.provider = provider
        self.env_vars = env_vars
        if env_vars:
            where = " or ".join(env_vars)
            hint = f"set the {where} environment variable"
            if len(env_vars) > 1:
                hint = f"set one of the environment variables {', '.join(env_vars)}"
        else:
            hint = "configure it on the provider profile"
        super().__init__(
            f"No API key found for provider {provider!r}: pass api_key=... (or "
            f"Client(api_keys={{{provider!r}: ...}})) or {hint}."
        )


class UnknownProviderError(LLMRelayError, ValueError):
    """`.known`: every provider name; `.candidates`: those that serve such a model id (a bare id)."""

    def __init__(self, model: str, known: list[str], reason: str | None = None, candidates: list[str] | None = None):
        self.model = model
        self.known = known
        self.candidates = candidates or []
        msg = reason or f"Unknown provider in model {model!r}"
        super().__init__(
            f"{msg}. Use 'provider:model'. Known providers: {', '.join(sorted(known))}."
        )


class UnsupportedParameterError(LLMRelayError, ValueError):
    def __init__(self, provider: str, parameter: str, hint: str = ""):
        self.provider = provider
        self.parameter = parameter
        super().__init__(
            f"Parameter {parameter!r} is not supported by provider {provider!r}."
            + (f" {hint}" if hint else "")
        )


class APIError(LLMRelayError):
    """An error talking to a provider. Carries the partial response if the stream had started."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        partial: Response | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.request_id = request_id
        self.body = body
        #: What arrived before the error (text, reasoning, tool calls, usage): every error a
        #: stream raises carries it, even one before any content (then it is empty). Typed as
        #: present; only an error built by hand outside a stream has None here.
        self.partial: Response[Any] = partial  # type: ignore[assignment]
        #: With `Retry`: the earlier attempts of the same request that failed (`Attempt`s).
        self.retried: list[Any] = []

    @property
    def partial_text(self) -> str:
        return self.partial.text if self.partial is not None else ""

    @property
    def usage(self) -> Usage | None:
        return self.partial.usage if self.partial is not None else None


class APIConnectionError(APIError):
    """The connection failed or broke."""


class APITimeoutError(APIConnectionError):
    """A timeout: `kind` is connect, first_byte, idle or total."""

    def __init__(self, message: str, *, kind: str = "total", **kw: Any):
        super().__init__(message, **kw)
        self.kind = kind


Timeout = APITimeoutError


class StreamInterruptedError(APIConnectionError):
    """The stream was cut (or ended) before its final event. `partial` holds what arrived."""


class UnexpectedResponseError(StreamInterruptedError):
    """An HTTP 200 whose body is not the stream asked for (an HTML page, a plain JSON completion,
    an empty body). `content_type` and `body` (its first bytes, secrets redacted) say what came
    instead. A kind of `StreamInterruptedError` (no stream came), so it is retried and falls back
    like a 5xx."""

    def __init__(self, message: str, *, status_code: int = 200, content_type: str | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.status_code = status_code
        self.content_type = content_type


class ProviderStreamError(APIError):
    """An error event inside an HTTP 200 stream. `code`/`status` come from the payload."""

    def __init__(self, message: str, *, code: str | int | None = None, status: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.code = code
        self.status_code = status


class MalformedChunkError(ProviderStreamError):
    """A chunk in the stream could not be decoded (not JSON, not the expected shape)."""


class APIStatusError(APIError):
    status_code: int = 0

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.status_code = status_code
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    pass


class ContextWindowExceededError(BadRequestError):
    pass


class ContentPolicyViolationError(BadRequestError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class RequestTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class ServiceUnavailableError(InternalServerError):
    pass


class OverloadedError(InternalServerError):
    pass


class ResponseTooLargeError(APIError):
    """The response went past one of the client's `Limits` (`limit`: "max_line", "max_body" or
    "max_error_body"; `size`: the limit in bytes). The connection is dropped; `partial` keeps what arrived."""

    def __init__(self, message: str, *, limit: str = "max_body", size: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.limit = limit
        self.size = size


class StreamResetError(APIError):
    """`text_stream` met a fallback `Reset` (mode "restart"): the answer starts again on another model."""

    def __init__(self, message: str, *, discarded_text: str = "", **kw: Any):
        super().__init__(message, **kw)
        self.discarded_text = discarded_text


class AllModelsFailedError(ExceptionGroup, LLMRelayError):
    """Every model of a fallback list failed. `.exceptions` holds each attempt's error, in order;
    `.attempts` the attempts (model, partial response, error)."""

    attempts: list[Any]

    def __new__(cls, message: str, exceptions: Any, *, attempts: Any = None) -> AllModelsFailedError:
        self = super().__new__(cls, message, list(exceptions))
        self.attempts = list(attempts or [])
        return self

    def __init__(self, message: str, exceptions: Any, *, attempts: Any = None):
        super().__init__(message, list(exceptions))

    def derive(self, excs: Any) -> AllModelsFailedError:  # type: ignore[override]
        return AllModelsFailedError(self.message, excs, attempts=self.attempts)


class LengthFinishReasonError(LLMRelayError):
    """The answer was cut by the output limit, for callers who ask to raise (`on_length="raise"`).
    `.response` is the truncated response (text, usage, cost)."""

    def __init__(self, message: str, *, response: Any = None):
        super().__init__(message)
        self.response = response


class IncompleteToolCallError(LengthFinishReasonError):
    """A tool call was cut by the output limit (its arguments are not valid JSON), with `on_length="raise"`."""


class ToolLoopLimitError(LLMRelayError):
    """The model kept asking for tools past `max_tool_rounds`. Carries the transcript so far."""

    def __init__(self, message: str, *, messages: Any = None, response: Any = None):
        super().__init__(message)
        self.messages = messages
        self.response = response


class ToolExecutionError(LLMRelayError):
    """A tool failed and the caller asked for errors to raise (`tool_errors="raise"`)."""

    def __init__(self, result: Any, *, messages: Any = None):
        super().__init__(f"tool {result.name!r} failed: {result.error}")
        self.result = result
        self.messages = messages


class OutputRefusedError(LLMRelayError):
    """Structured output: the model refused to answer (OpenAI `refusal`, or a turn ended by its
    content filter with no answer). `refusal` is the model's text; `response` the whole response."""

    def __init__(self, refusal: str, *, response: Any = None, reason: str = "refusal"):
        super().__init__(f"the model refused to produce the output: {refusal}" if refusal else
                         f"the model produced no output ({reason})")
        self.refusal = refusal
        self.reason = reason
        self.response = response


class OutputValidationError(LLMRelayError, ValueError):
    """Structured output: the answer is not valid JSON for the requested type (after any
    `output_retries`). `raw` is the JSON text received, `errors` the validation errors (pydantic's
    `errors()` dicts, or `{"loc", "msg", "type"}` dicts for a JSON schema or bad JSON), `response`
    the whole response (usage counts every attempt), `attempts` how many answers were tried."""

    def __init__(self, message: str, *, raw: str = "", errors: list[dict[str, Any]] | None = None,
                 response: Any = None, attempts: int = 1):
        super().__init__(message)
        self.raw = raw
        self.errors = list(errors or [])
        self.response = response
        self.attempts = attempts


#: The name the conventions use; the same class.
StructuredOutputValidationError = OutputValidationError


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
    529: OverloadedError,
}

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
)
_POLICY_MARKERS = ("content_policy", "content policy", "safety system", "content_filter")


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, `retry-after` (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # lazy: it costs ~13 ms at import

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message_from_body(body: bytes | str | None) -> tuple[str | None, Any]:
    """Pull a human message out of a provider error body (JSON or text)."""
    if not body:
        return None, None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:2000] or None, body
    return _find_message(data), data


def _find_message(data: Any) -> str | None:
    if isinstance(data, list) and data:
        return _find_message(data[0])
    if not isinstance(data, dict):
        return str(data) if data is not None else None
    err = data.get("error")
    if isinstance(err, dict):
        return _find_message(err) or json.dumps(err)
    if isinstance(err, str):
        return err
    for key in ("message", "detail", "msg"):
        value = data.get(key)
        if isinstance(value, str):
            return value
    return json.dumps(data)[:2000]


def status_error(
    status: int,
    body: bytes | None,
    headers: Any = None,
    *,
    provider: str | None = None,
    model: str | None = None,
    request_id: str | None = None,
    truncated: int | None = None,
) -> APIStatusError:
    """Map an HTTP status (and body) to the typed error. `truncated`: the body was cut at this
    many bytes (`Limits.max_error_body`); the message says so."""
    message, data = error_message_from_body(body)
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIStatusError
    if cls is BadRequestError and message:
        lowered = message.lower()
        if any(m in lowered for m in _CONTEXT_MARKERS):
            cls = ContextWindowExceededError
        elif any(m in lowered for m in _POLICY_MARKERS):
            cls = ContentPolicyViolationError
    text = f"{provider or 'provider'} returned HTTP {status}"
    if message:
        text += f": {message}"
    if truncated is not None:
        text += f" [error body cut at {truncated} bytes]"
    return cls(
        text,
        status_code=status,
        retry_after=parse_retry_after(headers),
        provider=provider,
        model=model,
        request_id=request_id,
        body=data,
    )


class MissingCredentialsError(MissingAPIKeyError):
    """No credentials for a cloud provider (Azure, Bedrock, Vertex). The message names every way
    to provide them; `ways` lists them."""

    def __init__(self, provider: str, env_vars: tuple[str, ...], ways: list[str]):
        self.ways = list(ways)
        super().__init__(provider, env_vars)
        self.args = (f"No credentials found for provider {provider!r}. Provide them in one of these ways: "
                     + "; ".join(f"({i}) {w}" for i, w in enumerate(ways, 1)) + ".",)

    def __str__(self) -> str:
        return str(self.args[0])


#: In-band error codes (and status names) that the same request will meet again: never retried.
PERMANENT_CODES = frozenset({
    "insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error",
    "invalid_request_error", "invalid_request", "invalid_argument", "invalid_api_key", "authentication_error",
    "unauthenticated", "permission_error", "permission_denied", "not_found_error", "not_found",
    "model_not_found", "context_length_exceeded", "content_policy_violation", "content_filter",
    "unsupported_parameter", "unsupported_value", "failed_precondition", "payment_required",
})
_ACCOUNT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error",
                            "payment_required"})
#: In-band statuses that are the request's own fault (or the account's): never retried.
PERMANENT_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})
_PERMANENT_MARKERS = ("insufficient_quota", "exceeded your current quota", "billing", "credit balance")


def is_permanent(error: BaseException) -> bool:
    """Would the same request fail the same way (quota, billing, invalid request, content policy)?
    Looks at the status, the in-band code and type, and the message; such errors are never retried."""
    if isinstance(error, (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError,
                          UnprocessableEntityError, RequestTooLargeError)):
        return True
    if isinstance(error, APIStatusError) and error.status_code == 402:
        return True
    if not isinstance(error, (APIStatusError, ProviderStreamError)) or isinstance(error, MalformedChunkError):
        return False
    if isinstance(error, ProviderStreamError) and error.status_code in PERMANENT_STATUSES:
        return True
    codes = [getattr(error, "code", None)]
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            codes += [inner.get("code"), inner.get("type"), inner.get("status")]
    # a status error's class already says what its status means; its body can only add quota/billing
    known = _ACCOUNT_CODES if isinstance(error, APIStatusError) else PERMANENT_CODES
    if any(isinstance(c, str) and c.lower() in known for c in codes):
        return True
    message = (error.message or "").lower()
    return any(m in message for m in _PERMANENT_MARKERS)
