"""The gateway's configuration: a YAML file, validated at load, every error naming its line.

    models:
      gpt-4o:                                 # the name clients send as "model"
        targets:                              # one or more llmrelay targets
          - model: openai:gpt-4o
            api_key: os.environ/OPENAI_API_KEY    # or ${OPENAI_API_KEY}
            weight: 3
          - model: openai:gpt-4o
            base_url: https://eu.example.com/v1
            api_key: ${EU_KEY}
            weight: 1
        retries: 2                            # per target, before any content (default 1)
        fallbacks: [claude]                   # other aliases, tried in order when every target failed
        fallback_mode: prefill                # prefill | user_turn | restart | none
        timeout: {first_byte: 60, idle: 30}   # llmrelay.Timeouts fields, or a number
      claude:
        model: anthropic:claude-sonnet-4-5    # shorthand for one target
    keys:                                     # no keys section: the gateway is open (a warning says so)
      - name: team-a
        key_hash: sha256:9f86d0...            # or key: ${TEAM_A_KEY} (hashed at load, never kept)
        models: [gpt-4o]                      # default: every model
        expires: 2027-01-01
        max_parallel: 20                      # requests in flight for this key
        rpm: 600                              # requests per minute
        budget: {tokens: 1000000, usd: 25, period: day}   # per period: hour | day | week | month (UTC) | total | seconds
                                              # (+ default_max_tokens: 4096, the output estimate without max_tokens)
    limits:                                   # optional: share max_parallel and rpm across workers and replicas
      store: redis://127.0.0.1:6379/0         # or ${REDIS_URL}; needs the redis extra. No limits section: per process
      prefix: "llmrelay:limits:"              # Redis key prefix (one per deployment that shares the counts)
      on_store_error: local                   # Redis unreachable: local (per-process limits) | open | closed (503)
      timeout: 0.5                            # seconds for each Redis command (connect, read): no request waits longer
      lease: 60                               # an in-flight slot expires this long after its process stops renewing it
    logging: gateway.db                       # a SQLite path, a postgresql:// DSN, or false (default)
    server:
      on_client_disconnect: cancel            # or drain (read the upstream to the end, for the log row)
      keepalive: 10                           # SSE comment every N s of silence (0: off)
      keepalive_grace: 2                      # ... only after this long without a byte, so early errors keep their status
      max_body_bytes: 8388608
      cors: false                             # or a list of allowed origins
      overhead_header: true
      otel: false                             # OpenTelemetry spans (needs the otel extra)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConfigError", "Target", "Route", "Key", "Budget", "ServerOptions", "LimitsOptions", "GatewayConfig", "load", "parse",
           "hash_key"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MODES = ("prefill", "user_turn", "restart", "none")
_TIMEOUT_FIELDS = ("connect", "first_byte", "first_token", "idle", "total", "write")
_STORE_ERRORS = ("local", "open", "closed")
PERIODS = ("hour", "day", "week", "month", "total")
MAX_USD = 1_000_000.0  # counted in nano-USD integers: exact below 2**53


class ConfigError(ValueError):
    """A configuration problem; `line` is the YAML line (1-based) when known."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None):
        self.line = line
        self.path = path
        where = f"{path or 'config'}" + (f", line {line}" if line else "")
        super().__init__(f"{where}: {message}")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    model: str  # provider:model as llmrelay reads it
    base_url: str | None = None
    api_key: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Route:
    name: str
    targets: tuple[Target, ...]
    retries: int = 1
    fallbacks: tuple[str, ...] = ()
    fallback_mode: str = "prefill"
    timeout: Any = None  # a dict of Timeouts fields, a number, or None


@dataclass(frozen=True)
class Budget:
    """What a key may spend per period (gateway/budget.py): tokens (input + output), USD, or both."""

    period: str | int  # hour | day | week | month (calendar, UTC) | total (never resets) | seconds (epoch-aligned)
    tokens: int | None = None
    usd: float | None = None
    default_max_tokens: int = 4096  # the output estimate of a request that sets no max_tokens


