"""The `api_key=` a caller gave a cloud provider, as that cloud's own auth object."""

from __future__ import annotations

from typing import Any, TypeVar

from ..errors import InvalidRequestError

__all__ = ["given_auth"]

T = TypeVar("T")


def given_auth(explicit: Any, cls: type[T], text: str, call: str | None, expected: str) -> T:
    """`explicit` itself when it is a `cls`; a string in the field `text`; a callable in the field `call`
    (where the cloud takes one); nothing: `cls()`. Anything else: InvalidRequestError("`expected`, got <type>")."""
    if isinstance(explicit, cls):
        return explicit
    if isinstance(explicit, str):
        return cls(**{text: explicit})
    if call is not None and callable(explicit):
        return cls(**{call: explicit})
    if explicit is None:
        return cls()
    raise InvalidRequestError(f"{expected}, got {type(explicit).__name__}")
