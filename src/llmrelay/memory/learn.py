"""Learning from a finished exchange: salience gate -> extraction -> consolidation.

Runs on the memory worker's threads (`llmrelay.memory.worker`), never on the
stream's. Each stage that fails raises `LearnError(stage)` (the cause chained),
which the worker reports; nothing is half written by a failed extraction.

**Salience gate** (`SalienceGate`, cheap, no model call). An exchange is skipped
when the user's message is:

- empty, or only greetings / thanks / acknowledgements ("hi", "thanks!",
  "ok cool", "good morning"): every word is in `CHITCHAT_WORDS`;
- shorter than `min_words` (3) words with no digit, no first-person word and no
  capitalized word after the first;
- a question with no first-person marker ("What is the capital of France?"):
  asking about the world tells nothing about the user;
- a question about the user that states nothing ("What's my job?", "Do I have
  a dog?"): every clause is a question (it ends with "?" or starts with a
  question word) and none starts with a first-person subject ("I'm vegetarian,
  what should I cook?" passes). Its answer is already in memory or unknown.

"remember" / "don't forget" / "note that" always pass. With `embedder=` (a
`llmrelay.memory.embed.Embedder`, or a callable `list[str] -> list[vector]`) a
message that passed the heuristics must also be at least `threshold` cosine
-similar to one of `prototypes` (short personal statements).

**Extraction**: one structured-output call through llmrelay itself
(`client.complete(model, ..., output=Extraction)`, validated by pydantic) with
`Learner.model` when set, else the model of the conversation the exchange came
from (else `DEFAULT_EXTRACT_MODEL`). The prompt carries the user's stored facts most similar
to the message (`store.similar_facts`), so the model can say which old fact a new
one corrects.

**Consolidation** (per extracted fact, against `store.similar_facts`):

- duplicate (`Learner.same_fact`): same normalized text (lowercase, no
  punctuation, no articles); or, only when it is safe — the same numbers and
  the same names in the same order, and the shared words in the same order —
  word-set Jaccard >= `duplicate_jaccard` (0.9) or embedding cosine >=
  `duplicate_cosine` (0.93). "Room code 1 2 3 4" and "Room code 4 3 2 1" are
  two facts. -> the old fact is kept and updated (importance = max, expiry from
  the new one), nothing new is added; every merge is counted in the stats;
- contradiction, detected two cheap ways:
  1. the model marks it: `replaces: "<old fact text>"` (it saw the similar facts);
     the old fact found by normalized text / Jaccard >= `replaces_jaccard` (0.6)
     is superseded by the new one;
  2. a relation on a single-valued predicate (`SINGLE_VALUED`: lives_in,
     works_at, age, ...) with the same subject and a different object than a
     stored relation supersedes the stored relation's fact. This needs a store
     with `list_relations(user_id)` (optional; skipped otherwise).
"""

from __future__ import annotations

import re
import time
from functools import partial
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .embed import cosine
from .types import Entity, Fact, NewFact, Relation

if TYPE_CHECKING:
    from .memory import Memory

DEFAULT_EXTRACT_MODEL = "openai:gpt-4o-mini"

CHITCHAT_WORDS = frozenset("""
hi hey hello hiya yo howdy greetings there all everyone folks guys morning afternoon evening night good day gm gn
thanks thank you thx ty cheers much very so lot a the
ok okay k kk sure yes yeah yep yup no nope nah fine cool great nice awesome perfect alright right
got it understood lol haha hehe hmm ah oh wow bye goodbye see later cya ttyl welcome
how are you u r doing what's up whats sup please pls np problem sounds
""".split())
FIRST_PERSON = frozenset("i i'm im i've ive i'd id i'll me my mine myself we we're our ours us".split())
ALWAYS_KEEP = re.compile(r"\b(remember|don'?t forget|note that|keep in mind|from now on)\b", re.I)
PROTOTYPES = (
    "My name is Sam and I live in Berlin.",
    "I prefer short answers and I am vegetarian.",
    "I work as a nurse at the city hospital.",
    "My daughter's birthday is on March 3rd.",
    "I am allergic to peanuts.",
    "Our team uses Postgres and deploys on Fridays.",
)
SINGLE_VALUED = frozenset({
    "lives_in", "home_city", "located_in", "works_at", "works_for", "employer", "job_title", "job", "role",
    "name", "is_named", "age", "born_on", "birthday", "married_to", "timezone", "email", "phone", "nationality",
})

