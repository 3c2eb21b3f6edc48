"""The command line's own settings: a default model, aliases and stored API keys.

Two small JSON files in the user config directory (`$LLMRELAY_CONFIG_DIR`, else
`$XDG_CONFIG_HOME/llmrelay`, `~/.config/llmrelay` on Linux,
`~/Library/Application Support/llmrelay` on macOS, `%APPDATA%\\llmrelay` on Windows):

- `config.json`: `{"default_model": "openai:gpt-4o-mini", "aliases": {"fast": "groq:..."}}`
  (an alias may also name a list of models: a cascade).
- `keys.json`: `{"openai": "sk-..."}`, created readable and writable by its owner
  only (0600), rewritten the same way.

Only the CLI reads them: the library (`import llmrelay`, `Client`) never does.
A stored key is used only when none of the provider's environment variables is
set (env vars win), and `--key` wins over both.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

CONFIG_ENV = "LLMRELAY_CONFIG_DIR"


class ConfigError(Exception):
    """A settings file that cannot be read or written (the message says which and why)."""


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        base = Path(env["XDG_CONFIG_HOME"])
    elif sys.platform == "win32":
        base = Path(env.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".config"
    return base / "llmrelay"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / "config.json"


def keys_path(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / "keys.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def _write(path: Path, data: Mapping[str, Any], *, private: bool = False) -> None:
    """Write atomically (a temporary file renamed over the old one); `private`: mode 0600."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
            if not private:
                os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        if private:
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- config.json: default model and aliases ------------------------------------------------


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    data = _read(config_path(env))
    aliases = data.get("aliases")
    if aliases is not None and not isinstance(aliases, dict):
        raise ConfigError(f"{config_path(env)}: \"aliases\" must be an object")
    return data


def save_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Path:
    path = config_path(env)
    _write(path, data)
    return path


def default_model(env: Mapping[str, str] | None = None) -> str | None:
    model = load_config(env).get("default_model")
    return model if isinstance(model, str) and model else None


def aliases(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return dict(load_config(env).get("aliases") or {})


# -- keys.json -----------------------------------------------------------------------------------


def load_keys(env: Mapping[str, str] | None = None) -> dict[str, str]:
    path = keys_path(env)
    data = _read(path)
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and v}


def save_keys(keys: Mapping[str, str], env: Mapping[str, str] | None = None) -> Path:
    path = keys_path(env)
    _write(path, dict(keys), private=True)
    return path


def stored_keys_for_client(providers: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stored keys to hand to `Client(api_keys=...)`: only for providers whose key no
    environment variable already gives (the environment wins, as the library resolves it)."""
    from ..errors import MissingAPIKeyError
    from ..providers import resolve_api_key

    env = os.environ if env is None else env
    out = {}
    for name, key in load_keys(env).items():
        provider = providers.get(name)
        if provider is None:
            continue
        try:
            from_env = resolve_api_key(provider, None, env)
        except MissingAPIKeyError:
            from_env = None
        token = any(env.get(var) for var in getattr(provider, "token_env", ()))  # e.g. ANTHROPIC_AUTH_TOKEN
        if not from_env and not token:
            out[name] = key
    return out


def mask(key: str) -> str:
    """`sk-...a1b2`: enough to tell keys apart, never the key."""
    return key[:3] + "..." + key[-4:] if len(key) > 12 else "*" * len(key)
