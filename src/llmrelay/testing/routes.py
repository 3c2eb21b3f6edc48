"""Pick a bundled recording for an incoming request: what `llmrelay replay` serves.

`ReplayServer(default=by_request())` answers every request that nothing was
enqueued for with a recording chosen from the request itself:

1. The protocol, from the request path: `/chat/completions` (OpenAI Chat and
   every OpenAI-compatible provider), `/responses`, `/v1/messages` (Anthropic),
   `:streamGenerateContent` (Gemini), `/api/chat` and `/api/generate` (Ollama),
   `/v2/chat` and `/v1/chat` (Cohere).
2. The model name, when it names a recording of that protocol: `-m
   openai-compatible:parallel_tool_calls` replays `openai_chat/parallel_tool_calls.sse`,
   `groq/error_event_tool_use_failed` replays that file (a folder prefix picks
   another provider's recording of the same protocol).
3. Otherwise the protocol's default: a plain text answer; for OpenAI Chat, a
   tool call when the request offers tools (`multiply`, as in the README), the
   answer after it when the request carries a tool result, and a JSON object
   when it asks for structured output.

`recording=` serves one named recording to every request instead. A path that
no protocol uses gets HTTP 404 with the list of paths that work.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Callable

from .recordings import wire_recordings
from .server import RecordedRequest, Reply

#: protocol -> the recording folders that hold its bodies (a file prefix narrows cohere).
FOLDERS: dict[str, tuple[str, ...]] = {
    "openai_chat": ("openai_chat", "deepseek", "groq", "mistral", "openrouter", "together", "azure"),
    "openai_responses": ("openai_responses",),
    "anthropic": ("anthropic",),
    "gemini": ("gemini", "vertex"),
    "ollama": ("ollama",),
    "ollama_generate": ("ollama",),
    "cohere": ("cohere",),
    "cohere_v1": ("cohere",),
    "bedrock": ("bedrock",),
    "bedrock_invoke": ("bedrock",),
}

#: protocol -> the recording served when the model names none.
DEFAULTS: dict[str, str] = {
    "openai_chat": "openai_chat/text_usage_chunk.sse",
    "openai_responses": "openai_responses/text_basic.sse",
    "anthropic": "anthropic/text_basic.sse",
    "gemini": "gemini/text_sse.sse",
    "ollama": "ollama/chat_text_done_stop.ndjson",
    "ollama_generate": "ollama/generate_stream.ndjson",
    "cohere": "cohere/v2_text.sse",
    "cohere_v1": "cohere/v1_text_ndjson.ndjson",
    "bedrock": "bedrock/converse_stream_text_nova.eventstream",
    "bedrock_invoke": "bedrock/invoke_stream_anthropic_text.eventstream",
}

#: OpenAI Chat requests that offer tools, carry a tool result, or ask for JSON.
OPENAI_TOOL_CALL = "openai_chat/tool_call_then_usage.sse"          # calls multiply(a=1231, b=2331)
OPENAI_AFTER_TOOL = "openai_chat/text_after_tool_result.sse"
OPENAI_JSON = "openai_chat/json_object_long.sse"

#: (path test, protocol), first match wins.
PATHS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda p: p.endswith("/chat/completions"), "openai_chat"),
    (lambda p: p.endswith("/responses"), "openai_responses"),
    (lambda p: p.endswith("/v1/messages") or p.endswith(":streamRawPredict"), "anthropic"),  # + Claude on Vertex
    (lambda p: p.endswith("/converse-stream"), "bedrock"),
    (lambda p: p.endswith("/invoke-with-response-stream"), "bedrock_invoke"),
    (lambda p: ":streamGenerateContent" in p or ":generateContent" in p, "gemini"),
    (lambda p: p.endswith("/api/chat"), "ollama"),
    (lambda p: p.endswith("/api/generate"), "ollama_generate"),
    (lambda p: p.endswith("/v2/chat"), "cohere"),
    (lambda p: p.endswith("/v1/chat"), "cohere_v1"),
)

PATH_HELP = ("POST .../chat/completions (OpenAI Chat and compatible, Azure), .../responses, /v1/messages (Anthropic), "
             "/v1beta/models/MODEL:streamGenerateContent (Gemini, Vertex), .../MODEL:streamRawPredict (Claude on Vertex), "
             "/model/ID/converse-stream or /model/ID/invoke-with-response-stream (Bedrock), "
             "/api/chat or /api/generate (Ollama), /v2/chat or /v1/chat (Cohere)")


def protocol_of(path: str) -> str | None:
    """The wire protocol a request path belongs to (query string ignored), or None."""
    path = path.split("?", 1)[0].rstrip("/")
    for test, protocol in PATHS:
        if test(path):
            return protocol
    return None


def model_of(request: RecordedRequest) -> str | None:
    """The model the request names: the body's `model`, Gemini's `models/<model>:...` path, or
    Bedrock's `/model/<id>/...` path."""
    path = request.path.split("?", 1)[0]
    if "/models/" in path and ":" in path.rsplit("/models/", 1)[1]:
        return path.rsplit("/models/", 1)[1].split(":", 1)[0]
    if path.startswith("/model/") or "/model/" in path:  # Bedrock: /model/<id>/converse-stream
        from urllib.parse import unquote

        return unquote(path.rsplit("/model/", 1)[1].split("/", 1)[0])
    try:
        body = request.json
    except ValueError:
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _candidates(protocol: str) -> list[str]:
    folders = FOLDERS[protocol]
    out = []
    for name in wire_recordings():
        folder, _, file = name.partition("/")
        if folder not in folders:
            continue
        if protocol == "cohere" and file.startswith("v1_") or protocol == "cohere_v1" and not file.startswith("v1_"):
            continue
        if protocol == "gemini" and name.endswith(".json"):
            continue  # the JSON-array bodies answer requests without alt=sse
        if protocol == "bedrock" and not file.startswith("converse_") or protocol == "bedrock_invoke" and not file.startswith("invoke_"):
            continue
        out.append(name)
    return out