_WORD = re.compile(r"[\w']+", re.UNICODE)
QUESTION_WORDS = frozenset(
    "what what's whats who who's whom whose where where's when when's why how how's which do does did am is are "
    "was were can could will would should shall have has had may might any".split())
FIRST_PERSON_SUBJECTS = frozenset("i i'm im i've ive i'd i'll my we we're our".split())
_SENTENCES = re.compile(r"[^.!?]+[.!?]*")
_CLAUSES = re.compile(r"[,;:]|\b(?:and|but|so|because)\b", re.I)
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_ARTICLES = frozenset({"the", "a", "an"})


class LearnError(Exception):
    """A stage of learning failed: `stage` is "gate", "extract" or "consolidate"; `model`: the
    extraction model, when known."""

    def __init__(self, stage: str, message: str, model: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.model = model


# -- salience gate -----------------------------------------------------------------------------------
def _embed(embedder: Any, texts: list[str]) -> list[list[float]]:
    fn = getattr(embedder, "embed", None) or embedder
    return [list(v) for v in fn(texts)]


@dataclass
class SalienceGate:
    """Decides, cheaply, whether an exchange may hold something worth remembering (module docstring)."""

    min_words: int = 3
    embedder: Any = None
    threshold: float = 0.3
    prototypes: Sequence[str] = PROTOTYPES
    _proto_vectors: list[list[float]] | None = field(default=None, init=False, repr=False)

    def reason_to_skip(self, user_text: str) -> str | None:
        """None when the message passes; else why it is skipped."""
        text = (user_text or "").strip()
        if not text:
            return "empty"
        if ALWAYS_KEEP.search(text):
            return None
        words = [w.lower() for w in _WORD.findall(text)]
        if not words or all(w in CHITCHAT_WORDS for w in words):
            return "chit-chat"
        personal = any(w in FIRST_PERSON for w in words)
        if len(words) < self.min_words and not personal and not any(c.isdigit() for c in text) \
                and not any(w[:1].isupper() for w in _WORD.findall(text)[1:]):
            return "too short"
        if text.endswith("?") and not personal:
            return "impersonal question"
        if personal and _only_questions(text):
            return "question about the user"
        if self.embedder is not None:
            if self._proto_vectors is None:
                self._proto_vectors = _embed(self.embedder, list(self.prototypes))
            vec = _embed(self.embedder, [text])[0]
            best = max((cosine(vec, p) for p in self._proto_vectors), default=0.0)
            if best < self.threshold:
                return f"not salient (similarity {best:.2f} < {self.threshold})"
        return None


def _only_questions(text: str) -> bool:
    """Every sentence is a question and no clause starts with a first-person subject."""
    for sentence in _SENTENCES.findall(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        first = (_WORD.findall(sentence.lower()) or [""])[0]
        if not (sentence.endswith("?") or first in QUESTION_WORDS):
            return False
        for clause in _CLAUSES.split(sentence):
            words = _WORD.findall((clause or "").lower())
            if words and words[0] in FIRST_PERSON_SUBJECTS:
                return False
    return True


# -- the extraction schema -----------------------------------------------------------------------
def _schema() -> tuple[Any, ...]:
    from pydantic import BaseModel, Field, field_validator

    class ExtractedFact(BaseModel):
        """One durable fact about the user, as a standalone sentence."""

        text: str = Field(description="A standalone sentence in the third person, e.g. 'The user lives in Lisbon.'")
        importance: float = Field(description="0 (trivia) to 1 (essential: identity, health, strong preferences)")
        expires_in_days: Optional[float] = Field(
            None, description="Days until the fact stops being true (a trip next week: 10); null if durable")
        replaces: Optional[str] = Field(
            None, description="The exact text of a known fact this one corrects or updates; null otherwise")

        @field_validator("importance")
        @classmethod
        def _clamp(cls, v: float) -> float:
            return min(1.0, max(0.0, float(v)))

        @field_validator("text")
        @classmethod
        def _not_blank(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("fact text is empty")
            return v.strip()

    class ExtractedEntity(BaseModel):
        name: str
        type: str = Field(description="person, place, organization, project, product, pet, thing...")

    class ExtractedRelation(BaseModel):
        subject: str = Field(description="An entity name, or 'user' for the user")
        predicate: str = Field(description="snake_case, e.g. lives_in, works_at, likes, has_pet")
        object: str

    class Extraction(BaseModel):
        facts: list[ExtractedFact]
        entities: list[ExtractedEntity]
        relations: list[ExtractedRelation]

    types = (Extraction, ExtractedFact, ExtractedEntity, ExtractedRelation)
    for t in types:
        t.__qualname__ = t.__name__
        t.__module__ = __name__
    return types


_SCHEMA: tuple[Any, ...] | None = None


def extraction_types() -> tuple[Any, ...]:
    """(Extraction, ExtractedFact, ExtractedEntity, ExtractedRelation), built once (pydantic loads here)."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = _schema()
    return _SCHEMA


def __getattr__(name: str) -> Any:  # `from llmrelay.memory.learn import Extraction` without loading pydantic early
    names = ("Extraction", "ExtractedFact", "ExtractedEntity", "ExtractedRelation")
    if name in names:
        return extraction_types()[names.index(name)]
    raise AttributeError(name)


EXTRACTION_PROMPT = """You maintain a long-term memory about a user. From the exchange below, extract only \
durable information about the user (identity, circumstances, preferences, plans, people and things in their \
life) that the USER stated or confirmed. Ignore the assistant's general knowledge, small talk, and anything \
already known unless it changed. Write each fact as a standalone third-person sentence ("The user ..."). \
If a fact corrects or updates one of the known facts, copy that known fact's exact text into `replaces`. \
Give facts that stop being true (trips, deadlines) `expires_in_days`. Entities: the people, places, \
organizations and things named. Relations: subject-predicate-object triples with snake_case predicates, \
the user as "user". Return empty lists when there is nothing worth remembering. Today is {today}."""


# -- text helpers --------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def jaccard(a: str, b: str) -> float:
    sa, sb = set(normalize(a).split()), set(normalize(b).split())
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def _predicate(p: str) -> str:
    return "_".join(_PUNCT.sub(" ", p.lower()).split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + " [...]" + text[-14:]


@dataclass
class LearnResult:
    """What one exchange changed in the store (or why it changed nothing)."""

    skipped: str | None = None
    added: list[int] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    superseded: list[tuple[int, int]] = field(default_factory=list)  # (old, new)
    entities: int = 0
    relations: int = 0


@dataclass
class Learner:
    """The learning pipeline's configuration; `learn()` runs it once (on a worker thread)."""

    #: None: the conversation's model (else `DEFAULT_EXTRACT_MODEL`).
    model: str | None = None
    gate: SalienceGate | None = field(default_factory=SalienceGate)
    #: Extra arguments for the extraction call (`max_tokens`, `temperature`, `retry`...).
    params: dict[str, Any] = field(default_factory=dict)
    known_facts: int = 8
    max_chars: int = 6000
    duplicate_jaccard: float = 0.9
    duplicate_cosine: float = 0.93
    #: Skip the extraction call when the user's message only restates a stored fact (`_already_known`).
    skip_known: bool = True
    replaces_jaccard: float = 0.6
    single_valued: frozenset[str] = SINGLE_VALUED
    clock: Callable[[], float] = time.time

    def learn(self, memory: Memory, client: Any, user_id: str, user_text: str, reply: str,
              source: str | None = None, generation: int | None = None, *, model: str | None = None,
              keep: Callable[[], bool] | None = None) -> LearnResult:
        """Gate, extract, consolidate. `generation` / `keep()`: checked under the user's lock before
        writing; a changed generation or `keep()` False means the user was forgotten meanwhile."""
        if self.gate is not None:
            try:
                reason = self.gate.reason_to_skip(user_text)
            except Exception as exc:
                raise LearnError("gate", f"salience gate failed: {type(exc).__name__}: {exc}") from exc
            if reason is not None:
                return LearnResult(skipped=reason)
        store = memory.store
        try:
            known = store.similar_facts(user_id, user_text, limit=self.known_facts) if self.known_facts else []
        except Exception as exc:
            raise LearnError("consolidate", f"reading similar facts failed: {type(exc).__name__}: {exc}") from exc
        if known and self.skip_known and self._already_known(memory.store, user_text, known):
            return LearnResult(skipped="nothing new")
        extraction = self.extract(client, user_text, reply, known, model=model)
        if not extraction.facts and not extraction.entities and not extraction.relations:
            return LearnResult(skipped="nothing to remember")
        with memory.user_lock(user_id):
            if (generation is not None and memory.generation(user_id) != generation) or (keep is not None and not keep()):
                return LearnResult(skipped="forgotten")  # forget() ran after this exchange (here or elsewhere)
            try:
                return self.consolidate(store, user_id, extraction, source)
            except Exception as exc:
                raise LearnError("consolidate", f"storing failed: {type(exc).__name__}: {exc}") from exc

    def extract(self, client: Any, user_text: str, reply: str, known: Sequence[Fact] = (), *,
                model: str | None = None) -> Any:
        """The structured extraction call (raises `LearnError("extract")`) with `self.model`, else
        `model` (the conversation's), else `DEFAULT_EXTRACT_MODEL`."""
        model = self.model or model or DEFAULT_EXTRACT_MODEL
        Extraction = extraction_types()[0]
        lines = []
        if known:
            lines.append("Known facts about the user (may be outdated):")
            lines += [f"- {f.text}" for f in known]
            lines.append("")
        lines += ["Exchange:", f"USER: {_clip(user_text, self.max_chars)}", f"ASSISTANT: {_clip(reply, self.max_chars)}"]
        today = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
        messages = [{"role": "system", "content": EXTRACTION_PROMPT.format(today=today)},
                    {"role": "user", "content": "\n".join(lines)}]
        params = {"tags": {"llmrelay.memory": "extract"}, **self.params}
        try:
            return client.complete(model, messages, output=Extraction, **params).output
        except Exception as exc:
            raise LearnError("extract", f"extraction with {model} failed: {type(exc).__name__}: {exc}",
                             model) from exc

    def consolidate(self, store: Any, user_id: str, extraction: Any, source: str | None = None) -> LearnResult:
        result = LearnResult()
        now = self.clock()
        ids: list[tuple[int, str]] = []  # (fact id, text) of this exchange's facts, for relation links
        for ef in extraction.facts:
            expires = now + ef.expires_in_days * 86400 if ef.expires_in_days else None
            similar = list(store.similar_facts(user_id, ef.text, limit=5))
            dup = next((f for f in similar
                        if self.same_fact(f.text, ef.text, partial(_similarity, store, f, ef.text))), None)
            if dup is not None:
                store.update_fact(user_id, dup.id, importance=max(dup.importance, ef.importance),
                                  expires_at=expires if expires is not None else dup.expires_at)
                result.merged.append(dup.id)
                ids.append((dup.id, ef.text))
                continue
            old = self._replaced(store, user_id, ef.replaces, similar) if ef.replaces else None
            new_id = store.add_facts(user_id, [NewFact(ef.text, ef.importance, expires, source)])[0]
            result.added.append(new_id)
            ids.append((new_id, ef.text))
            if old is not None and old.id != new_id:
                store.supersede(user_id, old.id, new_id)
                result.superseded.append((old.id, new_id))
        if extraction.entities:
            store.add_entities(user_id, [Entity(e.name.strip(), (e.type or "thing").strip().lower())
                                         for e in extraction.entities if e.name.strip()])
            result.entities = len(extraction.entities)
        relations = [Relation(r.subject.strip(), _predicate(r.predicate), r.object.strip(), fact_id=_link(r, ids))
                     for r in extraction.relations if r.subject.strip() and r.predicate.strip() and r.object.strip()]
        if relations:
            self._relation_conflicts(store, user_id, relations, result)
            store.add_relations(user_id, relations)
            result.relations = len(relations)
        return result

    def _already_known(self, store: Any, user_text: str, known: Sequence[Fact]) -> bool:
        """The message, in the third person ("I live in Lisbon." -> "The user lives in Lisbon."), is the
        same fact as a stored one by `same_fact`'s safe rules (a message of several sentences never is)."""
        sentences = [x for x in _SENTENCES.findall(user_text.strip()) if x.strip()]
        if len(sentences) != 1:
            return False
        restated = third_person(sentences[0])
        return any(self.same_fact(f.text, restated, partial(_similarity, store, f, restated)) for f in known)

    def same_fact(self, a: str, b: str, similarity: float | Callable[[], float | None] | None = None) -> bool:
        """Whether `b` says the same as the stored `a` (module docstring: merged only when safe).
        `similarity`: their embedding cosine, or a function computing it (called only when needed)."""
        if normalize(a) == normalize(b):
            return True
        if _signature(a) != _signature(b) or not _same_order(a, b):
            return False
        if jaccard(a, b) >= self.duplicate_jaccard:
            return True
        if callable(similarity):
            similarity = similarity()
        return similarity is not None and similarity >= self.duplicate_cosine

    def _replaced(self, store: Any, user_id: str, text: str, similar: list[Fact]) -> Fact | None:
        candidates = similar + [f for f in store.similar_facts(user_id, text, limit=5) if f.id not in {s.id for s in similar}]
        best, score = None, 0.0
        for f in candidates:
            s = 1.0 if normalize(f.text) == normalize(text) else jaccard(f.text, text)
            if s > score:
                best, score = f, s
        return best if score >= self.replaces_jaccard else None

    def _relation_conflicts(self, store: Any, user_id: str, relations: list[Relation], result: LearnResult) -> None:
        """Rule 2 of the module docstring: a single-valued predicate with a new object supersedes."""
        lister = getattr(store, "list_relations", None)
        functional = [r for r in relations if r.predicate in self.single_valued and r.fact_id is not None]
        if lister is None or not functional:
            return
        stored = list(lister(user_id))
        done = {old for old, _ in result.superseded}
        for r in functional:
            for s in stored:
                if (s.fact_id is not None and s.fact_id != r.fact_id and s.fact_id not in done
                        and _predicate(s.predicate) == r.predicate and normalize(s.subject) == normalize(r.subject)
                        and normalize(s.object) != normalize(r.object) and r.fact_id in result.added):
                    store.supersede(user_id, s.fact_id, r.fact_id)
                    result.superseded.append((s.fact_id, r.fact_id))
                    done.add(s.fact_id)


_THIRD = [(re.compile(p, re.I), r) for p, r in (
    (r"\bI'm\b|\bI am\b", "the user is"), (r"\bI've\b", "the user has"), (r"\bI'll\b", "the user will"),
    (r"\bI'd\b", "the user would"), (r"\bmy\b", "the user's"), (r"\bmine\b", "the user's"),
    (r"\bme\b", "the user"), (r"\bI\b", "the user"))]
_VERB_S = re.compile(r"\b(the user) (?!is\b|has\b|will\b|would\b|was\b|can\b|could\b|should\b|must\b|"
                     r"did\b|does\b|had\b|might\b|may\b)([a-z]+?)(y?)\b(?=\s|$|[.,!])", re.I)


def third_person(text: str) -> str:
    """A first-person statement in the third person, as extraction writes facts (a cheap approximation:
    "I live in Lisbon." -> "The user lives in Lisbon.")."""
    out = text.strip()
    for pattern, repl in _THIRD:
        out = pattern.sub(repl, out)

    def verb(m: re.Match[str]) -> str:
        stem, y = m.group(2), m.group(3)
        if y:
            return f"{m.group(1)} {stem}ies"
        if stem.lower() == "have":
            return f"{m.group(1)} has"
        return f"{m.group(1)} {stem}{'es' if stem.endswith(('s', 'sh', 'ch', 'x', 'o')) else 's'}"

    out = _VERB_S.sub(verb, out, count=1)
    return out[:1].upper() + out[1:]


def _signature(text: str) -> tuple[list[str], list[str]]:
    """The numbers and the names (capitalized words after the first), in order: what two facts must
    share, exactly, to be merged by similarity."""
    words = _WORD.findall(text)
    names = [w.casefold() for w in words[1:] if w[:1].isupper() and w.casefold() not in _ARTICLES]
    return _NUMBER.findall(text), names


def _same_order(a: str, b: str) -> bool:
    wa, wb = normalize(a).split(), normalize(b).split()
    shared = set(wa) & set(wb)
    return [w for w in dict.fromkeys(wa) if w in shared] == [w for w in dict.fromkeys(wb) if w in shared]


def _similarity(store: Any, fact: Fact, text: str) -> float | None:
    """Cosine of the two texts by the store's embedder (None without one, or if it fails)."""
    embedder = getattr(store, "embedder", None)
    if embedder is None:
        return None
    try:
        va, vb = _embed(embedder, [fact.text, text])
    except Exception:  # noqa: BLE001 - without a similarity, only the textual rules merge
        return None
    return cosine(va, vb)


def _link(r: Any, ids: list[tuple[int, str]]) -> int | None:
    """The fact of this exchange that states the relation: its text names the object (and the subject,
    unless the subject is the user)."""
    obj, subj = normalize(r.object), normalize(r.subject)
    for fid, text in ids:
        t = f" {normalize(text)} "
        if obj and f" {obj} " in t and (subj in ("user", "i", "me") or f" {subj} " in t):
            return fid
    return None
