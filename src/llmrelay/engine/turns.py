"""`Turns`: what builds one call's model turns (the encoded request, the core) and sends them.

The drivers' `Run` (`llmrelay.stream.run`) is a `Turns`: one object for every call in flight, not two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..limits import DEFAULT_LIMITS
from ..timeouts import Timeouts
from .prepare import encode, protocol_module
from .turn import StreamCore

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["Turns"]


class Turns:
    """Builds one model turn for a driver (the encoded request, the core: `turn`) and sends it (`open`).

    The first turn reuses the request encoded (and so validated) when the stream was created."""

    __slots__ = ("transport", "timeouts", "first_call", "first_request", "prices", "max_line", "wire_body")

    def __init__(self, transport: Any, timeouts: Timeouts, first_call: Call, first_request: Any, prices: Any = None,
                 max_line: int | None = DEFAULT_LIMITS.max_line, wire_body: Any = None):
        self.max_line = max_line
        self.wire_body = wire_body
        self.transport = transport
        self.timeouts = timeouts
        self.first_call = first_call
        self.first_request = first_request
        self.prices = prices

    def turn(self, call: Call) -> StreamCore:
        module = protocol_module(call.provider.protocol)
        if call is self.first_call:
            request, self.first_request = self.first_request, None
        else:
            request = None
        if request is None:
            request = encode(call, self.wire_body)
        decoder = module.Decoder  # built by the core when the headers come
        if self.max_line != DEFAULT_LIMITS.max_line:  # (a client's own line limit: built now)
            decoder = decoder()
            decoder.limit(self.max_line)
        core = StreamCore(call, request, decoder)
        core.prices = self.prices
        core.timeouts = call.timeouts or self.timeouts
        return core

    def open(self, core: StreamCore) -> Any:
        """Send the turn's request: the open body (sync transport), or an awaitable of it (async)."""
        return self.transport.open(core.request, core.timeouts, core)  # the turn: its labels for errors
