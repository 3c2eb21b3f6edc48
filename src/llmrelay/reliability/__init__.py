"""Reliability: middleware around one model turn, and the built-ins made with it.

`middleware.py` (the `Middleware` protocol and the runner), `retry.py` (`Retry`:
backoff, Retry-After, only before content), `fallback.py` (`Router`: the next model
answers in the same stream, modes prefill / user_turn / restart), `builtins.py`
(`Logging`, `Timeout`). Written as plans (engine), so sync and async share them.
May import the engine and below.
"""
