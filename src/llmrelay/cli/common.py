"""What the `llmrelay` commands share: exit codes, `-o KEY VALUE` parsing, error lines."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from ..errors import APIError, ProviderStreamError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def parse_value(raw: str) -> Any:
    """`0.2` -> 0.2, `["a"]` -> list, `true` -> True, anything else stays a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_options(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    return {key.replace("-", "_"): parse_value(value) for key, value in pairs}


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def describe_error(exc: BaseException) -> str:
    """`RateLimitError: openai returned HTTP 429: …` plus the fields that help."""
    text = f"{type(exc).__name__}: {exc}"
    extra = []
    if isinstance(exc, ProviderStreamError):
        if exc.code is not None:
            extra.append(f"code={exc.code}")
        if exc.status_code is not None:
            extra.append(f"status={exc.status_code}")
    if isinstance(exc, APIError) and exc.request_id:
        extra.append(f"request_id={exc.request_id}")
    if extra:
        text += f" ({', '.join(extra)})"
    return text