@dataclass(frozen=True)
class Key:
    name: str
    key_hash: str
    models: frozenset[str] | None = None  # None: all
    expires: _dt.datetime | None = None
    max_parallel: int | None = None
    rpm: int | None = None
    budget: Budget | None = None


@dataclass(frozen=True)
class ServerOptions:
    on_client_disconnect: str = "cancel"
    keepalive: float = 0.0
    keepalive_grace: float = 2.0
    max_body_bytes: int = 8 * 1024 * 1024
    cors: tuple[str, ...] = ()
    overhead_header: bool = True
    otel: bool = False


@dataclass(frozen=True)
class LimitsOptions:
    """Where the keys' max_parallel and rpm are counted when several processes serve (gateway/limits.py)."""

    store: str  # redis://, rediss:// or unix:// URL
    prefix: str = "llmrelay:limits:"
    on_store_error: str = "local"  # local | open | closed
    timeout: float = 0.5
    lease: float = 60.0


@dataclass(frozen=True)
class GatewayConfig:
    routes: dict[str, Route]
    keys: dict[str, Key] = field(default_factory=dict)  # by hash
    logging: str | None = None
    server: ServerOptions = ServerOptions()
    path: str | None = None
    warnings: tuple[str, ...] = ()
    limits: LimitsOptions | None = None  # None: each process counts on its own

    @property
    def open(self) -> bool:
        return not self.keys


def load(path: str, env: dict[str, str] | None = None) -> GatewayConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc}", path=path) from None
    return parse(text, path=path, env=env)


def parse(text: str, *, path: str | None = None, env: dict[str, str] | None = None) -> GatewayConfig:
    try:
        import yaml
    except ImportError:  # pragma: no cover - the gateway extra installs it
        raise ConfigError("reading the config needs PyYAML: pip install 'llmrelay[gateway]'", path=path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None, path) from None
    return _Reader(path, os.environ if env is None else env).config(root)


