"""Request correlation: which request, which conversation and which end user a gateway request belongs to.

    x-request-id / x-correlation-id     -> the call's correlation_id (log rows, OpenTelemetry spans);
                                           generated when absent; echoed as `x-request-id` (and
                                           `request-id` on /v1/messages, where the Anthropic SDK reads it)
    x-llmrelay-conversation-id          -> the call's conversation_id (`llmrelay logs --conversation`)
    body `user` / `safety_identifier`   -> the log tag `gateway_user`
      (OpenAI Chat, Responses), `metadata.user_id` (Anthropic)

Ids are 1-128 visible ASCII characters (0x21-0x7E), a user at most 256 printable
characters; anything else is a 400 in the protocol's error shape. An id given by a
client is not trusted to be unique: while a request with the same id is in flight in
this process, the new one gets `<id>-2`, `<id>-3`... (the log and trace hooks keep a
call's state by its correlation id, so two live calls must never share one). The
echoed header says which id the log rows carry.
"""

from __future__ import annotations

from random import getrandbits
from typing import Any

from .encode import GatewayError

__all__ = ["request_id", "apply", "CONVERSATION_HEADER"]

CONVERSATION_HEADER = "x-llmrelay-conversation-id"
MAX_ID = 128
MAX_USER = 256


def _bad_id(value: str) -> bool:
    return not (0 < len(value) <= MAX_ID and value.isascii() and value.isprintable()) or " " in value


def request_id(headers: dict[str, str], live: set[str]) -> tuple[str, bool]:
    """(the correlation id of this request, whether the client gave it); raises GatewayError(400)."""
    name = "x-request-id"
    value = headers.get(name)
    if value is None:
        name = "x-correlation-id"
        value = headers.get(name)
        if value is None:
            return "%032x" % getrandbits(128), False  # the library's own format
    if _bad_id(value):
        raise GatewayError(400, f"the {name} header must be 1-{MAX_ID} visible ASCII characters (no spaces), "
                                f"got {value[:40]!r}{'...' if len(value) > 40 else ''}")
    if value in live:
        n = 2
        while f"{value}-{n}" in live:
            n += 1
        value = f"{value}-{n}"
    return value, True


def apply(inbound: Any, headers: dict[str, str], correlation_id: str | None) -> None:
    """Put the request's ids into the llmrelay call's arguments (`inbound.kwargs`); raises GatewayError(400)."""
    kw = inbound.kwargs
    if correlation_id is not None:
        kw["correlation_id"] = correlation_id
    conversation = headers.get(CONVERSATION_HEADER)
    if conversation is not None:
        if _bad_id(conversation):
            raise GatewayError(400, f"the {CONVERSATION_HEADER} header must be 1-{MAX_ID} visible ASCII characters "
                                    f"(no spaces), got {conversation[:40]!r}")
        kw["conversation_id"] = conversation
    body = inbound.body
    if inbound.protocol == "anthropic":
        meta = body.get("metadata")
        user = meta.get("user_id") if isinstance(meta, dict) else None
        field = "metadata.user_id"
    else:
        user = body.get("user")
        field = "user"
        if user is None:
            user = body.get("safety_identifier")
            field = "safety_identifier"
    if user is not None and user != "":  # an empty user is no user (some clients send one)
        if not isinstance(user, str) or not 0 < len(user) <= MAX_USER or not user.isprintable():
            raise GatewayError(400, f"{field} must be a string of 1-{MAX_USER} printable characters")
        kw["tags"] = {"gateway_user": user}
