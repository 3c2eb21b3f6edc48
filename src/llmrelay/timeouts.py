"""Timeout settings (seconds; None disables one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timeouts:
    #: Establishing the TCP/TLS connection.
    connect: float | None = 10.0
    #: From sending the request to the response headers.
    first_byte: float | None = 120.0
    #: From sending the request to the first content (text, reasoning, tool call):
    #: catches streams that answer headers and keep-alives but no tokens. Off by default.
    first_token: float | None = None
    #: Longest silence between two chunks of the body.
    idle: float | None = 60.0
    #: The whole call; checked between chunks and bounding every read.
    total: float | None = None
    #: Sending the request body.
    write: float | None = 30.0

    @classmethod
    def of(cls, value: Timeouts | float | int | None) -> Timeouts:
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls()
        v = float(value)
        return cls(connect=min(v, 10.0), first_byte=v, idle=v, total=None, write=v)
