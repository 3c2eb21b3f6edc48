"""Conversation messages: typed `Message` objects and the parts they hold.

Callers may pass OpenAI-style dicts or `Message` objects; `normalize_messages`
turns either into a fresh list of `Message` (the caller's list is never
mutated). An assistant `Response` converts to a `Message` with the same parts,
so opaque provider data (Anthropic thinking signatures, Gemini
`thoughtSignature`) goes back unchanged when the conversation continues.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence, Union

from .errors import InvalidRequestError

Role = Literal["system", "user", "assistant", "tool"]
ROLES = ("system", "user", "assistant", "tool")


@dataclass(slots=True)
class TextPart:
    text: str
    signature: str | None = None
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image, by URL or inline base64 data (`data` is base64 text)."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    type: Literal["image"] = "image"

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str) -> ImagePart:
        return cls(data=base64.b64encode(raw).decode("ascii"), media_type=media_type)

    @property
    def data_url(self) -> str:
        if self.url:
            return self.url
        return f"data:{self.media_type or 'image/png'};base64,{self.data}"


@dataclass(slots=True)
class ReasoningPart:
    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True)
class ToolCall:
    id: str | None
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str = ""
    error: str | None = None
    signature: str | None = None
    type: Literal["tool_call"] = "tool_call"

    @property
    def arguments_json(self) -> str:
        """The arguments as a JSON string: the model's own text when it was valid, so it goes back byte for byte."""
        if self.arguments is not None:
            if self.raw_arguments and not self.raw_arguments.isspace():
                return self.raw_arguments
            return json.dumps(self.arguments, ensure_ascii=False)
        return self.raw_arguments or "{}"


Part = Union[TextPart, ImagePart, ReasoningPart, ToolCall]


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)
    #: For role="tool": the call this message answers, and the tool's name.
    tool_call_id: str | None = None
    name: str | None = None
    #: For role="tool": the tool failed and the content is its error (Anthropic `is_error`).
    is_error: bool = False

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", [TextPart(text)])

    @classmethod
    def user(cls, *content: str | Part) -> Message:
        return cls("user", [TextPart(c) if isinstance(c, str) else c for c in content])

    @classmethod
    def assistant(cls, text: str = "", tool_calls: Iterable[ToolCall] = ()) -> Message:
        parts: list[Part] = [TextPart(text)] if text else []
        parts.extend(tool_calls)
        return cls("assistant", parts)

    @classmethod
    def tool(cls, tool_call_id: str, content: str, name: str | None = None, is_error: bool = False) -> Message:
        return cls("tool", [TextPart(content)], tool_call_id=tool_call_id, name=name, is_error=is_error)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.parts if isinstance(p, ToolCall)]


MessageLike = Union[Message, dict[str, Any]]


#: What the calls take as `messages`: a string (one user message), a `Message`, an OpenAI-style
#: dict, or a list of those.
MessagesInput = Union[str, "Message", Mapping[str, Any], Sequence[Union[str, "Message", Mapping[str, Any]]]]


