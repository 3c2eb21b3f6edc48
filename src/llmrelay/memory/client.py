"""`MemoryClient`: a `Client` with one user's memory, the same four calls.

    chat = with_memory(client, user_id="alice")                  # a new Memory (SQLite in memory)
    chat = with_memory(client, "alice", memory)                  # a shared Memory / store
    with chat.stream("openai:gpt-4o", "What should I cook tonight?") as s:
        for text in s.text_stream: ...
    chat.flush()                                                 # wait for learning (tests, scripts)

On every call:

- the `search_memory` tool (bound to this user) is added to the caller's
  `tools=` (never replacing them: a caller tool with the same name is refused
  with `InvalidRequestError`), so the tool loop runs it mid-stream;
- with `inject=N` the N most relevant memories go into the system prompt first;
- with `Memory(reminders=...)` (on by default), the `schedule_task` tool is
  added too, and the user's tasks that are due are put in front of the model
  (`llmrelay.memory.tasks`);
- a per-call hook is added to the caller's `hooks=`. Its `on_call_end` writes
  the exchange (the user's last message, the assistant's turns after the
  request, the conversation's model) to the store's pending table and wakes
  the learning worker: one small write after the stream ended, never a model
  call. Calls whose status is not in `memory.learn_on` (default: aborted and
  failed ones) are not learned from, only counted in `not_learned`.

Extraction calls go through the wrapped client (not through memory, so they
are never learned from), tagged `{"llmrelay.memory": "extract"}`.

With `run_tools=False` (manual mode) the loop does not run `search_memory`
either: run it yourself with `chat.memory.tool()`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import InvalidRequestError
from ..observability.hooks import CallContext, Hooks
from ..messages import Message, normalize_messages
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .memory import Memory, UserMemory


def _reply_after(response: Any, n: int) -> str:
    """The assistant's text after the request's `n` messages: every turn, tool rounds included."""
    messages = getattr(response, "messages", None)
    if not messages:
        return response.text or ""
    texts = [m.text for m in messages[n:] if m.role == "assistant"]
    return "\n".join(t for t in texts if t)


def _model_of(ctx: CallContext, response: Any) -> str | None:
    """The conversation's model as an llmrelay model string: the one that answered, else the requested."""
    provider, model = getattr(response, "provider", None), getattr(response, "requested_model", None)
    if provider and model:
        return f"{provider}:{model}"
    requested = ctx.requested
    if isinstance(requested, (list, tuple)) and requested:
        requested = requested[0]
    return requested if isinstance(requested, str) else None


class _LearnHook(Hooks):
    """Per call: on `on_call_end`, queue the exchange (nothing else on the stream's thread)."""

    __slots__ = ("owner", "user_text", "n")

    def __init__(self, owner: MemoryClient, user_text: str, n: int):
        self.owner = owner
        self.user_text = user_text
        self.n = n

    def on_call_end(self, ctx: CallContext, response: Any, error: BaseException | None) -> None:
        owner = self.owner
        status = "error" if error is not None or response is None else response.status
        if status not in owner.memory_store.learn_on:
            owner.not_learned[status] = owner.not_learned.get(status, 0) + 1
            return
        owner.memory_store.submit(owner.user_id, self.user_text, _reply_after(response, self.n),
                                  client=owner.client, correlation_id=ctx.correlation_id, model=_model_of(ctx, response))


class MemoryClient:
    """A `Client` wrapper for one user (see the module docstring). `learn=False` only searches;
    `inject` overrides `memory.inject` for this client."""

    def __init__(self, client: Any, user_id: str, memory: Memory, *, learn: bool = True,
                 inject: int | None = None):
        if isinstance(client, MemoryClient):
            raise InvalidRequestError("this client already has memory (for user "
                                      f"{client.user_id!r}); wrap the underlying client instead")
        self.client = client
        self.memory_store = memory
        if self.memory_store.client is None:  # what learning extracts through (pending exchanges included)
            self.memory_store.client = client
        self.memory: UserMemory = self.memory_store.user(user_id)
        self.user_id = user_id
        self.learn = learn
        self.inject = self.memory_store.inject if inject is None else int(inject)
        self._tool = self.memory_store.tool(user_id)
        self._tools = [self._tool]
        if self.memory_store.reminders is not None:
            from .tasks import schedule_tool

            self._tools.append(schedule_tool(self.memory_store, user_id))
        #: Calls not learned from, by status ("aborted", "error"...).
        self.not_learned: dict[str, int] = {}

    # -- one call -----------------------------------------------------------------------------------
    def _prepare(self, messages: Any, params: dict[str, Any]) -> tuple[list[Message], dict[str, Any]]:
        msgs = normalize_messages(messages)
        user_text = next((m.text for m in reversed(msgs) if m.role == "user"), "")
        tools = params.get("tools")
        if tools:
            from ..tools.tool import as_tools

            mine = as_tools(tools)
            for tool in self._tools:
                if tool.name in mine:
                    raise InvalidRequestError(
                        f"a tool named {tool.name!r} was given, but memory adds its own {tool.name!r} tool; rename "
                        f"yours (or build the Memory with tool_name=... / reminders=None)")
            params["tools"] = [*mine.values(), *self._tools]
        else:
            params["tools"] = list(self._tools)
        if self.memory_store.reminders is not None:
            from .tasks import deliver

            msgs = deliver(self.memory_store, self.user_id, msgs)
        if self.inject and user_text:
            msgs = self.memory_store.inject_into(self.user_id, msgs, user_text, self.inject)
        if self.learn:
            hooks = params.get("hooks")
            params["hooks"] = [*(hooks or ()), _LearnHook(self, user_text, len(msgs))]
        return msgs, params

    def stream(self, model: Any, messages: Any, **params: Any) -> Any:
        msgs, params = self._prepare(messages, params)
        return self.client.stream(model, msgs, **params)

    def astream(self, model: Any, messages: Any, **params: Any) -> Any:
        msgs, params = self._prepare(messages, params)
        return self.client.astream(model, msgs, **params)

    def complete(self, model: Any, messages: Any, **params: Any) -> Any:
        msgs, params = self._prepare(messages, params)
        return self.client.complete(model, msgs, **params)

    async def acomplete(self, model: Any, messages: Any, **params: Any) -> Any:
        if self.inject:  # the injection search is store I/O: off the event loop
            msgs, params = await asyncio.to_thread(self._prepare, messages, params)
        else:
            msgs, params = self._prepare(messages, params)
        return await self.client.acomplete(model, msgs, **params)

    # -- learning ---------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the exchanges queued so far are learned (or failed). False on timeout."""
        return self.memory_store.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the learning queue and stop the worker (the wrapped client and the store stay open)."""
        return self.memory_store.worker.close(timeout)

    def forget(self) -> int:
        """Delete everything stored for this user."""
        return self.memory.forget()

    def __getattr__(self, name: str) -> Any:  # everything else of the Client (prepare, aclose...)
        if name.startswith("__") or name in ("client", "memory_store"):
            raise AttributeError(name)
        return getattr(self.client, name)

    def __repr__(self) -> str:
        return f"MemoryClient(user_id={self.user_id!r}, client={self.client!r})"