def recording_named(protocol: str, model: str | None) -> str | None:
    """The recording of `protocol` that `model` names (`stem` or `folder/stem`), or None."""
    if not model:
        return None
    wanted = model.strip().removesuffix(".sse").removesuffix(".ndjson").removesuffix(".json")
    for name in _candidates(protocol):
        stem = name.rsplit(".", 1)[0]
        if wanted in (stem, PurePosixPath(stem).name):
            return name
    return None


def pick(request: RecordedRequest) -> str | None:
    """The recording to answer `request` with, or None when no protocol uses its path."""
    protocol = protocol_of(request.path)
    if protocol is None:
        return None
    named = recording_named(protocol, model_of(request))
    if named:
        return named
    if protocol == "openai_chat":
        try:
            body = request.json
        except ValueError:
            body = None
        if isinstance(body, dict):
            messages = body.get("messages") or []
            if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
                return OPENAI_AFTER_TOOL
            if any(_tool_name(t) == "multiply" for t in body.get("tools") or ()):
                return OPENAI_TOOL_CALL
            if isinstance(body.get("response_format"), dict):
                return OPENAI_JSON
    return DEFAULTS[protocol]


def _tool_name(tool: Any) -> str | None:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return fn.get("name") if isinstance(fn, dict) else None


def by_request(*, recording: str | None = None, chunking: Any = "events", delay: float = 0.0,
               on_pick: Callable[[RecordedRequest, str | None], None] | None = None
               ) -> Callable[[RecordedRequest], Reply]:
    """A `ReplayServer(default=...)` handler that answers each request with a bundled recording
    (see the module docstring); `recording=` always answers with that one. `on_pick(request, name)`
    is told each choice (None: no protocol uses the path, answered with 404)."""
    if recording is not None:
        Reply.recording(recording)  # an unknown name fails now, not at the first request

    def handle(request: RecordedRequest) -> Reply:
        name = recording or pick(request)
        if on_pick is not None:
            on_pick(request, name)
        if name is None:
            message = f"replay server: no protocol uses {request.method} {request.path}; try {PATH_HELP}"
            return Reply.json({"error": {"message": message, "type": "not_found"}}, status=404)
        return Reply.recording(name, chunking=chunking, delay=delay)

    return handle


def describe(request: RecordedRequest) -> str:
    """`POST /v1/chat/completions (model gpt-4o)` for a log line."""
    model = model_of(request)
    return f"{request.method} {request.path}" + (f" (model {model})" if model else "")
