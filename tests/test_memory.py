"""Memory, end to end over real HTTP (replay server on 127.0.0.1), sync and async.

Conversation one states facts; the background worker's extraction call (served by the
same replay server: a scripted structured-output reply) stores them; conversation two's
model calls `search_memory`, the tool result holds the stored facts, and the final answer
streams. Then: user isolation, `forget`, extraction failures and malformed output
(reported, later streams unaffected), aborted / failed streams not learned, caller tools
and hooks merged, injection, consolidation (duplicates, `replaces`, single-valued
relations), the salience gate, and the worker (bounded queue, flush, close, failures).

Every model reply here is SYNTHETIC: OpenAI Chat SSE bodies built by the `synthetic_*`
helpers below. Requests are routed by content (an extraction request carries
`response_format`), so the background worker's calls and the conversation's never race
for the same scripted reply.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

import llmrelay
from llmrelay import InvalidRequestError, ToolResult
from llmrelay.memory import (
    Learner,
    Memory,
    MemoryClient,
    MemoryEvent,
    NewFact,
    Relation,
    SalienceGate,
    SQLiteMemoryStore,
    extraction_types,
    with_memory,
)
from llmrelay.memory.embed import HashingEmbedder
from llmrelay.testing import ReplayServer, Reply, client_for

STATEMENT = "I live in Lisbon and I have a dog named Rex."
LISBON = "The user lives in Lisbon."
REX = "The user has a dog named Rex."


# -- SYNTHETIC OpenAI Chat streams -------------------------------------------------------------
def _sse(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def synthetic_text(text: str, **kw: Any) -> Reply:
    """SYNTHETIC OpenAI Chat stream: `text` in 5-character pieces, then finish and usage."""
    head = {"id": "syn", "model": "gpt-4o"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**head, "choices": [{"index": 0, "delta": {"content": text[i:i + 5]}, "finish_reason": None}]}
               for i in range(0, len(text), 5)]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})
    return Reply(_sse(chunks), headers={"content-type": "text/event-stream"}, chunking="events", **kw)


def synthetic_tool_call(name: str, args: dict, call_id: str = "call_1") -> Reply:
    """SYNTHETIC OpenAI Chat stream: one tool call, its arguments in two fragments."""
    head = {"id": "syn", "model": "gpt-4o"}
    raw = json.dumps(args)
    half = len(raw) // 2
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": raw[:half]}}]},
            "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": raw[half:]}}]},
                              "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    return Reply(_sse(chunks), headers={"content-type": "text/event-stream"}, chunking="events")


def extraction(facts=(), entities=(), relations=()) -> dict:
    return {
        "facts": [{"text": f[0], "importance": f[1], "expires_in_days": None, "replaces": f[2] if len(f) > 2 else None}
                  for f in facts],
        "entities": [{"name": n, "type": t} for n, t in entities],
        "relations": [{"subject": s, "predicate": p, "object": o} for s, p, o in relations],
    }


LISBON_EXTRACTION = extraction(
    facts=[(LISBON, 0.8), (REX, 0.6)],
    entities=[("Lisbon", "place"), ("Rex", "pet")],
    relations=[("user", "lives_in", "Lisbon"), ("user", "has_pet", "Rex")],
)


class Script:
    """Routes requests: extraction calls (they carry `response_format`) get `extractions`, in order
    (then an empty extraction); conversation calls get `chats`, in order."""

    def __init__(self) -> None:
        self.chats: list[Reply] = []
        self.extractions: list[Reply] = []
        self.lock = threading.Lock()
        self.chat_requests: list[dict] = []
        self.extract_requests: list[dict] = []

    def __call__(self, request: Any) -> Reply:
        body = request.json or {}
        with self.lock:
            if "response_format" in body:
                self.extract_requests.append(body)
                return self.extractions.pop(0) if self.extractions else synthetic_text(json.dumps(extraction()))
            self.chat_requests.append(body)
            if self.chats:
                return self.chats.pop(0)
        return Reply.json({"error": {"message": "no chat reply scripted"}}, status=599)

    def chat(self, *replies: Reply) -> Script:
        self.chats.extend(replies)
        return self

    def extract(self, obj: Any, raw: bool = False) -> Script:
        self.extractions.append(synthetic_text(obj if raw else json.dumps(obj)))
        return self


@pytest.fixture
def script():
    return Script()


@pytest.fixture
def server(script):
    with ReplayServer(default=script) as srv:
        yield srv


@pytest.fixture
def events():
    return []


@pytest.fixture
def memory(events):
    m = Memory(SQLiteMemoryStore(embedder=None), extract_model="openai:gpt-4o-mini", on_event=events.append)
    yield m
    m.close(5)
    m.store.close()


async def run(mc: Any, mode: str, messages: Any, **kw: Any) -> tuple[list, Any]:
    """Every event of one stream, and its response."""
    if mode == "sync":
        with mc.stream("openai:gpt-4o", messages, **kw) as s:
            return list(s), s.response
    async with mc.astream("openai:gpt-4o", messages, **kw) as s:
        return [e async for e in s], s.response


def rows_of(store: SQLiteMemoryStore, user: str) -> dict[str, int]:
    """Rows the user has in every table of the store (facts, FTS index, entities, relations, vectors)."""
    with store._tx() as (q, _run):
        return {t: q(f"SELECT COUNT(*) FROM {t} WHERE user_id = ?", (user,))[0][0] for t in store._tables}


def texts(memory: Memory, user: str, status: str | None = "active") -> list[str]:
    return [f.text for f in memory.list_facts(user, status)]


# -- end to end ---------------------------------------------------------------------------------
async def test_learn_then_search_memory_mid_stream(client, memory, script, events, mode):
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Lisbon is lovely, and say hi to Rex!")).extract(LISBON_EXTRACTION)
    evs, r1 = await run(alice, mode, [{"role": "user", "content": STATEMENT}])
    assert r1.status == "ok" and r1.text == "Lisbon is lovely, and say hi to Rex!"
    assert [t["function"]["name"] for t in script.chat_requests[0]["tools"]] == ["search_memory", "schedule_task"]
    assert alice.flush(10)
    assert texts(memory, "alice") == [LISBON, REX]
    assert [e.kind for e in events] == ["learned"]
    assert events[0].correlation_id == r1.correlation_id
    assert memory.list_facts("alice")[0].source == r1.correlation_id
    # the extraction call: the configured fast model, the exchange in the prompt, structured output
    ex = script.extract_requests[0]
    assert ex["model"] == "gpt-4o-mini" and ex["response_format"]["type"] == "json_schema"
    prompt = ex["messages"][-1]["content"]
    assert STATEMENT in prompt and "Lisbon is lovely" in prompt

    # conversation two: the model searches memory mid-stream and answers from it
    answer = "You live in Lisbon, with your dog Rex."
    script.chat(synthetic_tool_call("search_memory", {"query": "where the user lives", "tier": "deep"}),
                synthetic_text(answer))
    evs, r2 = await run(alice, mode, "I just got back home. Where do I live, and with whom?")
    results = [e for e in evs if isinstance(e, ToolResult)]
    assert len(results) == 1 and results[0].name == "search_memory" and results[0].ok
    assert LISBON in results[0].content
    assert "".join(e.text for e in evs if e.type == "text") == answer == r2.text
    tool_msg = script.chat_requests[2]["messages"][-1]
    assert tool_msg["role"] == "tool" and LISBON in tool_msg["content"]
    assert alice.flush(10)
    # the second exchange (whole reply, after the tool round) went to extraction too
    second = script.extract_requests[1]["messages"][-1]["content"]
    assert answer in second
    assert "Known facts about the user" in second and LISBON in second  # so the model can mark `replaces`
    assert texts(memory, "alice") == [LISBON, REX]  # nothing new: nothing piled up


async def test_complete_and_acomplete_learn_too(client, memory, script, mode):
    chat = memory.wrap(client, "alice")
    script.chat(synthetic_text("Noted.")).extract(LISBON_EXTRACTION)
    if mode == "sync":
        r = chat.complete("openai:gpt-4o", STATEMENT)
    else:
        r = await chat.acomplete("openai:gpt-4o", STATEMENT)
    assert r.text == "Noted."
    assert chat.flush(10)
    assert texts(memory, "alice") == [LISBON, REX]


def test_stream_is_not_delayed_by_learning(server, memory, script):
    """Learning's extraction call is held (a client hook blocks it until the test lets go): the
    stream's caller still gets its whole response, with the exchange pending, and learning
    finishes once released. The 30 s waits are hang guards, not speed bounds."""
    release, extracting = threading.Event(), threading.Event()

    class HoldExtraction(llmrelay.Hooks):
        def on_call_start(self, ctx) -> None:
            if ctx.tags.get("llmrelay.memory") == "extract":
                extracting.set()
                release.wait(30)

    client = client_for(server, retry=0, hooks=[HoldExtraction()])
    script.chat(synthetic_text("Noted.")).extract(LISBON_EXTRACTION)
    alice = with_memory(client, "alice", memory)
    try:
        with alice.stream("openai:gpt-4o", STATEMENT) as s:
            r = s.collect()
        assert not release.is_set() and r.text == "Noted."
        assert extracting.wait(30), "learning never started"
        assert memory.worker.pending == 1  # learning is under way, the caller already has its answer
        assert script.extract_requests == []
    finally:
        release.set()
    assert alice.flush(10) and texts(memory, "alice") == [LISBON, REX]
    client.close()


# -- users ---------------------------------------------------------------------------------------
async def test_two_users_never_see_each_other(client, memory, script, mode):
    alice, bob = with_memory(client, "alice", memory), with_memory(client, "bob", memory)
    script.chat(synthetic_text("Noted.")).extract(LISBON_EXTRACTION)
    await run(alice, mode, STATEMENT)
    assert alice.flush(10)
    script.chat(synthetic_tool_call("search_memory", {"query": "Lisbon dog Rex", "tier": "deep"}),
                synthetic_text("I don't know yet."))
    evs, _ = await run(bob, mode, "Where do I live?")
    result = next(e for e in evs if isinstance(e, ToolResult))
    assert result.content == "No stored memories match this query."
    for tier in ("fast", "balanced", "deep"):
        assert memory.search("bob", "Lisbon Rex dog user lives", tier) == []
        assert memory.search("alice", "Lisbon", tier)
    assert memory.list_facts("bob", None) == []
    # the same text for bob is bob's own fact
    bob_id = memory.add_text("bob", LISBON)
    assert bob_id not in [f.id for f in memory.list_facts("alice")]
    assert texts(memory, "bob") == [LISBON] and texts(memory, "alice") == [LISBON, REX]


def test_forget_leaves_nothing_behind(client, memory, script):
    alice, bob = with_memory(client, "alice", memory), with_memory(client, "bob", memory)
    script.chat(synthetic_text("Noted."), synthetic_text("Noted.")).extract(LISBON_EXTRACTION).extract(LISBON_EXTRACTION)
    alice.complete("openai:gpt-4o", STATEMENT)
    bob.complete("openai:gpt-4o", STATEMENT)
    assert memory.flush(10)
    memory.add_facts("alice", ["The user likes jazz."], entities=["Jazz"], relations=[("user", "likes", "jazz")])
    store = memory.store
    assert all(n > 0 for t, n in rows_of(store, "alice").items() if t in ("facts", "facts_fts", "entities", "relations"))
    assert alice.forget() > 0
    assert set(rows_of(store, "alice").values()) == {0}
    assert store.list_entities("alice") == [] and store.list_relations("alice") == []
    assert memory.list_facts("alice", None) == [] and memory.search("alice", "Lisbon jazz Rex", "deep") == []
    assert texts(memory, "bob") == [LISBON, REX]  # bob untouched


def test_forget_voids_learning_already_queued(client, memory, script, events):
    """forget() while the worker is extracting: what it extracts is not written afterwards."""
    script.chat(synthetic_text("Noted."))
    script.extractions.append(synthetic_text(json.dumps(LISBON_EXTRACTION), first_byte_delay=0.5))
    alice = with_memory(client, "alice", memory)
    alice.complete("openai:gpt-4o", STATEMENT)
    deadline = time.monotonic() + 5
    while not script.extract_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    memory.forget("alice")
    assert alice.flush(10)
    assert memory.list_facts("alice", None) == []
    assert set(rows_of(memory.store, "alice").values()) == {0}
    assert events[-1].kind == "skipped" and events[-1].detail == "forgotten"


# -- failures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["http_500", "not_json", "wrong_shape"])
async def test_extraction_failures_are_reported_and_later_streams_work(client, memory, script, events, caplog,
                                                                        mode, failure):
    if failure == "http_500":
        script.extractions.append(Reply.json({"error": {"message": "boom", "type": "server_error"}}, status=500))
    elif failure == "not_json":
        script.extract('{"facts": [{"text": "The user lives in', raw=True)
    else:
        script.extract({"facts": "Lisbon", "entities": [], "relations": []})
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Noted."))
    with caplog.at_level(logging.WARNING, logger="llmrelay.memory"):
        _, r = await run(alice, mode, STATEMENT)
        assert r.status == "ok" and alice.flush(10)
    assert [e.kind for e in events] == ["failed"]
    failed = events[0]
    assert failed.stage == "extract" and failed.user_id == "alice" and failed.error is not None
    assert failed.correlation_id == r.correlation_id
    assert memory.stats.failed == 1 and memory.stats.errors == {"extract": 1}
    assert any("failed at extract" in rec.getMessage() for rec in caplog.records)
    assert memory.list_facts("alice", None) == []
    # the next stream and its learning are fine
    script.chat(synthetic_text("Still here.")).extract(LISBON_EXTRACTION)
    _, r = await run(alice, mode, STATEMENT)
    assert r.text == "Still here." and alice.flush(10)
    assert events[-1].kind == "learned" and texts(memory, "alice") == [LISBON, REX]


def test_a_failing_event_callback_does_not_stop_learning(client, script, caplog):
    def explode(event: MemoryEvent) -> None:
        raise RuntimeError("callback bug")

    memory = Memory(SQLiteMemoryStore(embedder=None), on_event=explode)
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Noted."), synthetic_text("Noted.")).extract(
        extraction(facts=[(LISBON, 0.8)])).extract(extraction(facts=[(REX, 0.5)]))
    with caplog.at_level(logging.WARNING, logger="llmrelay.memory"):
        alice.complete("openai:gpt-4o", STATEMENT)
        alice.complete("openai:gpt-4o", "Also: my dog is called Rex.")
        assert alice.flush(10)
    assert texts(memory, "alice") == [LISBON, REX]
    assert any("on_event raised RuntimeError" in rec.getMessage() for rec in caplog.records)
    memory.close(5)


async def test_aborted_and_failed_streams_are_not_learned(client, memory, script, mode):
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Lisbon is a lovely city to live in with a dog.", delay=0.05))
    if mode == "sync":
        with alice.stream("openai:gpt-4o", STATEMENT) as s:
            next(e for e in s if e.type == "text")
    else:
        async with alice.astream("openai:gpt-4o", STATEMENT) as s:
            async for e in s:
                if e.type == "text":
                    break
    assert s.response.status == "aborted"
    script.chat(Reply.json({"error": {"message": "down", "type": "server_error"}}, status=500))
    with pytest.raises(llmrelay.APIStatusError):
        await run(alice, mode, STATEMENT)
    assert alice.flush(10)
    assert alice.not_learned == {"aborted": 1, "error": 1}
    assert script.extract_requests == [] and memory.stats.submitted == 0
    assert memory.list_facts("alice", None) == []


def test_learn_on_can_include_aborted_streams(client, script):
    memory = Memory(SQLiteMemoryStore(embedder=None), learn_on=("ok", "aborted"))
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Lisbon is a lovely city to live in with a dog.", delay=0.05)).extract(LISBON_EXTRACTION)
    with alice.stream("openai:gpt-4o", STATEMENT) as s:
        next(e for e in s if e.type == "text")
    assert alice.flush(10) and texts(memory, "alice") == [LISBON, REX]
    memory.close(5)


def test_chit_chat_is_not_sent_to_extraction(client, memory, script, events):
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Hello!"), synthetic_text("You're welcome."))
    alice.complete("openai:gpt-4o", "hi there!")
    alice.complete("openai:gpt-4o", "ok thanks")
    assert alice.flush(10)
    assert script.extract_requests == []
    assert [(e.kind, e.detail) for e in events] == [("skipped", "chit-chat")] * 2


# -- what the model gets -----------------------------------------------------------------------------
async def test_caller_tools_and_hooks_are_merged_never_replaced(client, memory, script, mode):
    seen: list[str] = []

    class Spy(llmrelay.Hooks):
        def on_call_end(self, ctx, response, error):
            seen.append(response.status)

    def get_time(city: str) -> str:
        """Local time in a city."""
        return f"12:00 in {city}"

    alice = with_memory(client, "alice", memory, learn=False)
    script.chat(synthetic_tool_call("get_time", {"city": "Lisbon"}), synthetic_text("It is noon."))
    evs, r = await run(alice, mode, "What time is it in Lisbon?", tools=[get_time], hooks=[Spy()])
    assert [t["function"]["name"] for t in script.chat_requests[0]["tools"]] == ["get_time", "search_memory", "schedule_task"]
    assert [e.content for e in evs if isinstance(e, ToolResult)] == ["12:00 in Lisbon"]
    assert r.text == "It is noon." and seen == ["ok"]
    with pytest.raises(InvalidRequestError, match="search_memory"):
        alice.stream("openai:gpt-4o", "hi", tools=[llmrelay.Tool("search_memory", "mine", None, lambda: "x")])
    with pytest.raises(InvalidRequestError, match="already has memory"):
        MemoryClient(alice, "bob", memory)


async def test_injection_is_off_by_default_and_configurable(client, memory, script, mode):
    memory.add_facts("alice", [LISBON, "The user prefers short answers."])
    script.chat(synthetic_text("Hi."), synthetic_text("Hi."), synthetic_text("Hi."))
    await run(with_memory(client, "alice", memory, learn=False), mode, "Tell me about Lisbon")
    assert [m["role"] for m in script.chat_requests[0]["messages"]] == ["user"]
    await run(with_memory(client, "alice", memory, learn=False, inject=3), mode,
              [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about Lisbon"}])
    system = script.chat_requests[1]["messages"][0]
    assert system["role"] == "system"
    content = system["content"] if isinstance(system["content"], str) else "".join(p["text"] for p in system["content"])
    assert content.startswith("Be brief.") and LISBON in content
    await run(with_memory(client, "bob", memory, learn=False, inject=3), mode, "Tell me about Lisbon")
    assert [m["role"] for m in script.chat_requests[2]["messages"]] == ["user"]  # bob has no memories


# -- direct API ------------------------------------------------------------------------------------------
def test_direct_api(memory):
    alice = memory.user("alice")
    ids = alice.add_facts([NewFact(LISBON, 0.9), "The user works at Acme."],
                          entities=["Acme"], relations=[Relation("user", "works_at", "Acme")])
    assert len(ids) == 2
    assert alice.add_text("the user lives in Lisbon") == ids[0]  # a duplicate merges
    assert [f.text for f in alice.list()] == [LISBON, "The user works at Acme."]
    assert alice.search("Acme")[0].fact.text == "The user works at Acme."
    assert len(memory.search("alice", "user", "fast", limit=1)) == 1
    assert "The user works at Acme." in alice.tool().fn(query="Acme", tier="deep")
    with pytest.raises(ValueError):
        memory.search("alice", "x", "slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        memory.user("")
    assert memory.curate() == {"expired": 0, "archived": 0, "promoted": 0}
    assert alice.forget() > 0 and alice.list(None) == []


async def test_async_direct_api(memory):
    await memory.aadd_text("alice", LISBON)
    assert (await memory.asearch("alice", "Lisbon"))[0].fact.text == LISBON
    assert await memory.aforget("alice") > 0


def test_learn_runs_the_pipeline_now(client, script):
    memory = Memory(SQLiteMemoryStore(embedder=None), client=client)
    script.extract(LISBON_EXTRACTION)
    result = memory.learn("alice", STATEMENT, "Nice!")
    assert len(result.added) == 2 and result.relations == 2 and result.entities == 2
    assert memory.learn("alice", "thanks!").skipped == "chit-chat"
    memory.close()


# -- consolidation -----------------------------------------------------------------------------------------
def _extraction(**kw: Any) -> Any:
    return extraction_types()[0].model_validate(extraction(**kw))


def test_duplicates_merge_instead_of_piling_up():
    store, learner = SQLiteMemoryStore(embedder=None), Learner()
    first = learner.consolidate(store, "alice", _extraction(facts=[(LISBON, 0.4)]))
    again = learner.consolidate(store, "alice", _extraction(facts=[("the user lives in Lisbon", 0.9)]))
    assert again.added == [] and again.merged == first.added
    [fact] = store.list_facts("alice")
    assert fact.text == LISBON and fact.importance == 0.9


def test_a_fact_marked_replaces_supersedes_the_old_one():
    store, learner = SQLiteMemoryStore(embedder=None), Learner()
    old = learner.consolidate(store, "alice", _extraction(facts=[(LISBON, 0.8)])).added[0]
    r = learner.consolidate(store, "alice", _extraction(facts=[("The user lives in Porto.", 0.8, LISBON)]))
    assert r.superseded == [(old, r.added[0])]
    assert texts_of(store, "alice") == ["The user lives in Porto."]
    [superseded] = store.list_facts("alice", status="superseded")
    assert superseded.id == old and superseded.superseded_by == r.added[0]


def test_a_single_valued_relation_with_a_new_object_supersedes():
    store, learner = SQLiteMemoryStore(embedder=None), Learner()  # rule 2 uses the store's (optional) list_relations
    learner.consolidate(store, "alice", _extraction(facts=[(LISBON, 0.8), ("The user likes jazz.", 0.5)],
                                                    relations=[("user", "lives_in", "Lisbon"), ("user", "likes", "jazz")]))
    r = learner.consolidate(store, "alice", _extraction(
        facts=[("The user moved to Porto.", 0.8), ("The user likes fado.", 0.5)],
        relations=[("user", "lives in", "Porto"), ("user", "likes", "fado")]))
    assert len(r.superseded) == 1  # lives_in is single-valued, likes is not
    assert texts_of(store, "alice") == ["The user likes jazz.", "The user moved to Porto.", "The user likes fado."]


def test_expiring_facts_get_expires_at():
    store, learner = SQLiteMemoryStore(embedder=None), Learner(clock=lambda: 1_000_000.0)
    ex = extraction(facts=[("The user is in Tokyo this week.", 0.5)])
    ex["facts"][0]["expires_in_days"] = 7
    learner.consolidate(store, "alice", extraction_types()[0].model_validate(ex))
    [fact] = store.list_facts("alice", status=None)
    assert fact.expires_at == 1_000_000.0 + 7 * 86400


def texts_of(store: Any, user: str) -> list[str]:
    return [f.text for f in store.list_facts(user)]


# -- salience gate -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("hi!", "chit-chat"), ("Thank you so much!", "chit-chat"), ("ok cool", "chit-chat"),
    ("good morning", "chit-chat"), ("sounds good", "chit-chat"), ("whatever works", "too short"),
    ("What is the capital of France?", "impersonal question"),
    (STATEMENT, None), ("I'm vegan", None), ("Where do I live?", "question about the user"), ("Flight BA123", None),
    ("What's my job?", "question about the user"), ("Do I have a dog?", "question about the user"),
    ("I'm vegetarian and moving to Paris, what should I eat?", None), ("My job is hard. Any tips?", None),
    ("Please remember that the wifi password is hunter2", None), ("The deadline moved to Friday.", None),
])
def test_salience_heuristics(text, reason):
    assert SalienceGate().reason_to_skip(text) == reason


def test_embedding_gate():
    gate = SalienceGate(embedder=HashingEmbedder(), threshold=0.25)
    assert gate.reason_to_skip("My name is Ana and I live in Porto.") is None
    assert gate.reason_to_skip("Explain quicksort complexity in detail please").startswith("not salient")


# -- worker (more in test_memory_durable.py) ----------------------------------------------------------
def test_memory_close_drains_learning(client, script):
    memory = Memory(SQLiteMemoryStore(embedder=None), client=client)
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Noted.")).extract(LISBON_EXTRACTION)
    alice.complete("openai:gpt-4o", STATEMENT)
    assert alice.close(10)
    assert texts(memory, "alice") == [LISBON, REX]


def test_with_memory_builds_its_own_memory(client):
    chat = with_memory(client, "alice", store=SQLiteMemoryStore(embedder=None), inject=2)
    assert chat.inject == 2 and chat.memory.user_id == "alice"
    with pytest.raises(InvalidRequestError):
        with_memory(client, "alice", chat.memory_store, store=SQLiteMemoryStore(embedder=None))


async def test_the_callers_correlation_id_reaches_memory(client, memory, script, events, mode):
    """Issue 13: correlation_id= flows into memory (the learned fact's source and its events)."""
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Lisbon is lovely, and say hi to Rex!")).extract(LISBON_EXTRACTION)
    _, r1 = await run(alice, mode, [{"role": "user", "content": STATEMENT}],
                      conversation_id="thread-7", correlation_id="req-42")
    assert alice.flush(10)
    assert (r1.correlation_id, r1.conversation_id) == ("req-42", "thread-7")
    assert events[0].correlation_id == "req-42"
    assert {f.source for f in memory.list_facts("alice")} == {"req-42"}
