"""Secrets never reach a log: the redaction helpers live in `llmrelay.redact` (errors use them
too); this module keeps the old import path."""

from ..redact import (
    KEY_PATTERN,
    MIN_SECRET_LENGTH,
    REDACTED,
    SENSITIVE_HEADERS,
    Scrubber,
    header_secrets,
    is_sensitive,
    redact_dsn,
    redact_headers,
    redact_url,
)

__all__ = ["KEY_PATTERN", "MIN_SECRET_LENGTH", "REDACTED", "SENSITIVE_HEADERS", "Scrubber", "header_secrets",
           "is_sensitive", "redact_dsn", "redact_headers", "redact_url"]
