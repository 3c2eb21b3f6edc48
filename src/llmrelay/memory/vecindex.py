"""Vectorised nearest-neighbour search over one user's vectors: a bounded in-process cache of
per-user matrices, kept in step with the store by a per-user version number.

A store bumps `user_state.version` in the same transaction as every change to a user's active
facts or vectors (a write of any process). A search reads that number (one indexed row); when the
cached matrix is of the same version it is used as is, else the user's active vectors are read
again (once) into a float32 matrix whose rows are L2-normalized. Similarity is then one
matrix-vector product and an `argpartition` (NumPy), not a Python loop.

Without NumPy the scan is the exact pure-Python loop (`cosine`), so nothing breaks; NumPy comes
with the `memory-local` extra (the local embedder needs it anyway).

The cache is an LRU bounded by bytes (`max_bytes`, 256 MB by default: 170k 384-d vectors);
a user whose matrix alone is larger is searched without caching.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

from .embed import cosine
from .nputil import numpy_module as _numpy

Loader = Callable[[], list[tuple[int, Any]]]  # [(fact_id, vector as stored)]


class VectorIndex:
    def __init__(self, unpack: Callable[[Any], Sequence[float]], *, max_bytes: int = 256 << 20):
        self.unpack = unpack
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, int], tuple[int, Any, Any]] = OrderedDict()
        self._bytes = 0
        self.loads = 0  # matrices (re)built: for tests and the benchmark

    def _matrix(self, np: Any, rows: list[tuple[int, Any]], dims: int) -> tuple[Any, Any]:
        ids = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))
        mat = np.empty((len(rows), dims), dtype=np.float32)
        for i, (_fid, raw) in enumerate(rows):
            mat[i] = self.unpack(raw)
        np.nan_to_num(mat, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat /= np.maximum(norms, 1e-12)
        return ids, mat

    def search(self, user_id: str, model: str, query: Sequence[float], version: int, load: Loader,
               k: int, min_similarity: float) -> list[tuple[int, float]]:
        """The `k` most similar (fact id, cosine) with cosine >= `min_similarity`, best first."""
        np = _numpy()
        if np is None:
            scored = [(int(fid), cosine(query, self.unpack(raw))) for fid, raw in load()]
            return sorted((s for s in scored if s[1] >= min_similarity), key=lambda s: -s[1])[:k]
        dims = len(query)
        key = (user_id, model, dims)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry[0] == version:
                self._cache.move_to_end(key)
                ids, mat = entry[1], entry[2]
            else:
                entry = None
        if entry is None:
            ids, mat = self._matrix(np, load(), dims)
            self.loads += 1
            self._put(key, version, ids, mat)
        if not len(ids):
            return []
        q = np.asarray(query, dtype=np.float32)
        qn = float(np.linalg.norm(q))
        if not qn:
            return []
        sims = mat @ (q / qn)
        if k < len(sims):
            top = np.argpartition(-sims, k)[:k]
        else:
            top = np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(ids[i]), float(sims[i])) for i in top if sims[i] >= min_similarity]

    def _put(self, key: tuple[str, str, int], version: int, ids: Any, mat: Any) -> None:
        size = int(mat.nbytes + ids.nbytes)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._bytes -= int(old[1].nbytes + old[2].nbytes)
            self._cache[key] = (version, ids, mat)
            self._bytes += size
            while self._bytes > self.max_bytes and self._cache:
                _k, (_v, i, m) = self._cache.popitem(last=False)
                self._bytes -= int(i.nbytes + m.nbytes)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._bytes = 0


__all__ = ["VectorIndex"]
