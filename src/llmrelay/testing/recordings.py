"""Real provider streams bundled with llmrelay, for tests and the offline demo.

The files under `recordings/` are byte-for-byte copies of `shared/fixtures`
(public test recordings from MIT / Apache-2.0 repositories); `INDEX.json`
beside them gives each file's source repository, path, commit, license and
sha256. They are data only.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

_ROOT = Path(str(resources.files("llmrelay.testing").joinpath("recordings")))

CONTENT_TYPES = {
    ".sse": "text/event-stream",
    ".ndjson": "application/x-ndjson",
    ".json": "application/json",
    ".eventstream": "application/vnd.amazon.eventstream",
}


def recording_path(name: str) -> Path:
    path = (_ROOT / name).resolve()
    if _ROOT.resolve() not in path.parents or not path.is_file():
        raise FileNotFoundError(f"no bundled recording named {name!r}")
    return path


def read_recording(name: str) -> bytes:
    return recording_path(name).read_bytes()


def content_type_for(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


@functools.cache
def index() -> list[dict[str, Any]]:
    """Rows of `INDEX.json`: provenance and license of every recording."""
    return json.loads((_ROOT / "INDEX.json").read_text())


def all_recordings() -> list[str]:
    """Every bundled response body (request files excluded), HTTP error bodies included."""
    return sorted(
        str(p.relative_to(_ROOT))
        for p in _ROOT.rglob("*")
        if p.is_file() and p.suffix in CONTENT_TYPES and not p.name.endswith(".request.json") and p.name != "INDEX.json"
    )


def wire_recordings() -> list[str]:
    """Every bundled stream body (served with HTTP 200; request files and HTTP error bodies excluded)."""
    return [n for n in all_recordings() if status_for(n) == 200]


def status_for(name: str) -> int:
    """The HTTP status the recording was served with (200 for every stream; an error body keeps its own)."""
    for row in index():
        if row.get("file") == name:
            return int(row.get("status") or 200)
    return 200


def request_for(name: str) -> Any | None:
    """The recorded request body beside a response body, if the recording kept one."""
    stem = name.rsplit(".", 1)[0]
    path = _ROOT / f"{stem}.request.json"
    return json.loads(path.read_text()) if path.is_file() else None


#: Recording folder -> the provider profile whose protocol decodes it.
_FOLDER_PROVIDER = {
    "openai_chat": "openai",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral": "mistral",
    "openrouter": "openrouter",
    "together": "together",
    "openai_responses": "openai-responses",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
    "azure": "azure",
    "vertex": "vertex",
}


def provider_for(name: str) -> str:
    """The provider (profile name) to replay a bundled recording with."""
    folder, _, file = name.partition("/")
    if folder == "cohere":
        return "cohere-v1" if file.startswith("v1_") else "cohere"
    if folder == "bedrock":
        return "bedrock-invoke" if file.startswith("invoke_") else "bedrock"
    return _FOLDER_PROVIDER[folder]
