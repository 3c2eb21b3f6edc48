"""The prepared request: what every layer from the protocols up passes around.

`Call` is a validated request resolved against a provider profile (the encoder's
only input); `HTTPRequest` is what an encoder produces and a transport sends;
`Params` are the provider-neutral generation parameters. Vocabulary only: this
module imports nothing of llmrelay at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .messages import Message
    from .providers import Provider

__all__ = ["Call", "HTTPRequest", "Params"]


@dataclass(slots=True)
class Params:
    """Generation parameters, provider-neutral. None means "not set"."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    #: "minimal" | "low" | "medium" | "high" (OpenAI-style effort).
    reasoning_effort: str | None = None
    #: Token budget for thinking (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    thinking_budget: int | None = None
    n: int | None = None

    def set_fields(self) -> list[str]:
        values = _param_values(self)  # one C call for the eight values; none set (the usual case) ends here
        if values.count(None) == len(values):
            return []
        return [name for name, value in zip(self.__slots__, values) if value is not None]


_param_values = attrgetter(*Params.__slots__)


@dataclass(slots=True)
class Call:
    """A validated request, resolved against a provider profile: the encoder's only input."""

    provider: Provider
    model: str
    base_url: str
    api_key: str | None
    messages: list[Message]
    params: Params = field(default_factory=Params)
    extra_body: dict[str, Any] | None = None
    extra_headers: dict[str, str] | None = None
    #: Tool definitions offered to the model (`llmrelay.tools.Tool`), and the choice:
    #: "auto" | "none" | "required" | a tool name.
    tools: list[Any] | None = None
    tool_choice: str | None = None
    #: `llmrelay.Timeouts` for this call (None: the client's).
    timeouts: Any = None
    #: Structured output: a `llmrelay.structured.OutputSchema` (name, JSON schema, strict flag), or None.
    output: Any = None
    #: The provider's own runtime options (`options=`; Ollama: num_ctx, top_k, keep_alive...), or None.
    options: dict[str, Any] | None = None
    #: A cloud provider's auth (`llmrelay.cloud`): the URL form and the signed/token headers, or None.
    auth: Any = None


class HTTPRequest:
    """One HTTP request as sent: method, URL, headers and the encoded body.

    `json` is the body as an object, for tests and logs (never re-encoded): decoded from
    `body` when first read, unless one was given. The encoders give none, so a request in
    flight does not keep its body twice (bytes and a tree of dicts).

    An encoder may hand the same headers dict to many requests (`shared=True`: the URL and headers of
    every call with the same provider, key and extra headers are equal): reading `headers` then
    gives the request its own copy first, so whoever changes a request's headers (middleware, a
    gateway adding forwarded headers) changes only that request. `wire_headers` is what to send,
    not copied: for the transports, which only read it."""

    __slots__ = ("method", "url", "_headers", "_shared", "body", "_json")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | None, json: Any = None,
                 shared: bool = False):
        self.method = method
        self.url = url
        self._headers = headers
        #: True while `headers` is a dict other requests may hold too (copied when first read).
        self._shared = shared
        self.body = body
        self._json = json

    @property
    def headers(self) -> dict[str, str]:
        if self._shared:
            self._headers = dict(self._headers)
            self._shared = False
        return self._headers

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._headers = value
        self._shared = False

    @property
    def wire_headers(self) -> dict[str, str]:
        """The headers to send, read only (maybe shared with other requests: see the class)."""
        return self._headers

    @property
    def json(self) -> Any:
        if self._json is None and self.body:
            from json import loads

            self._json = loads(self.body)
        return self._json

    @json.setter
    def json(self, value: Any) -> None:
        self._json = value

    def __repr__(self) -> str:
        return f"HTTPRequest(method={self.method!r}, url={self.url!r}, headers={self._headers!r}, body={self.body!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not HTTPRequest:
            return NotImplemented
        return (self.method, self.url, self._headers, self.body) == (other.method, other.url, other._headers, other.body)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaces
