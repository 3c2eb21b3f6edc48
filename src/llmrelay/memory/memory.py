"""`Memory`: a store, scoped per user, with the `search_memory` tool and background learning.

    memory = Memory(SQLiteMemoryStore("memory.db"), extract_model="openai:gpt-4o-mini")
    chat = memory.wrap(client, user_id="alice")          # or with_memory(client, "alice", memory)
    for text in chat.stream("anthropic:claude-sonnet-4-5", "Where do I live again?").text_stream:
        ...
    memory.add_text("alice", "The user is vegetarian.")
    memory.search("alice", "food preferences")           # [Hit(...)]
    memory.forget("alice")                               # every row of alice, gone

Every method takes the `user_id` first and only ever reads or writes that
user's rows (`memory.user("alice")` binds it). The `search_memory(query, tier)`
tool built by `tool(user_id)` is bound to one user: the model cannot choose
whose memory it reads. Tiers: "fast" (few results), "balanced", "deep" (the
store also follows the knowledge graph from the entities named in the query);
the counts are the store's (SQLite/Postgres: 3, 8, 8 + up to 8 graph hits) unless
`limits={"fast": 2, ...}` sets them.

`inject=N` (0: off, the default) also adds the N memories most relevant to the
last user message to the system prompt before the call (a "fast" search on the
caller's thread: it adds the search's time to time to first token).

Learning (`llmrelay.memory.learn`) runs on a background `Worker`: each exchange is
first written to the store's `pending` table (`submit`), so nothing is lost to a
burst, a crash or a missing `close()`; `flush()` waits for the worker, `close()`
drains it (and closes the store when Memory created it), `stats` counts outcomes,
`on_event` / `subscribe(fn)` receive every `MemoryEvent`. `learn_on` lists the
response statuses learned from (default ok and truncated: aborted and failed
streams are not). `forget(user_id)` also deletes that user's exchanges still
pending, so nothing learned before it is written after it.

Embeddings: by default (`embedder=AUTO`) the store uses the local all-MiniLM-L6-v2
embedder when the `memory-local` extra and its weights are installed (hybrid
search: paraphrases are found), else keyword search; `embedder=None` forces
keyword-only search.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from functools import partial
from typing import Any, Callable, Iterable, Sequence

from ..errors import InvalidRequestError
from ..messages import Message, TextPart
from .embed import AUTO
from .learn import LearnError, LearnResult, Learner, SalienceGate, _similarity
from .types import Entity, Fact, Hit, MemoryStore, NewFact, Relation, Tier, check_user
from .types import PendingExchange
from .worker import MemoryEvent, MemoryStats, Worker

TIERS: tuple[str, ...] = ("fast", "balanced", "deep")
TOOL_NAME = "search_memory"
TOOL_DESCRIPTION = (
    "Search what you remember about the user from earlier conversations (their facts, preferences, "
    "people, plans). Use it whenever the answer may depend on something the user told you before. "
    "tier: 'fast' for a few best matches, 'balanced' (default), 'deep' to also follow related people, "
    "places and things (slower)."
)
INJECT_HEADER = "What you remember about the user from earlier conversations (may be outdated):"
_STRIPES = 64
_CLIENTS_KEPT = 1024


def format_hits(hits: Sequence[Hit], *, dates: bool = True) -> str:
    """The text the `search_memory` tool returns to the model."""
    if not hits:
        return "No stored memories match this query."
    lines = ["Memories about the user, most relevant first:"]
    seen: set[tuple[str, str, str]] = set()
    for i, h in enumerate(hits, 1):
        when = time.strftime(" (noted %Y-%m-%d)", time.gmtime(h.fact.created_at)) if dates and h.fact.created_at else ""
        lines.append(f"{i}. {h.fact.text}{when}")
        for r in h.related:
            key = (r.subject, r.predicate, r.object)
            if key not in seen:
                seen.add(key)
                lines.append(f"   related: {r.subject} {r.predicate} {r.object}")
    return "\n".join(lines)


class Memory:
    """See the module docstring.

    - `store`: any `MemoryStore` (default: `SQLiteMemoryStore(path, embedder=embedder)`, created
      on first use and closed by `close()`); `embedder` is the store's, for hybrid search
      (default `AUTO`: the local embedder when installed; None: keyword search only).
    - `extract_model` (default None: the model of the conversation the exchange came from; "openai:
      gpt-4o-mini" for `learn()` without one), `extract_params` (extra arguments of the extraction
      call), `gate` (True: the default `SalienceGate`; False: none; or your own, e.g.
      `SalienceGate(embedder=...)`); or a whole `learner=Learner(...)` instead of these three.
    - `learn_on`: response statuses learned from; `inject`: memories put in the system prompt
      (0: off); `limits`: results per tier; `tool_name`: the tool's name.
    - `concurrency`, `on_event`, `retries`, `lease`, `curate_every` (seconds; None: curation only
      when `curate()` is called), `curate_options`: the background `Worker`.
    - `reminders`: the `schedule_task` tool and the delivery of due tasks ("system": as a system
      message, "tool": as a tool result, None: off); see `llmrelay.memory.tasks`.
    - `client`: what extraction goes through when the exchange did not come with one (a
      `with_memory` client sets it); memory never builds a client of its own.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        path: str = ":memory:",
        embedder: Any = AUTO,
        extract_model: str | None = None,
        learner: Learner | None = None,
        gate: SalienceGate | None | bool = True,
        extract_params: dict[str, Any] | None = None,
        learn_on: Iterable[str] = ("ok", "truncated"),
        inject: int = 0,
        limits: dict[str, int] | None = None,
        tool_name: str = TOOL_NAME,
        concurrency: int = 1,
        on_event: Callable[[MemoryEvent], Any] | None = None,
        client: Any = None,
        retries: int = 0,
        lease: float = 300.0,
        curate_every: float | None = 3600.0,
        curate_options: dict[str, Any] | None = None,
        reminders: str | None = "system",
    ):
        if reminders not in ("system", "tool", None):
            raise ValueError(f"reminders must be 'system', 'tool' or None, got {reminders!r}")
        self._store = store
        self._owns_store = store is None
        self._path, self._embedder = path, embedder
        if learner is None:
            if gate is True:
                gate = SalienceGate(embedder=None)
            learner = Learner(model=extract_model, gate=gate or None, params=dict(extract_params or {}))
        self.learner = learner
        self.learn_on = frozenset(learn_on)
        self.inject = int(inject or 0)
        self.limits: dict[str, int] = dict(limits or {})
        self.tool_name = tool_name
        #: The client extraction calls go through when the exchange did not come from one (`learn()`).
        self.client = client
        self.reminders = reminders
        self.curate_options: dict[str, Any] = dict(curate_options or {})
        self.worker = Worker(self, concurrency=concurrency, on_event=on_event, retries=retries, lease=lease,
                             curate_every=curate_every)
        self._clients: dict[int, Any] = {}  # pending id -> the client of the call it came from (bounded)
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- the store ------------------------------------------------------------------------------------
    @property
    def store(self) -> MemoryStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from .sqlite_store import SQLiteMemoryStore

                    self._store = SQLiteMemoryStore(self._path, embedder=self._embedder)
        return self._store

    def user_lock(self, user_id: str) -> threading.Lock:
        """Serializes learning writes and `forget` for one user (striped: bounded memory)."""
        return self._stripes[zlib.crc32(user_id.encode()) % _STRIPES]

    def generation(self, user_id: str) -> int:
        """Bumped by each `forget(user_id)`: learning queued before it is dropped."""
        return self._generations.get(user_id, 0)

    def user(self, user_id: str) -> UserMemory:
        return UserMemory(self, _check_user(user_id))

    def wrap(self, client: Any, user_id: str, **options: Any) -> Any:
        """`client` with memory for `user_id` (a `MemoryClient`; see `llmrelay.memory.with_memory`)."""
        from .client import MemoryClient

        return MemoryClient(client, user_id, self, **options)

    # -- direct API ------------------------------------------------------------------------------------
    def add_text(self, user_id: str, text: str, *, importance: float = 0.5, expires_at: float | None = None,
                 source: str | None = None) -> int:
        """Store `text` as one fact (no model call). A duplicate of an active fact updates that
        fact instead (importance: the max) and returns its id."""
        return self.add_facts(user_id, [NewFact(text, importance, expires_at, source)])[0]

    def add_facts(self, user_id: str, facts: Iterable[NewFact | str], *, entities: Iterable[Entity | str] = (),
                  relations: Iterable[Relation | tuple[str, str, str]] = (), dedupe: bool = True) -> list[int]:
        """Store facts (and entities, relations) for the user; returns the fact ids in order.
        `dedupe`: a fact saying the same as an active one merges into it (`Learner.same_fact`: facts
        that differ in numbers, names or word order are kept). Counted in `stats` (facts_added,
        facts_merged)."""
        _check_user(user_id)
        new = [NewFact(f) if isinstance(f, str) else f for f in facts]
        for f in new:
            if not isinstance(f, NewFact) or not f.text.strip():
                raise ValueError(f"a fact must be a non-empty str or NewFact, got {f!r}")
        ents = [Entity(e) if isinstance(e, str) else e for e in entities]
        rels = [Relation(*r) if isinstance(r, tuple) else r for r in relations]
        store = self.store
        with self.user_lock(user_id):
            ids: list[int] = []
            for f in new:
                dup = None
                if dedupe:
                    dup = next((s for s in store.similar_facts(user_id, f.text, limit=5)
                                if self.learner.same_fact(s.text, f.text,
                                                          partial(_similarity, store, s, f.text))), None)
                if dup is not None:
                    store.update_fact(user_id, dup.id, importance=max(dup.importance, f.importance),
                                      expires_at=f.expires_at if f.expires_at is not None else dup.expires_at)
                    ids.append(dup.id)
                else:
                    ids.extend(store.add_facts(user_id, [f]))
                self.worker.count(merged=dup is not None)
            if ents:
                store.add_entities(user_id, ents)
            if rels:
                store.add_relations(user_id, rels)
        return ids

    def search(self, user_id: str, query: str, tier: Tier = "balanced", *, limit: int | None = None) -> list[Hit]:
        """The user's active memories matching `query` (see the module docstring for tiers)."""
        _check_user(user_id)
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
        n = limit or self.limits.get(tier)
        if n is None:  # the store's own count for the tier
            return self.store.search(user_id, query, tier=tier)
        return self.store.search(user_id, query, limit=n, tier=tier)

    def list_facts(self, user_id: str, status: str | None = "active") -> list[Fact]:
        """The user's facts with that status (None: every status)."""
        return self.store.list_facts(_check_user(user_id), status=status)  # type: ignore[arg-type]

    def forget(self, user_id: str) -> int:
        """Delete everything stored for the user, and void their exchanges still queued for learning.
        Returns the rows deleted."""
        _check_user(user_id)
        with self.user_lock(user_id):
            with self._lock:
                self._generations[user_id] = self._generations.get(user_id, 0) + 1
            return self.store.forget(user_id)

    def curate(self, **options: Any) -> dict[str, int]:
        """Expire, archive (see `MemoryStore.curate`; `curate_options` are the defaults). The worker
        runs it every `curate_every` seconds."""
        return self.store.curate(**{**self.curate_options, **options})

    def learn(self, user_id: str, user_text: str, reply: str = "", *, client: Any = None,
              source: str | None = None, model: str | None = None) -> LearnResult:
        """Run the whole learning pipeline now, on this thread (gate, extraction, consolidation)."""
        return self.learner.learn(self, self._client(client), _check_user(user_id), user_text, reply, source,
                                  model=model)

    async def asearch(self, user_id: str, query: str, tier: Tier = "balanced", *, limit: int | None = None) -> list[Hit]:
        return await asyncio.to_thread(self.search, user_id, query, tier, limit=limit)

    async def aadd_text(self, user_id: str, text: str, **kw: Any) -> int:
        return await asyncio.to_thread(lambda: self.add_text(user_id, text, **kw))

    async def aforget(self, user_id: str) -> int:
        return await asyncio.to_thread(self.forget, user_id)

    # -- what the model sees -----------------------------------------------------------------------------
    def tool(self, user_id: str) -> Any:
        """The `search_memory(query, tier)` tool, bound to `user_id`."""
        from ..tools.tool import Tool

        _check_user(user_id)

        def search_memory(query: str, tier: str = "balanced") -> str:
            return format_hits(self.search(user_id, query, tier if tier in TIERS else "balanced"))  # type: ignore[arg-type]

        schema = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for, in a few words."},
                "tier": {"type": "string", "enum": list(TIERS), "description": "fast | balanced | deep"},
            },
            "required": ["query"],
        }
        return Tool(self.tool_name, TOOL_DESCRIPTION, schema, search_memory)

    def context(self, user_id: str, query: str, limit: int | None = None) -> str | None:
        """The system-prompt text of the memories most relevant to `query` (None if none)."""
        if not query.strip():
            return None
        hits = self.search(user_id, query, "fast", limit=limit or self.inject or None)
        if not hits:
            return None
        return INJECT_HEADER + "\n" + "\n".join(f"- {h.fact.text}" for h in hits)

    def inject_into(self, user_id: str, messages: list[Message], query: str, limit: int | None = None) -> list[Message]:
        """`messages` with `context()` appended to the system message (or a new one first)."""
        text = self.context(user_id, query, limit or self.inject)
        if text is None:
            return messages
        if messages and messages[0].role == "system":
            first = messages[0]
            merged = Message("system", [*first.parts, TextPart("\n\n" + text)], first.tool_call_id, first.name)
            return [merged, *messages[1:]]
        return [Message.system(text), *messages]

    # -- learning ------------------------------------------------------------------------------------------
    def submit(self, user_id: str, user_text: str, reply: str, *, client: Any = None,
               correlation_id: str | None = None, model: str | None = None) -> bool:
        """Write an exchange to the store's pending table for background learning and wake the
        worker (one small write; never raises). `model`: the conversation's model (extraction uses
        it unless `extract_model` is set). False if the store could not be written ("dropped")."""
        try:
            _check_user(user_id)
            pid = self.store.add_pending(user_id, user_text or "", reply or "", model=model, source=correlation_id,
                                         origin=self.worker.origin)
        except Exception as exc:  # noqa: BLE001 - the stream's caller never sees memory's failures
            self.worker.dropped(user_id, exc, correlation_id)
            return False
        if client is not None and client is not self.client:
            with self._lock:
                self._clients[pid] = client
                while len(self._clients) > _CLIENTS_KEPT:
                    self._clients.pop(next(iter(self._clients)))
        self.worker.submitted(pid)
        return True

    def process(self, exchange: PendingExchange) -> LearnResult:
        """Learn one pending exchange (the worker calls this; raises `LearnError`)."""
        with self._lock:
            client = self._clients.pop(exchange.id, None)
        try:
            client = self._client(client)
        except InvalidRequestError as exc:
            raise LearnError("extract", str(exc)) from exc
        return self.learner.learn(self, client, exchange.user_id, exchange.user_text, exchange.reply,
                                  exchange.source, self.generation(exchange.user_id), model=exchange.model,
                                  keep=lambda: self.store.has_pending(exchange.id))

    def subscribe(self, callback: Callable[[MemoryEvent], Any]) -> Callable[[], None]:
        """Receive every `MemoryEvent` (learned, skipped, failed...); returns the unsubscribe function."""
        return self.worker.subscribe(callback)

    def _client(self, client: Any) -> Any:
        if client is not None:
            return client
        if self.client is not None:
            return self.client
        raise InvalidRequestError(
            "this Memory has no client to learn with: pass Memory(client=...), learn(..., client=...), "
            "or use it through client.with_memory(...)")

    @property
    def stats(self) -> MemoryStats:
        return self.worker.stats

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the exchanges queued so far are learned (or failed). False on timeout."""
        return self.worker.flush(timeout)

    def drain(self, timeout: float | None = None) -> bool:
        """Learn every pending exchange in the store, also those other (e.g. crashed) processes left.
        False on timeout."""
        return self.worker.drain(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the learning queue, stop the worker, close the store if this Memory created it."""
        ok = self.worker.close(timeout)
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None
        return ok

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    list = list_facts  # last in the class: `list[...]` annotations above still mean the builtin


