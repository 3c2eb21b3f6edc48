"""Transports: the only code that touches sockets.

`httpx.py` (sync, and the httpx async backend) and `aiohttp.py` (the default async
backend when aiohttp is installed) send an `HTTPRequest` and hand back the body's
chunks, with the timeouts and typed connection errors. Imported lazily by `Client`
on the first call. May import only the vocabulary (call, errors, timeouts).
"""
