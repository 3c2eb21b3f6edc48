"""Secrets never reach a log, an exception or a trace: header, URL and text redaction.

Used by errors (every error of a call is scrubbed of the secrets the call knows), the log
store (rows and `files_dir` files) and tracing.

- `redact_headers(headers)`: `authorization`, `proxy-authorization`,
  `x-api-key`, `x-goog-api-key`, `api-key`, cookies, and any header whose
  name contains key, token, secret, auth, password, credential or signature
  get the value `[REDACTED]`.
- `redact_url(url)`: query parameters with such names (`?key=…`) and a
  password in the URL's user info.
- `Scrubber(secrets)`: replaces every occurrence of the given secrets (the
  call's API key, the values of redacted headers) in any text, plus strings
  shaped like well-known API keys (`sk-…`, `sk-ant-…`, `AIza…`, `gsk_…`,
  `xai-…`, `Bearer …`) wherever they appear.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
    "cookie", "set-cookie",
})
_SENSITIVE_WORDS = ("key", "token", "secret", "auth", "password", "passwd", "credential", "signature", "cookie")

#: Strings shaped like API keys or bearer tokens, redacted wherever they appear.
KEY_PATTERN = re.compile(
    r"(?:\bBearer\s+[A-Za-z0-9._~+/=-]{8,})"
    r"|(?:\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,})"
    r"|(?:\bAIza[0-9A-Za-z_-]{30,})"
    r"|(?:\bgsk_[A-Za-z0-9]{20,})"
    r"|(?:\bxai-[A-Za-z0-9]{20,})"
)

#: Every KEY_PATTERN match contains one of these: text without any of them skips the (slower) regex.
_KEY_MARKERS = ("Bearer", "sk-", "AIza", "gsk_", "xai-")


def _has_marker(value: str) -> bool:
    for marker in _KEY_MARKERS:
        if marker in value:
            return True
    return False


#: Shorter strings are not treated as secrets (too likely to occur by chance).
MIN_SECRET_LENGTH = 4


@functools.lru_cache(maxsize=1024)  # header names repeat: every logged row asks about the same few
def is_sensitive(name: str) -> bool:
    lower = name.lower()
    return lower in SENSITIVE_HEADERS or any(word in lower for word in _SENSITIVE_WORDS)


def redact_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {k: (REDACTED if is_sensitive(k) else v) for k, v in headers.items()}


def header_secrets(headers: Mapping[str, str] | None) -> list[str]:
    """The values a redacted header held (and the token after `Bearer `), to scrub elsewhere too."""
    out: list[str] = []
    for k, v in (headers or {}).items():
        if not isinstance(v, str) or not is_sensitive(k):
            continue
        out.append(v)
        scheme, _, token = v.partition(" ")
        if token and scheme.lower() in ("bearer", "basic", "token"):
            out.append(token.strip())
    return out


def redact_url(url: str | None) -> str | None:
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return KEY_PATTERN.sub(REDACTED, url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_sensitive(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_sensitive(k) else v) for k, v in pairs], safe="[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_dsn(dsn: str) -> str:
    """A database DSN fit for a warning: no password (URL or `password=` form)."""
    if "://" in dsn:
        return redact_url(dsn) or dsn
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1" + REDACTED, dsn, flags=re.I)


class Scrubber:
    """Replaces known secrets and key-shaped strings in text (and in JSON text)."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()):
        found: set[str] = set()
        for s in secrets:
            if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH:
                found.add(s)
                escaped = json.dumps(s, ensure_ascii=False)[1:-1]
                if escaped != s:
                    found.add(escaped)
                ascii_escaped = json.dumps(s)[1:-1]
                if ascii_escaped != s:
                    found.add(ascii_escaped)
        # longest first, so a secret that contains another is removed whole
        self.secrets = sorted(found, key=len, reverse=True)

    def text(self, value: str | None) -> str | None:
        if not value:
            return value
        for s in self.secrets:
            if s in value:
                value = value.replace(s, REDACTED)
        return KEY_PATTERN.sub(REDACTED, value) if _has_marker(value) else value

    def finds(self, value: str) -> bool:
        """Whether `text(value)` would change anything: a known secret or a key-shaped string occurs."""
        for s in self.secrets:
            if s in value:
                return True
        return _has_marker(value) and KEY_PATTERN.search(value) is not None

    def obj(self, value: Any) -> Any:
        """A JSON-like object with every string scrubbed (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.obj(v) for v in value]
        return value


def url_secrets(url: str | None) -> list[str]:
    """The password in a URL's user info and the values of sensitive query parameters (`?key=`)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out: list[str] = []
    if parts.password:
        import base64
        from urllib.parse import unquote

        out.append(parts.password)
        # what an HTTP library sends for it: `Authorization: Basic base64(user:password)`
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password)}".encode()
        out.append(base64.b64encode(pair).decode())
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if v and is_sensitive(k):
            out.append(v)
    return out


def request_secrets(api_key: str | None, headers: Mapping[str, str] | None = None, url: str | None = None,
                    *more: Mapping[str, str] | None) -> list[str]:
    """Every secret a request carries: its API key, sensitive header values, URL passwords and keys."""
    secrets = [api_key] if api_key else []
    for h in (headers, *more):
        secrets += header_secrets(h)
    secrets += url_secrets(url)
    return [s for s in secrets if isinstance(s, str)]


def scrub_error(error: BaseException, secrets: Iterable[str | None]) -> BaseException:
    """Remove the secrets from an exception's message, args and body (in place); returns it."""
    scrub = Scrubber(secrets)
    error.args = tuple(scrub.text(a) if isinstance(a, str) else a for a in error.args)
    for name in ("message", "body"):
        value = getattr(error, name, None)
        if value is not None:
            try:
                setattr(error, name, scrub.obj(value))
            except AttributeError:
                pass
    return error
