"""User-scoped memory: a `search_memory` tool the model calls mid-stream, and
background learning from each finished exchange. See `Memory` and `with_memory`.

    from llmrelay.memory import Memory, with_memory

    chat = with_memory(client, user_id="alice", memory=Memory(path="memory.db"))
    chat.stream("anthropic:claude-sonnet-4-5", "Where do I live again?")

Stores: `SQLiteMemoryStore` (embedded, the default) and `PostgresMemoryStore`
(`llmrelay.memory.postgres_store`), both `MemoryStore`s. Names load lazily:
`import llmrelay.memory` costs nothing until one is used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Memory": "memory", "UserMemory": "memory", "format_hits": "memory",
    "MemoryClient": "client", "with_memory": "memory",
    "Learner": "learn", "SalienceGate": "learn", "LearnResult": "learn", "LearnError": "learn",
    "extraction_types": "learn", "DEFAULT_EXTRACT_MODEL": "learn",
    "Extraction": "learn", "ExtractedFact": "learn", "ExtractedEntity": "learn", "ExtractedRelation": "learn",
    "Worker": "worker", "MemoryEvent": "worker", "MemoryStats": "worker",
    "MemoryStore": "types", "NewFact": "types", "Fact": "types", "Entity": "types", "Relation": "types",
    "Hit": "types", "Tier": "types", "Task": "types", "PendingExchange": "types",
    "SQLiteMemoryStore": "sqlite_store", "PostgresMemoryStore": "postgres_store",
    "Embedder": "embed", "HashingEmbedder": "embed", "LocalEmbedder": "embed", "OpenAIEmbedder": "embed",
    "AUTO": "embed", "default_embedder": "embed", "local_available": "embed",
    "parse_due": "tasks", "schedule_tool": "tasks",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrelay.memory' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS)
