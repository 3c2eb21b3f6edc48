"""The search logic every SQL memory store shares (SQLite and Postgres).

`SQLMemoryStore` holds ranking, tiers, graph expansion and hybrid fusion; a
backend supplies SQL execution, a full-text query and the vector encoding.
Ranking is documented on `SQLMemoryStore.search`. Every statement filters on
`user_id`.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any, Callable, Sequence

from .embed import Embedder, embedder_name
from .types import Entity, Fact, FactStatus, Hit, NewFact, Relation, Tier, check_user
from .pending import PendingMixin
from .vecindex import VectorIndex

log = logging.getLogger("llmrelay.memory")

#: Results per tier when `search` is called without `limit`.
TIER_LIMITS: dict[str, int] = {"fast": 3, "balanced": 8, "deep": 8}
W_TEXT, W_IMPORTANCE, W_RECENCY = 0.7, 0.2, 0.1
HALF_LIFE_DAYS = 30.0
RRF_K = 60
GRAPH_WEIGHT = 0.5
MAX_TERMS = 32
_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be by do does did for from has have i in is it its me my of on or our s so t "
    "that the their them they this to was we were what when where which who why will with you your".split()
)
SELF_WORDS = frozenset({"i", "me", "my", "mine", "myself"})
SELF_NAMES = ("user", "me", "i")
FACT_COLS = ("id, user_id, text, importance, created_at, updated_at, expires_at, status, "
             "access_count, last_accessed_at, source, superseded_by")
_ACTIVE = "status = 'active' AND (expires_at IS NULL OR expires_at > ?)"


def query_terms(text: str) -> list[str]:
    """Words of arbitrary user text (letters/digits only: no search syntax survives), case-folded,
    deduplicated, stopwords dropped unless nothing else is left; at most `MAX_TERMS`."""
    words = list(dict.fromkeys(w.casefold() for w in _WORD.findall(text or "")))
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:MAX_TERMS]


def name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def mentions(text: str, names: Sequence[str]) -> list[str]:
    """The names that occur in `text` as whole words, case-insensitively."""
    folded = " ".join(text.split()).casefold()
    return [n for n in names if n and re.search(r"(?<!\w)" + re.escape(n) + r"(?!\w)", folded)]


def recency(updated_at: float, now: float) -> float:
    return 0.5 ** (max(0.0, now - updated_at) / 86400.0 / HALF_LIFE_DAYS)


def blend(relevance: float, fact: Fact, now: float) -> float:
    """score = 0.7 * relevance + 0.2 * importance + 0.1 * recency, each in 0..1."""
    imp = min(1.0, max(0.0, fact.importance))
    return W_TEXT * relevance + W_IMPORTANCE * imp + W_RECENCY * recency(fact.updated_at, now)


def rrf(*rankings: Sequence[int]) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (RRF_K + rank), rank from 1."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
    return fused


_check_user = check_user


def clean_text(text: str) -> str:
    """Stored text: stripped, without NUL characters (PostgreSQL text cannot hold them)."""
    return text.replace("\x00", "").strip()


class SQLMemoryStore(PendingMixin):
    """What SQLite and Postgres share. A backend implements `_tx` (a transaction yielding
    `q(sql, params) -> rows` and `run(sql, params) -> rowcount`, with `?` placeholders),
    `_text_search`, `_pack`/`_unpack` (vectors) and `_tables`."""

    embedder: Embedder | None = None
    min_similarity: float = 0.2

    _tables: tuple[str, ...] = ("relations", "entities", "vectors", "facts", "user_state", "pending", "tasks")
    _vindex: VectorIndex
    _vec_column = "vector"  # where a vector is written; read from `_vec_select` (the last non-null column)
    _vec_select = "v.vector"
    # Backend hooks: _tx(), _text_search(q, user_id, phrases, now, n) -> [(Fact, relevance >= 0)] for
    # active facts matching any phrase (a list of words), best first; _pack(vec) / _unpack(raw).
    _tx: Callable[[], Any]
    _text_search: Callable[..., list[tuple[Fact, float]]]
    _pack: Callable[[list[float]], Any]
    _unpack: Callable[[Any], list[float]]

    # -- writing ---------------------------------------------------------------
    def _bump(self, q: Any, user_id: str) -> None:
        """A new version of the user's searchable vectors (see `llmrelay.memory.vecindex`). A new row
        starts at a random version, so a cache of a forgotten user never matches its next life."""
        q("INSERT INTO user_state (user_id, version) VALUES (?, ?) ON CONFLICT (user_id) "
          "DO UPDATE SET version = user_state.version + 1", (user_id, random.getrandbits(52)))

    def _version(self, q: Any, user_id: str) -> int:
        rows = q("SELECT version FROM user_state WHERE user_id = ?", (user_id,))
        return int(rows[0][0]) if rows else -1

    def _embed(self, texts: list[str]) -> list[list[float]] | None:
        if self.embedder is None or not texts:
            return None
        try:
            return self.embedder.embed(texts)
        except Exception as exc:  # noqa: BLE001 - a fact is worth keeping without its vector
            log.warning("memory: embedding failed, facts stored without vectors (%s)", exc)
            return None

    def _store_vectors(self, q: Any, user_id: str, ids: list[int], vectors: list[list[float]] | None) -> None:
        if not vectors or self.embedder is None:
            return
        name = embedder_name(self.embedder)
        self._bump(q, user_id)
        for fid, vec in zip(ids, vectors):
            q("DELETE FROM vectors WHERE user_id = ? AND fact_id = ?", (user_id, fid))
            q(f"INSERT INTO vectors (fact_id, user_id, model, dims, {self._vec_column}) VALUES (?, ?, ?, ?, ?)",
              (fid, user_id, name, len(vec), self._pack(vec)))

    def add_facts(self, user_id: str, facts: Sequence[NewFact]) -> list[int]:
        _check_user(user_id)
        facts = [f for f in facts if f.text and clean_text(f.text)]
        vectors = self._embed([f.text for f in facts])
        now = time.time()
        ids: list[int] = []
        with self._tx() as (q, _run):
            for f in facts:
                imp = min(1.0, max(0.0, float(f.importance)))
                rows = q("INSERT INTO facts (user_id, text, importance, created_at, updated_at, expires_at, source) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                         (user_id, clean_text(f.text), imp, now, now, f.expires_at, f.source))
                ids.append(int(rows[0][0]))
            self._store_vectors(q, user_id, ids, vectors)
        return ids

    def _upsert_entity(self, q: Any, user_id: str, name: str, etype: str, now: float) -> None:
        q("INSERT INTO entities (user_id, name, name_key, type, created_at) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT (user_id, name_key) DO UPDATE SET type = CASE WHEN excluded.type <> 'thing' "
          "THEN excluded.type ELSE entities.type END",
          (user_id, " ".join(name.split()), name_key(name), etype or "thing", now))

    def add_entities(self, user_id: str, entities: Sequence[Entity]) -> None:
        _check_user(user_id)
        now = time.time()
        with self._tx() as (q, _run):
            for e in entities:
                if e.name and e.name.strip():
                    self._upsert_entity(q, user_id, e.name, e.type, now)

    def add_relations(self, user_id: str, relations: Sequence[Relation]) -> None:
        """Stores each relation once per (subject, predicate, object); names the ends as entities."""
        _check_user(user_id)
        now = time.time()
        with self._tx() as (q, _run):
            for r in relations:
                if not (r.subject.strip() and r.object.strip() and r.predicate.strip()):
                    continue
                fact_id = r.fact_id
                if fact_id is not None and not q("SELECT id FROM facts WHERE user_id = ? AND id = ?",
                                                 (user_id, fact_id)):
                    fact_id = None  # never link to a missing fact, nor to another user's
                for end in (r.subject, r.object):
                    self._upsert_entity(q, user_id, end, "thing", now)
                q("INSERT INTO relations (user_id, subject, subject_key, predicate, object, object_key, fact_id, "
                  "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, subject_key, predicate, "
                  "object_key) DO UPDATE SET fact_id = COALESCE(excluded.fact_id, relations.fact_id)",
                  (user_id, " ".join(r.subject.split()), name_key(r.subject), r.predicate.strip(),
                   " ".join(r.object.split()), name_key(r.object), fact_id, now))

    # -- reading ---------------------------------------------------------------
    def _reads(self) -> Any:
        """Where a search runs (its reads, then one UPDATE of the access counts): a transaction here;
        a backend may run them without one when a transaction would add nothing but round trips."""
        return self._tx()

    @staticmethod
    def _fact(row: Sequence[Any]) -> Fact:
        return Fact(int(row[0]), row[1], row[2], float(row[3]), float(row[4]), float(row[5]),
                    row[6], row[7], int(row[8]), row[9], row[10], row[11])

    def _facts_by_id(self, q: Any, user_id: str, ids: Sequence[int], now: float) -> dict[int, Fact]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = q(f"SELECT {FACT_COLS} FROM facts WHERE user_id = ? AND {_ACTIVE} AND id IN ({marks})",
                 (user_id, now, *ids))
        return {int(r[0]): self._fact(r) for r in rows}

    def _query_vector(self, text: str) -> list[float] | None:
        vecs = self._embed([text])  # before the transaction: an embedder may be a network call
        return vecs[0] if vecs else None

    def _vector_search(self, q: Any, user_id: str, query: list[float] | None, now: float,
                       n: int) -> list[tuple[Fact, float]]:
        if self.embedder is None or not query:
            return []
        model = embedder_name(self.embedder)

        def load() -> list[tuple[int, Any]]:  # every active vector (expiry is checked on the hits)
            rows = q(f"SELECT v.fact_id, {self._vec_select} FROM vectors v JOIN facts f ON f.id = v.fact_id "
                     "WHERE v.user_id = ? AND f.user_id = ? AND v.model = ? AND v.dims = ? AND "
                     "f.status = 'active'", (user_id, user_id, model, len(query)))
            return [(r[0], r[1] if r[1] is not None else r[-1]) for r in rows]

        scored = self._vindex.search(user_id, model, query, self._version(q, user_id), load, n, self.min_similarity)
        facts = self._facts_by_id(q, user_id, [fid for fid, _ in scored], now)
        return [(facts[fid], sim) for fid, sim in scored if fid in facts]

    def _ranked(self, q: Any, user_id: str, text: str, qvec: list[float] | None, now: float,
                n: int) -> list[Hit]:
        """Text (and vector) hits, best first: the blended score, fused by RRF when hybrid."""
        pool = max(4 * n, 20)
        terms = query_terms(text)
        texts = self._text_search(q, user_id, [[t] for t in terms], now, pool) if terms else []
        top = max((r for _, r in texts), default=0.0) or 1.0
        text_hits = sorted(((f, blend(r / top, f, now)) for f, r in texts), key=lambda p: -p[1])
        vec_hits = sorted(((f, blend(s, f, now)) for f, s in self._vector_search(q, user_id, qvec, now, pool)),
                          key=lambda p: -p[1])
        if not vec_hits:
            return [Hit(f, s, "text") for f, s in text_hits[:n]]
        facts = {f.id: f for f, _ in vec_hits} | {f.id: f for f, _ in text_hits}
        in_text = {f.id for f, _ in text_hits}
        fused = rrf([f.id for f, _ in text_hits], [f.id for f, _ in vec_hits])
        order = sorted(fused, key=lambda k: -fused[k])[:n]
        best = 2.0 / (RRF_K + 1)  # first in both lists: score 1.0
        return [Hit(facts[k], fused[k] / best, "text" if k in in_text else "vector") for k in order]

    def _graph(self, q: Any, user_id: str, text: str, now: float, hits: list[Hit], n: int) -> list[Hit]:
        """Entities named in the query (whole words, any case; "I", "me", "my" name the entity "user")
        -> their relations (one hop) -> the facts those relations came from (relevance 1) and the
        facts mentioning the entities at the other end (relevance: normalized text rank)."""
        names = [r[0] for r in q("SELECT name_key FROM entities WHERE user_id = ?", (user_id,))]
        named = mentions(text, names)
        if SELF_WORDS & {w.casefold() for w in _WORD.findall(text)}:
            named += [k for k in SELF_NAMES if k in names and k not in named]
        if not named:
            return []
        marks = ", ".join("?" * len(named))
        rows = q(f"SELECT id, subject, predicate, object, fact_id, subject_key, object_key FROM relations "
                 f"WHERE user_id = ? AND (subject_key IN ({marks}) OR object_key IN ({marks})) ORDER BY id",
                 (user_id, *named, *named))
        rels = [Relation(r[1], r[2], r[3], int(r[0]), user_id, r[4]) for r in rows]
        for h in hits:
            h.related = [rel for rel in rels if rel.fact_id == h.fact.id]
        found: dict[int, tuple[Fact, float, list[Relation]]] = {}
        linked = self._facts_by_id(q, user_id, [rel.fact_id for rel in rels if rel.fact_id], now)
        for rel in rels:
            if rel.fact_id in linked:
                fact, _, via = found.get(rel.fact_id, (linked[rel.fact_id], 1.0, []))
                found[rel.fact_id] = (fact, 1.0, via + [rel])
        others: dict[str, list[Relation]] = {}
        for rel, skey, okey in zip(rels, (r[5] for r in rows), (r[6] for r in rows)):
            for key in (skey, okey):
                if key not in named:
                    others.setdefault(key, []).append(rel)
        phrases = [_WORD.findall(key) for key in others]
        matches = self._text_search(q, user_id, [p for p in phrases if p], now, max(4 * n, 20)) if others else []
        top = max((r for _, r in matches), default=0.0) or 1.0
        for fact, score in matches:
            if fact.id not in found:
                via = [rel for key, rs in others.items() if mentions(fact.text, [key]) for rel in rs]
                found[fact.id] = (fact, score / top, via)
        seen = {h.fact.id for h in hits}
        graph = [Hit(f, GRAPH_WEIGHT * blend(r, f, now), "graph", via)
                 for f, r, via in found.values() if f.id not in seen]
        return sorted(graph, key=lambda h: -h.score)[:n]

    def search(self, user_id: str, query: str, *, limit: int | None = None, tier: Tier = "balanced",
               now: float | None = None) -> list[Hit]:
        """Active, unexpired facts of this user for `query`, best first.

        Text relevance: the backend's rank (SQLite BM25, Postgres ts_rank) over the query's
        words OR-ed, divided by the best candidate's, so 0..1. Each hit scores
        `0.7 * relevance + 0.2 * importance + 0.1 * recency`, recency = 0.5 ** (age_days / 30)
        from `updated_at`. With an embedder, the vector candidates (cosine >= `min_similarity`,
        blended the same way with cosine as relevance) and the text candidates are fused by
        reciprocal rank fusion, score = sum 1 / (60 + rank) divided by 2 / 61 (first in both: 1.0);
        `via` is "text" if the fact matched text, else "vector". `limit` defaults to the tier's:
        fast 3, balanced 8, deep 8; "deep" then adds up to `limit` graph hits (`via="graph"`,
        score 0.5 * blend, `related` = the relations that led there; see `_graph`), and the whole
        list is sorted by score.
        Every returned fact counts an access (`access_count`, `last_accessed_at`).
        """
        _check_user(user_id)
        now = time.time() if now is None else now
        n = TIER_LIMITS.get(tier, 8) if limit is None else limit
        if n <= 0 or not (query or "").strip():
            return []
        qvec = self._query_vector(query)
        with self._reads() as (q, _run):
            hits = self._ranked(q, user_id, query, qvec, now, n)
            if tier == "deep":
                hits = sorted(hits + self._graph(q, user_id, query, now, hits, n), key=lambda h: -h.score)
            if hits:
                ids = [h.fact.id for h in hits]
                # every hit is active; `status` lets SQLite seek (user_id, status, id) in its index instead
                # of walking all the user's rows (1.3 ms at 10k facts of one user)
                q(f"UPDATE facts SET access_count = access_count + 1, last_accessed_at = ? "
                  f"WHERE user_id = ? AND status = 'active' AND id IN ({', '.join('?' * len(ids))})",
                  (now, user_id, *ids))
                for h in hits:
                    h.fact.access_count += 1
                    h.fact.last_accessed_at = now
        return hits

    def list_facts(self, user_id: str, *, status: FactStatus | None = "active") -> list[Fact]:
        """The user's facts, oldest first. "active" leaves out facts past `expires_at`."""
        _check_user(user_id)
        with self._tx() as (q, _run):
            if status == "active":
                rows = q(f"SELECT {FACT_COLS} FROM facts WHERE user_id = ? AND {_ACTIVE} ORDER BY id",
                         (user_id, time.time()))
            elif status is None:
                rows = q(f"SELECT {FACT_COLS} FROM facts WHERE user_id = ? ORDER BY id", (user_id,))
            else:
                rows = q(f"SELECT {FACT_COLS} FROM facts WHERE user_id = ? AND status = ? ORDER BY id",
                         (user_id, status))
        return [self._fact(r) for r in rows]

    def list_entities(self, user_id: str) -> list[Entity]:
        _check_user(user_id)
        with self._tx() as (q, _run):
            rows = q("SELECT id, name, type FROM entities WHERE user_id = ? ORDER BY id", (user_id,))
        return [Entity(r[1], r[2], int(r[0]), user_id) for r in rows]

    def list_relations(self, user_id: str) -> list[Relation]:
        _check_user(user_id)
        with self._tx() as (q, _run):
            rows = q("SELECT id, subject, predicate, object, fact_id FROM relations WHERE user_id = ? ORDER BY id",
                     (user_id,))
        return [Relation(r[1], r[2], r[3], int(r[0]), user_id, r[4]) for r in rows]

    def similar_facts(self, user_id: str, text: str, *, limit: int = 5) -> list[Fact]:
        """Active facts sharing words (or, with an embedder, meaning) with `text`; no access counted."""
        _check_user(user_id)
        if limit <= 0 or not (text or "").strip():
            return []
        qvec = self._query_vector(text)
        with self._reads() as (q, _run):
            return [h.fact for h in self._ranked(q, user_id, text, qvec, time.time(), limit)]

    # -- changing --------------------------------------------------------------
    def supersede(self, user_id: str, old_id: int, new_id: int) -> None:
        """Mark `old_id` superseded by `new_id`; KeyError if either is not this user's fact."""
        _check_user(user_id)
        with self._tx() as (q, run):
            if not q("SELECT id FROM facts WHERE user_id = ? AND id = ?", (user_id, new_id)):
                raise KeyError(f"no fact {new_id} for this user")
            if not run("UPDATE facts SET status = 'superseded', superseded_by = ?, updated_at = ? "
                       "WHERE user_id = ? AND id = ?", (new_id, time.time(), user_id, old_id)):
                raise KeyError(f"no fact {old_id} for this user")
            self._bump(q, user_id)

    def update_fact(self, user_id: str, fact_id: int, *, text: str | None = None,
                    importance: float | None = None, expires_at: float | None = None) -> None:
        """Change the given fields (None leaves one as it is); KeyError if not this user's fact."""
        _check_user(user_id)
        sets: list[str] = ["updated_at = ?"]
        args: list[Any] = [time.time()]
        text = clean_text(text) if text is not None else None
        if text:
            sets.append("text = ?"), args.append(text)
        if importance is not None:
            sets.append("importance = ?"), args.append(min(1.0, max(0.0, float(importance))))
        if expires_at is not None:
            sets.append("expires_at = ?"), args.append(expires_at)
        vectors = self._embed([text]) if text else None
        with self._tx() as (q, run):
            if not run(f"UPDATE facts SET {', '.join(sets)} WHERE user_id = ? AND id = ?",
                       (*args, user_id, fact_id)):
                raise KeyError(f"no fact {fact_id} for this user")
            if text:
                q("DELETE FROM vectors WHERE user_id = ? AND fact_id = ?", (user_id, fact_id))
                self._bump(q, user_id)
                self._store_vectors(q, user_id, [fact_id], vectors)

    def curate(self, *, now: float | None = None, stale_after: float = 90 * 86400,
               archive_below: float = 0.3, delete_expired: bool = False,
               user_id: str | None = None, promote_after: int = 3, promote_by: float = 0.1,
               promote_max: float = 0.9) -> dict[str, int]:
        """For every user (or only `user_id`):

        - expired: active facts past `expires_at` become "expired" (deleted instead, with their vectors,
          when `delete_expired`);
        - promoted (access-based importance): active facts found by `promote_after` more searches since
          their last promotion gain `promote_by` importance, up to `promote_max` (what is used stays);
        - archived: active facts with importance < `archive_below` not accessed (nor updated) for
          `stale_after` seconds become "archived".

        Returns the counts. The worker runs it every `Memory(curate_every=...)` seconds."""
        now = time.time() if now is None else now
        scope, arg = ("user_id = ? AND ", (_check_user(user_id),)) if user_id is not None else ("", ())
        due = f"{scope}status = 'active' AND expires_at IS NOT NULL AND expires_at <= ?"
        with self._tx() as (q, run):
            if delete_expired:
                q(f"DELETE FROM vectors WHERE fact_id IN (SELECT id FROM facts WHERE {due})", (*arg, now))
                expired = run(f"DELETE FROM facts WHERE {due}", (*arg, now))
            else:
                expired = run(f"UPDATE facts SET status = 'expired', updated_at = ? WHERE {due}", (now, *arg, now))
            promoted = run(f"UPDATE facts SET importance = CASE WHEN importance + ? > ? THEN ? ELSE importance + ? END, "
                           f"promoted_at_count = access_count WHERE {scope}status = 'active' AND importance < ? "
                           f"AND access_count - promoted_at_count >= ?",
                           (promote_by, promote_max, promote_max, promote_by, *arg, promote_max, promote_after))
            cutoff = now - stale_after
            archived = run(f"UPDATE facts SET status = 'archived', updated_at = ? WHERE {scope}status = 'active' "
                           f"AND importance < ? AND COALESCE(last_accessed_at, updated_at) < ? AND updated_at < ?",
                           (now, *arg, archive_below, cutoff, cutoff))
            if expired > 0 or archived > 0:  # searchable vectors changed: every cached matrix is stale
                run(f"UPDATE user_state SET version = version + 1{' WHERE user_id = ?' if user_id else ''}", arg)
        return {"expired": max(0, expired), "archived": max(0, archived), "promoted": max(0, promoted)}

    def forget(self, user_id: str) -> int:
        """Delete every row of this user in every table. Returns the rows deleted."""
        _check_user(user_id)
        with self._tx() as (_q, run):
            return sum(max(0, run(f"DELETE FROM {t} WHERE user_id = ?", (user_id,))) for t in self._tables)


