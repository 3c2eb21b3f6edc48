"""llmrelay: stream LLM responses from any provider behind one interface.

    import llmrelay
    for text in llmrelay.stream("openai:gpt-4o-mini", [{"role": "user", "content": "Hi"}]).text_stream:
        print(text, end="", flush=True)
"""

from typing import TYPE_CHECKING, Any

from .call import Call
from .errors import (
    AllModelsFailedError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    IncompleteToolCallError,
    InternalServerError,
    InvalidRequestError,
    LengthFinishReasonError,
    LLMRelayError,
    MalformedChunkError,
    MissingAPIKeyError,
    NotFoundError,
    OutputRefusedError,
    OutputValidationError,
    OverloadedError,
    PermissionDeniedError,
    ProviderStreamError,
    RateLimitError,
    RequestTooLargeError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    StreamInterruptedError,
    StreamResetError,
    StructuredOutputValidationError,
    Timeout,
    ToolExecutionError,
    ToolLoopLimitError,
    UnexpectedResponseError,
    UnknownProviderError,
    UnprocessableEntityError,
    UnsupportedParameterError,
)
from .events import (
    FallbackEvent,
    Finish,
    OutputItem,
    PartialOutput,
    ProviderEvent,
    ReasoningDelta,
    RefusalDelta,
    Reset,
    RetryEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    UsageEvent,
)
from .reliability.fallback import Router
from .observability.hooks import CallContext, Hooks
from .messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from .reliability.middleware import Middleware
from .providers import PROVIDERS, Provider
from .response import Attempt, Choice, Response, Timings
from .reliability.retry import Retry
from .stream import AsyncStream, Stream
from .limits import Limits

# After `.stream`: the function `llmrelay.stream`, not the submodule of the same name, is the
# package's `stream` (type checkers bind a submodule's name where it is imported from).
from .client import Client, acomplete, astream, complete, default_client, stream  # noqa: E402
from .timeouts import Timeouts
from .usage import Usage

if TYPE_CHECKING:  # lazy at run time (see __getattr__), visible to type checkers
    from .cost import Cost, PriceTable, clear_prices, set_price
    from .tools import Tool, tool

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:  # lazy exports: tools pull in inspect/pydantic only when used
    if name in ("Tool", "tool"):
        from . import tools

        return getattr(tools, name)
    if name in ("Cost", "PriceTable", "set_price", "clear_prices"):
        from . import cost

        return getattr(cost, name)
    raise AttributeError(f"module 'llmrelay' has no attribute {name!r}")


__all__ = [
    "__version__",
    "acomplete",
    "AllModelsFailedError",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "astream",
    "AsyncStream",
    "Call",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "CallContext",
    "Choice",
    "clear_prices",
    "Client",
    "complete",
    "ConflictError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "Cost",
    "default_client",
    "FallbackEvent",
    "Finish",
    "Hooks",
    "ImagePart",
    "IncompleteToolCallError",
    "InternalServerError",
    "InvalidRequestError",
    "LengthFinishReasonError",
    "LLMRelayError",
    "MalformedChunkError",
    "Message",
    "Middleware",
    "MissingAPIKeyError",
    "NotFoundError",
    "OutputItem",
    "OutputRefusedError",
    "OutputValidationError",
    "OverloadedError",
    "PartialOutput",
    "PermissionDeniedError",
    "PriceTable",
    "Provider",
    "ProviderEvent",
    "PROVIDERS",
    "ProviderStreamError",
    "RateLimitError",
    "ReasoningDelta",
    "ReasoningPart",
    "RefusalDelta",
    "RequestTooLargeError",
    "Reset",
    "Response",
    "Retry",
    "RetryEvent",
    "Router",
    "ServiceUnavailableError",
    "set_price",
    "stream",
    "Stream",
    "StreamInterruptedError",
    "StreamResetError",
    "StreamStart",
    "StructuredOutputValidationError",
    "TextDelta",
    "TextPart",
    "Timeout",
    "Timeouts",
    "Timings",
    "tool",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolExecutionError",
    "ToolLoopLimitError",
    "ToolResult",
    "UnknownProviderError",
    "UnprocessableEntityError",
    "UnsupportedParameterError",
    "Usage",
    "UsageEvent",
]
