"""Where logs go: the environment variables and the default SQLite path."""

from __future__ import annotations

import os
import sys
from typing import Mapping

#: `1` (default path), a SQLite path, or a `postgresql://` DSN; `0`/empty: off.
ENV_VAR = "LLMRELAY_LOG"
#: Also write request/response JSON files to this directory.
FILES_ENV_VAR = "LLMRELAY_LOG_FILES"

_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def default_path(env: Mapping[str, str] | None = None) -> str:
    """`$LLMRELAY_LOG_DIR/logs.db`, else the user data directory: `$XDG_DATA_HOME/llmrelay/logs.db`,
    `~/.local/share/llmrelay/logs.db` (Linux), `~/Library/Application Support/llmrelay/logs.db`
    (macOS), `%LOCALAPPDATA%\\llmrelay\\logs.db` (Windows)."""
    env = os.environ if env is None else env
    if env.get("LLMRELAY_LOG_DIR"):
        return os.path.join(os.path.expanduser(env["LLMRELAY_LOG_DIR"]), "logs.db")
    if env.get("XDG_DATA_HOME"):
        base = env["XDG_DATA_HOME"]
    elif sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or env.get("APPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Application Support")
    else:
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "llmrelay", "logs.db")


def _is_dsn(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))
