"""What `chat` sends besides the prompt: `-a` images, `--schema` structured output, `--functions` tools.

    llmrelay chat "What is in this picture?" -a photo.jpg -m openai:gpt-4o-mini
    llmrelay chat "Describe it" -a https://example.com/cat.png -m anthropic:claude-sonnet-4-5
    llmrelay chat "Invent a dog" --schema "name, age int, bio: one sentence" -m openai:gpt-4o-mini
    llmrelay chat "What is 1231 * 2331?" --functions tools.py -m openai:gpt-4o-mini

A file is sent inline (base64, its type guessed from the name, then from its
first bytes). A URL is sent as a URL to the protocols that fetch images
themselves (OpenAI Chat and Responses, Anthropic, Cohere); for Ollama and
Gemini, which take inline data only, the CLI downloads it first.

`--schema` takes a JSON schema (inline, or a file holding one) or the concise
syntax of simonw/llm: fields separated by commas (or newlines), each `name`
with an optional type (`str`, `int`, `float`, `bool`; default `str`) and an
optional `: description`.

`--functions` takes a Python file (or inline code, as in simonw/llm): every
public function it defines becomes a tool (schema from the type hints and the
docstring) that the model may call; llmrelay runs the calls and streams on.
The code runs in this process: give it only code you trust, as with any script.
"""

from __future__ import annotations

import inspect
import json
import mimetypes
import os
import re
from typing import Any

#: Protocols that cannot be given an image by URL: the CLI downloads it.
INLINE_ONLY = ("ollama", "gemini")

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
          (b"GIF89a", "image/gif"), (b"RIFF", "image/webp"))

DOWNLOAD_TIMEOUT = 30.0


class InputError(Exception):
    """A bad `-a` or `--schema` (a usage error: exit 2)."""


# -- attachments -------------------------------------------------------------------------------


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _sniff(raw: bytes) -> str | None:
    for magic, media_type in _MAGIC:
        if raw.startswith(magic) and (media_type != "image/webp" or raw[8:12] == b"WEBP"):
            return media_type
    return None


def attachment(spec: str, protocol: str | None) -> Any:
    """An `ImagePart` for `-a SPEC` (a file path or an http(s) URL), as `protocol` can take it."""
    from ..messages import ImagePart

    if is_url(spec):
        if protocol not in INLINE_ONLY:
            return ImagePart(url=spec)
        raw, media_type = _download(spec)
    else:
        try:
            with open(os.path.expanduser(spec), "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise InputError(f"cannot read attachment {spec!r}: {exc.strerror or exc}") from None
        media_type = mimetypes.guess_type(spec)[0]
    media_type = media_type if media_type and media_type.startswith("image/") else _sniff(raw)
    if not media_type:
        raise InputError(f"attachment {spec!r} is not an image (PNG, JPEG, GIF or WebP); "
                         "only images can be attached")
    return ImagePart.from_bytes(raw, media_type)


def _download(url: str) -> tuple[bytes, str | None]:
    import httpx

    try:
        r = httpx.get(url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise InputError(f"cannot download attachment {url}: {exc}") from None
    media_type = r.headers.get("content-type", "").split(";")[0].strip() or None
    return r.content, media_type


def user_message(prompt: str, parts: list[Any]) -> dict[str, Any] | Any:
    """The user turn: plain text, or text plus images (an `llmrelay.Message`)."""
    if not parts:
        return {"role": "user", "content": prompt}
    from ..messages import Message

    return Message.user(prompt, *parts)


# -- schemas --------------------------------------------------------------------------------------

_TYPES = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
          "number": "number", "bool": "boolean", "boolean": "boolean"}
_FIELD = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*([A-Za-z]+)?\s*$")


def parse_schema(text: str) -> dict[str, Any]:
    """A JSON schema from `--schema TEXT`: inline JSON, a file holding JSON, or the concise syntax."""
    raw = text.strip()
    if not raw:
        raise InputError("--schema is empty")
    if not raw.startswith("{") and os.path.isfile(os.path.expanduser(raw)):
        with open(os.path.expanduser(raw), encoding="utf-8") as f:
            raw = f.read().strip()
    if raw.startswith("{"):
        try:
            schema = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"--schema is not valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise InputError("--schema must be a JSON object")
        return schema
    return concise_schema(raw)


def concise_schema(text: str) -> dict[str, Any]:
    """`name, age int, bio: one sentence` -> an object schema with every field required."""
    items = text.splitlines() if "\n" in text else text.split(",")
    properties: dict[str, Any] = {}
    for item in items:
        if not item.strip():
            continue
        head, colon, description = item.partition(":")
        m = _FIELD.match(head)
        if m is None:
            raise InputError(f"--schema: cannot read the field {item.strip()!r} (write `name type: description`, "
                             f"type one of {', '.join(sorted(set(_TYPES)))})")
        name, kind = m.group(1), (m.group(2) or "str").lower()
        if kind not in _TYPES:
            raise InputError(f"--schema: unknown type {kind!r} for {name!r} (use str, int, float or bool)")
        prop: dict[str, Any] = {"type": _TYPES[kind]}
        if colon and description.strip():
            prop["description"] = description.strip()
        properties[name] = prop
    if not properties:
        raise InputError("--schema names no field")
    return {"type": "object", "properties": properties, "required": list(properties)}


# -- functions as tools -----------------------------------------------------------------------------


def load_functions(specs: list[str]) -> list[Any]:
    """The public functions defined by each `--functions` file (`*.py`) or inline code."""
    tools: list[Any] = []
    for i, spec in enumerate(specs):
        path = os.path.expanduser(spec)
        if spec.endswith(".py"):
            try:
                with open(path, encoding="utf-8") as f:
                    code, filename = f.read(), path
            except OSError as exc:
                raise InputError(f"--functions: cannot read {spec!r}: {exc.strerror or exc}") from None
        else:
            code, filename = spec, f"<--functions {i + 1}>"
        module = f"llmrelay_functions_{i}"
        namespace: dict[str, Any] = {"__name__": module}
        try:
            exec(compile(code, filename, "exec"), namespace)
        except Exception as exc:
            raise InputError(f"--functions {filename}: {type(exc).__name__}: {exc}") from None
        found = [value for name, value in namespace.items()
                 if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module]
        if not found:
            raise InputError(f"--functions {filename} defines no function")
        tools.extend(found)
    return tools


# -- showing a structured answer -----------------------------------------------------------------


class OutputView:
    """The object as it streams (a live JSON view on a terminal); the final JSON at the end."""

    def __init__(self, console: Any):
        self.console = console
        self.live: Any = None
        self.value: Any = None
        if console is not None:
            from rich.live import Live

            self.live = Live("", console=console, refresh_per_second=12, vertical_overflow="ellipsis")
            self.live.start()

    def partial(self, value: Any) -> None:
        self.value = value
        if self.live is not None:
            from rich.syntax import Syntax

            self.live.update(Syntax(json.dumps(value, indent=2, ensure_ascii=False), "json", theme="ansi_dark"))

    def close(self, final: Any, stream: Any) -> None:
        """Stop the live view; print `final` (the validated output) as JSON, or nothing if None."""
        if self.live is not None:
            self.live.update("")
            self.live.stop()
        if final is None:
            return
        text = json.dumps(final, indent=2, ensure_ascii=False, default=_plain)
        if self.console is not None:
            from rich.syntax import Syntax

            self.console.print(Syntax(text, "json", theme="ansi_dark"))
        else:
            stream.write(text + "\n")
            stream.flush()


def _plain(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json") if callable(dump) else str(obj)
