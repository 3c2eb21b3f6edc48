"""User-scoped memory: a `search_memory` tool the model calls mid-stream, and
background learning from each finished exchange. See `Memory`."""