def normalize_messages(messages: Any) -> list[Message]:
    """Validate and convert the caller's messages. Never mutates the input."""
    if isinstance(messages, (str, Message, dict)):
        messages = [messages]
    if not isinstance(messages, (list, tuple)):
        raise InvalidRequestError(
            f"messages must be a list of dicts or Message objects, got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidRequestError("messages is empty: give at least one message")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if isinstance(m, str):
            out.append(Message("user", [TextPart(m)]))
        elif isinstance(m, Message):
            if m.role not in ROLES:
                raise InvalidRequestError(f"messages[{i}]: unknown role {m.role!r}; expected one of {ROLES}")
            if not isinstance(m.parts, (list, tuple)):
                raise InvalidRequestError(f"messages[{i}].parts must be a list of parts, got {type(m.parts).__name__}")
            parts: list[Part] = []
            for j, p in enumerate(m.parts):
                if isinstance(p, str):
                    p = TextPart(p)
                elif not isinstance(p, (TextPart, ImagePart, ReasoningPart, ToolCall)):
                    raise InvalidRequestError(f"messages[{i}].parts[{j}]: unsupported part {type(p).__name__}")
                parts.append(p)
            out.append(Message(m.role, parts, m.tool_call_id, m.name, m.is_error))
        elif isinstance(m, dict):
            out.append(_from_dict(m, i))
        elif hasattr(m, "to_message"):
            out.append(m.to_message())
        else:
            raise InvalidRequestError(
                f"messages[{i}] must be a dict or Message, got {type(m).__name__}"
            )
    return out


def _from_dict(m: dict[str, Any], i: int) -> Message:
    role = m.get("role")
    if role == "developer":
        role = "system"
    if role not in ROLES:
        raise InvalidRequestError(f"messages[{i}]: unknown role {role!r}; expected one of {ROLES}")
    if m.get("content") is None and role in ("user", "system"):
        raise InvalidRequestError(f"messages[{i}].content is missing or None: a {role} message needs content")
    parts = _content_parts(m.get("content"), i)
    if role == "assistant":
        reasoning = m.get("reasoning_content") or m.get("reasoning")
        if reasoning:
            parts.insert(0, ReasoningPart(reasoning))
        calls = m.get("tool_calls") or ()
        if not isinstance(calls, (list, tuple)):
            raise InvalidRequestError(f"messages[{i}].tool_calls must be a list, got {type(calls).__name__}")
        for j, tc in enumerate(calls):
            parts.append(_tool_call_from_dict(tc, i, j))
    if m.get("name") is not None and not isinstance(m["name"], str):
        raise InvalidRequestError(f"messages[{i}].name must be a string, got {type(m['name']).__name__}")
    if role == "tool":
        if not m.get("tool_call_id"):
            raise InvalidRequestError(f"messages[{i}]: a tool message needs 'tool_call_id'")
        return Message("tool", parts, m["tool_call_id"], m.get("name"), bool(m.get("is_error")))
    return Message(role, parts, None, m.get("name"))


def _tool_call_from_dict(tc: Any, i: int, j: int) -> ToolCall:
    if isinstance(tc, ToolCall):
        return tc
    if not isinstance(tc, dict):
        raise InvalidRequestError(f"messages[{i}].tool_calls[{j}] must be a dict")
    fn = tc.get("function") or tc
    if not isinstance(fn, dict):
        raise InvalidRequestError(f"messages[{i}].tool_calls[{j}].function must be a dict")
    name = fn.get("name")
    if not name or not isinstance(name, str):
        raise InvalidRequestError(f"messages[{i}].tool_calls[{j}] has no function name")
    args = fn.get("arguments")
    if isinstance(args, str):
        raw = args
        try:
            parsed = json.loads(args) if args.strip() else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            parsed = None  # kept raw, sent back unchanged
    elif args is not None and not isinstance(args, dict):
        raise InvalidRequestError(
            f"messages[{i}].tool_calls[{j}]: arguments must be a JSON object or a JSON string, got {type(args).__name__}"
        )
    else:
        parsed = args if args is not None else {}
        raw = json.dumps(parsed)
    return ToolCall(id=tc.get("id"), name=name, arguments=parsed, raw_arguments=raw)


def _content_parts(content: Any, i: int) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, (list, tuple)):
        raise InvalidRequestError(
            f"messages[{i}].content must be a string or a list of parts, got {type(content).__name__}"
        )
    parts: list[Part] = []
    for j, p in enumerate(content):
        if isinstance(p, (TextPart, ImagePart, ReasoningPart, ToolCall)):
            parts.append(p)
        elif isinstance(p, str):
            parts.append(TextPart(p))
        elif isinstance(p, dict):
            parts.append(_part_from_dict(p, i, j))
        else:
            raise InvalidRequestError(f"messages[{i}].content[{j}]: unsupported part {type(p).__name__}")
    return parts


def _part_from_dict(p: dict[str, Any], i: int, j: int) -> Part:
    kind = p.get("type")
    if kind in ("text", "input_text", "output_text"):
        text = p.get("text", "")
        if not isinstance(text, str):
            raise InvalidRequestError(f"messages[{i}].content[{j}]: text must be a string, got {type(text).__name__}")
        return TextPart(text)
    if kind in ("image_url", "input_image"):
        ref = p.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        detail = ref.get("detail") if isinstance(ref, dict) else p.get("detail")
        if not url:
            raise InvalidRequestError(f"messages[{i}].content[{j}]: image part has no url")
        if not isinstance(url, str):
            raise InvalidRequestError(f"messages[{i}].content[{j}]: image url must be a string, got {type(url).__name__}")
        if url.startswith("data:") and url.partition(",")[0].endswith(";base64"):
            # only a base64 data URL becomes inline data; others (e.g. percent-encoded SVG) stay URLs
            head, _, data = url.partition(",")
            media_type = head[5:].split(";")[0] or None
            return ImagePart(data=data, media_type=media_type, detail=detail)
        return ImagePart(url=url, detail=detail)
    if kind == "image":  # Anthropic-style source
        src = p.get("source") or {}
        if src.get("type") == "base64":
            return ImagePart(data=src.get("data"), media_type=src.get("media_type"))
        if src.get("type") == "url":
            return ImagePart(url=src.get("url"))
        if p.get("url") or p.get("data"):
            return ImagePart(url=p.get("url"), data=p.get("data"), media_type=p.get("media_type"))
        raise InvalidRequestError(f"messages[{i}].content[{j}]: image part needs a url or base64 data")
    raise InvalidRequestError(
        f"messages[{i}].content[{j}]: unsupported part type {kind!r} (text and images are supported)"
    )