class _Reader:
    """Walks the YAML node tree (not plain data) so every error can name its line."""

    def __init__(self, path: str | None, env: Any):
        self.path = path
        self.env = env
        self.warnings: list[str] = []

    def fail(self, node: Any, message: str) -> ConfigError:
        return ConfigError(message, node.start_mark.line + 1 if node is not None else None, self.path)

    # -- node helpers ------------------------------------------------------------------
    def mapping(self, node: Any, what: str) -> dict[str, tuple[Any, Any]]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[Any, Any]] = {}
        for k, v in node.value:
            key = self.scalar(k, f"a key of {what}")
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise self.fail(k, f"{what}: {key!r} appears twice")
            out[key] = (k, v)
        return out

    def scalar(self, node: Any, what: str) -> Any:
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        value = yaml.SafeLoader(" ").construct_object(node) if node.tag != "tag:yaml.org,2002:str" else node.value
        if isinstance(value, str):
            value = self.expand(node, value)
        return value

    def expand(self, node: Any, value: str) -> str:
        if value.startswith("os.environ/"):
            name = value[len("os.environ/"):]
            if name not in self.env:
                raise self.fail(node, f"environment variable {name} is not set")
            return self.env[name]

        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in self.env:
                raise self.fail(node, f"environment variable {m.group(1)} is not set")
            return self.env[m.group(1)]

        return _ENV.sub(sub, value)

    def seq(self, node: Any, what: str) -> list[Any]:
        import yaml

        if isinstance(node, yaml.ScalarNode):
            return [node]
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def typed(self, node: Any, what: str, kind: Any, minimum: float | None = None) -> Any:
        value = self.scalar(node, what)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.fail(node, f"{what} must be {'a number' if kind is float else kind.__name__}, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(node, f"{what} must be at least {minimum}, got {value!r}")
        return value

    def unknown(self, fields: dict[str, Any], known: tuple[str, ...], what: str) -> None:
        for name, (k, _) in fields.items():
            if name not in known:
                raise self.fail(k, f"{what}: unknown field {name!r} (known: {', '.join(known)})")

    # -- sections ----------------------------------------------------------------------
    def config(self, root: Any) -> GatewayConfig:
        if root is None:
            raise ConfigError("the file is empty: it needs at least a models section", None, self.path)
        top = self.mapping(root, "the config")
        self.unknown(top, ("models", "keys", "logging", "server", "limits"), "the config")
        if "models" not in top:
            raise self.fail(root, "a models section is required")
        routes = {name: self.route(name, k, v) for name, (k, v) in self.mapping(top["models"][1], "models").items()}
        if not routes:
            raise self.fail(top["models"][1], "models is empty")
        for route in routes.values():
            node = top["models"][1]
            for fb in route.fallbacks:
                if fb not in routes:
                    raise self.fail(node, f"model {route.name!r}: fallback {fb!r} is not a model of this config")
                if fb == route.name:
                    raise self.fail(node, f"model {route.name!r} lists itself as a fallback")
        keys: dict[str, Key] = {}
        if "keys" in top:
            for item in self.seq(top["keys"][1], "keys"):
                key = self.key(item)
                if key.key_hash in keys:
                    raise self.fail(item, f"key {key.name!r}: the same key is configured twice")
                for m in key.models or ():
                    if m not in routes:
                        raise self.fail(item, f"key {key.name!r}: model {m!r} is not a model of this config")
                keys[key.key_hash] = key
        else:
            self.warnings.append("no keys section: the gateway accepts every request without a key")
        if "limits" not in top and any(k.budget is not None for k in keys.values()):
            self.warnings.append("budgets without a limits store are counted by each process on its own, from zero at "
                                 "every start: with --workers N or replicas a key gets N times its budget")
        logging = None
        if "logging" in top:
            value = self.scalar(top["logging"][1], "logging")
            if value is True:
                logging = ""  # llmrelay's default SQLite file
            elif value not in (False, None):
                if not isinstance(value, str):
                    raise self.fail(top["logging"][1], "logging must be a path, a postgresql:// DSN, true or false")
                logging = value
        server = self.server(top["server"][1]) if "server" in top else ServerOptions()
        limits = self.limits(top["limits"][1]) if "limits" in top else None
        return GatewayConfig(routes, keys, logging, server, self.path, tuple(self.warnings), limits)

    def route(self, name: str, key_node: Any, node: Any) -> Route:
        f = self.mapping(node, f"model {name!r}")
        self.unknown(f, ("model", "targets", "base_url", "api_key", "retries", "fallbacks", "fallback_mode", "timeout"),
                     f"model {name!r}")
        if ("model" in f) == ("targets" in f):
            raise self.fail(node, f"model {name!r}: give either model: provider:model or a targets list")
        if "model" in f:
            targets = (self.target(name, node, f),)
        else:
            targets = tuple(self.target(name, t, self.target_fields(name, t))
                            for t in self.seq(f["targets"][1], f"model {name!r}: targets"))
            if not targets:
                raise self.fail(f["targets"][1], f"model {name!r}: targets is empty")
        retries = self.typed(f["retries"][1], "retries", int, 0) if "retries" in f else 1
        fallbacks = tuple(str(self.scalar(n, "a fallback")) for n in self.seq(f["fallbacks"][1], "fallbacks")) \
            if "fallbacks" in f else ()
        mode = self.scalar(f["fallback_mode"][1], "fallback_mode") if "fallback_mode" in f else "prefill"
        if mode not in _MODES:
            raise self.fail(f["fallback_mode"][1], f"fallback_mode must be one of {', '.join(_MODES)}, got {mode!r}")
        timeout = self.timeout(f["timeout"][1]) if "timeout" in f else None
        return Route(name, targets, retries, fallbacks, mode, timeout)

    def target_fields(self, route: str, node: Any) -> dict[str, Any]:
        f = self.mapping(node, f"a target of {route!r}")
        self.unknown(f, ("model", "base_url", "api_key", "weight"), f"a target of {route!r}")
        return f

    def target(self, route: str, node: Any, f: dict[str, Any]) -> Target:
        from ..engine.prepare import Settings, resolve_model
        from ..errors import LLMRelayError
        from ..providers import PROVIDERS

        if "model" not in f:
            raise self.fail(node, f"a target of {route!r} needs model: provider:model")
        model = self.scalar(f["model"][1], "model")
        if not isinstance(model, str):
            raise self.fail(f["model"][1], f"model must be provider:model, got {model!r}")
        try:
            resolve_model(Settings(PROVIDERS, {}, {}, {}), model)
        except LLMRelayError as exc:
            raise self.fail(f["model"][1], str(exc).splitlines()[0]) from None
        base_url = self.scalar(f["base_url"][1], "base_url") if "base_url" in f else None
        api_key = self.scalar(f["api_key"][1], "api_key") if "api_key" in f else None
        weight = self.typed(f["weight"][1], "weight", float, 0) if "weight" in f else 1.0
        return Target(model, base_url, api_key, weight)

    def timeout(self, node: Any) -> Any:
        import yaml

        if isinstance(node, yaml.ScalarNode):
            return self.typed(node, "timeout", float, 0)
        f = self.mapping(node, "timeout")
        self.unknown(f, _TIMEOUT_FIELDS, "timeout")
        return {k: (None if self.scalar(v, k) is None else self.typed(v, k, float, 0)) for k, (_, v) in f.items()}

    def key(self, node: Any) -> Key:
        f = self.mapping(node, "a key")
        self.unknown(f, ("name", "key", "key_hash", "models", "expires", "max_parallel", "rpm", "budget"), "a key")
        name = str(self.scalar(f["name"][1], "name")) if "name" in f else "key"
        if ("key" in f) == ("key_hash" in f):
            raise self.fail(node, f"key {name!r}: give exactly one of key (hashed at load) or key_hash")
        if "key" in f:
            raw = self.scalar(f["key"][1], "key")
            if not isinstance(raw, str) or not raw:
                raise self.fail(f["key"][1], f"key {name!r}: the key must be a non-empty string")
            digest = hash_key(raw)
        else:
            digest = str(self.scalar(f["key_hash"][1], "key_hash"))
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise self.fail(f["key_hash"][1], f"key {name!r}: key_hash must be sha256:<64 hex digits> "
                                                  "(python -c 'import llmrelay.gateway.config as c; print(c.hash_key(\"...\"))')")
        models = frozenset(str(self.scalar(n, "a model")) for n in self.seq(f["models"][1], "models")) \
            if "models" in f else None
        expires = None
        if "expires" in f:
            value = self.scalar(f["expires"][1], "expires")
            if isinstance(value, _dt.datetime):
                expires = value
            elif isinstance(value, _dt.date):
                expires = _dt.datetime(value.year, value.month, value.day)
            else:
                try:
                    expires = _dt.datetime.fromisoformat(str(value))
                except ValueError:
                    raise self.fail(f["expires"][1], f"key {name!r}: expires must be a date, got {value!r}") from None
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=_dt.timezone.utc)
        max_parallel = self.typed(f["max_parallel"][1], "max_parallel", int, 1) if "max_parallel" in f else None
        rpm = self.typed(f["rpm"][1], "rpm", int, 1) if "rpm" in f else None
        budget = self.budget(name, f["budget"][1]) if "budget" in f else None
        return Key(name, digest, models, expires, max_parallel, rpm, budget)

    def budget(self, name: str, node: Any) -> Budget:
        what = f"key {name!r}: budget"
        f = self.mapping(node, what)
        self.unknown(f, ("tokens", "usd", "period", "default_max_tokens"), what)
        if "tokens" not in f and "usd" not in f:
            raise self.fail(node, f"{what} needs tokens: N, usd: X or both")
        if "period" not in f:
            raise self.fail(node, f"{what} needs period: {' | '.join(PERIODS)} | a number of seconds")
        p = self.scalar(f["period"][1], "period")
        if not (p in PERIODS or isinstance(p, int) and not isinstance(p, bool) and p >= 1):
            raise self.fail(f["period"][1], f"{what}: period must be one of {', '.join(PERIODS)} or a whole number of "
                                            f"seconds >= 1, got {p!r}")
        kw: dict[str, Any] = {"period": p}
        if "tokens" in f:
            kw["tokens"] = self.typed(f["tokens"][1], f"{what} tokens", int, 1)
        if "usd" in f:
            kw["usd"] = self.typed(f["usd"][1], f"{what} usd", float, 0.000001)
            if kw["usd"] > MAX_USD:
                raise self.fail(f["usd"][1], f"{what} usd must be at most {MAX_USD:.0f}, got {kw['usd']!r}")
        if "default_max_tokens" in f:
            kw["default_max_tokens"] = self.typed(f["default_max_tokens"][1], "default_max_tokens", int, 1)
        return Budget(**kw)

    def limits(self, node: Any) -> LimitsOptions:
        import importlib.util

        f = self.mapping(node, "limits")
        self.unknown(f, ("store", "prefix", "on_store_error", "timeout", "lease"), "limits")
        if "store" not in f:
            raise self.fail(node, "limits needs store: redis://host:port/db")
        store = self.scalar(f["store"][1], "store")
        if not isinstance(store, str) or not re.match(r"(redis|rediss|unix)://", store):
            raise self.fail(f["store"][1], f"limits: store must be a redis://, rediss:// or unix:// URL, got {store!r}")
        if importlib.util.find_spec("redis") is None:
            raise self.fail(f["store"][1], "limits: store needs the redis package: pip install 'llmrelay[redis]'")
        kw: dict[str, Any] = {"store": store}
        if "prefix" in f:
            kw["prefix"] = str(self.scalar(f["prefix"][1], "prefix"))
        if "on_store_error" in f:
            v = self.scalar(f["on_store_error"][1], "on_store_error")
            if v not in _STORE_ERRORS:
                raise self.fail(f["on_store_error"][1], f"on_store_error must be one of {', '.join(_STORE_ERRORS)}, "
                                                        f"got {v!r}")
            kw["on_store_error"] = v
        if "timeout" in f:
            kw["timeout"] = self.typed(f["timeout"][1], "timeout", float, 0.001)
        if "lease" in f:  # renewed every lease/3 s: not a busy loop
            kw["lease"] = self.typed(f["lease"][1], "lease", float, 1)
        return LimitsOptions(**kw)

    def server(self, node: Any) -> ServerOptions:
        f = self.mapping(node, "server")
        known = ("on_client_disconnect", "keepalive", "keepalive_grace", "max_body_bytes", "cors", "overhead_header", "otel")
        self.unknown(f, known, "server")
        kw: dict[str, Any] = {}
        if "on_client_disconnect" in f:
            v = self.scalar(f["on_client_disconnect"][1], "on_client_disconnect")
            if v not in ("cancel", "drain"):
                raise self.fail(f["on_client_disconnect"][1], f"on_client_disconnect must be cancel or drain, got {v!r}")
            kw["on_client_disconnect"] = v
        for name in ("keepalive", "keepalive_grace"):
            if name in f:
                kw[name] = self.typed(f[name][1], name, float, 0)
        if "max_body_bytes" in f:
            kw["max_body_bytes"] = self.typed(f["max_body_bytes"][1], "max_body_bytes", int, 1)
        for name in ("overhead_header", "otel"):
            if name in f:
                kw[name] = self.typed(f[name][1], name, bool)
        if "cors" in f:
            import yaml

            node = f["cors"][1]
            if isinstance(node, yaml.ScalarNode):
                v = self.scalar(node, "cors")
                kw["cors"] = ("*",) if v is True else () if v in (False, None) else (str(v),)
            else:
                kw["cors"] = tuple(str(self.scalar(n, "an origin")) for n in self.seq(node, "cors"))
        return ServerOptions(**kw)