class UserMemory:
    """One user's view of a `Memory`: the same methods without `user_id`."""

    __slots__ = ("memory", "user_id")

    def __init__(self, memory: Memory, user_id: str):
        self.memory = memory
        self.user_id = user_id

    def add_text(self, text: str, **kw: Any) -> int:
        return self.memory.add_text(self.user_id, text, **kw)

    def add_facts(self, facts: Iterable[NewFact | str], **kw: Any) -> list[int]:
        return self.memory.add_facts(self.user_id, facts, **kw)

    def search(self, query: str, tier: Tier = "balanced", *, limit: int | None = None) -> list[Hit]:
        return self.memory.search(self.user_id, query, tier, limit=limit)

    def list_facts(self, status: str | None = "active") -> list[Fact]:
        return self.memory.list_facts(self.user_id, status)

    def forget(self) -> int:
        return self.memory.forget(self.user_id)

    def learn(self, user_text: str, reply: str = "", **kw: Any) -> LearnResult:
        return self.memory.learn(self.user_id, user_text, reply, **kw)

    def tool(self) -> Any:
        return self.memory.tool(self.user_id)

    def __repr__(self) -> str:
        return f"UserMemory({self.user_id!r})"

    list = list_facts


_check_user = check_user


def with_memory(client: Any, user_id: str, memory: Memory | None = None, *, learn: bool = True,
                inject: int | None = None, **memory_options: Any) -> Any:
    """`client` with memory for `user_id`. `memory`: a shared `Memory`; without one, a new
    `Memory(**memory_options)` (extraction through `client`). See `MemoryClient`."""
    if memory is None:
        memory_options.setdefault("client", client)
        memory = Memory(**memory_options)
    elif memory_options:
        raise InvalidRequestError(f"memory options {sorted(memory_options)} need memory=None "
                                  "(configure the Memory you pass instead)")
    from .client import MemoryClient

    return MemoryClient(client, user_id, memory, learn=learn, inject=inject)
