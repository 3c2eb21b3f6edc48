"""Test your application offline with real recorded provider streams.

- `ReplayServer`, `Reply`: a real HTTP server on 127.0.0.1 serving recorded
  bytes split at random (or realistic) boundaries, recording every request.
- `recordings`: the bundled real streams and their provenance.
- `client_for(server)`: a `Client` whose every provider points at the server.
- `by_request()`: a `ReplayServer(default=...)` handler that picks a bundled
  recording from each request's path and model (what `llmrelay replay` runs;
  see `llmrelay.testing.routes`).
- `faults`: scripted failures per request (HTTP errors with `Retry-After`,
  resets, cuts after N events, in-band error events in each protocol's own
  format, stalls, malformed chunks, slow drips), to test retries and fallback:

      server.enqueue(faults.status(503), faults.cut("anthropic/text_basic.sse", after=5))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import faults, routes
from .recordings import index, provider_for, read_recording, recording_path, request_for, wire_recordings
from .routes import by_request
from .server import RecordedRequest, ReplayServer, Reply

if TYPE_CHECKING:
    from ..client import Client

#: Path prefix each protocol expects under a provider's base URL.
BASE_PATHS = {
    "openai_chat": "/v1",
    "openai_responses": "/v1",
    "anthropic": "",
    "gemini": "/v1beta",
    "ollama": "",
    "cohere": "",
    "cohere_v1": "",
}
#: Path prefix under the server for a cloud provider's endpoint (Azure: the resource endpoint;
#: Bedrock: the runtime endpoint; Vertex: the API root before /projects/...).
CLOUD_PATHS = {"azure": "", "aws": "", "google": "/v1"}


def client_for(server: ReplayServer, **kwargs: Any) -> Client:
    """A `Client` with every known provider's base URL on the replay server and dummy keys."""
    from ..client import Client
    from ..providers import PROVIDERS

    from ..cloud.google import GoogleAuth

    base_urls = {name: server.url + (CLOUD_PATHS[p.cloud] if p.cloud else BASE_PATHS.get(p.protocol, ""))
                 for name, p in PROVIDERS.items()}
    keys: dict[str, Any] = {name: "test-key" for name in PROVIDERS}
    keys["vertex"] = GoogleAuth(token="test-key", project="test-project", location="us-central1")
    base_urls.update(kwargs.pop("base_urls", {}))
    keys.update(kwargs.pop("api_keys", {}))
    return Client(base_urls=base_urls, api_keys=keys, **kwargs)


__all__ = [
    "faults",
    "routes",
    "by_request",
    "ReplayServer",
    "Reply",
    "RecordedRequest",
    "client_for",
    "index",
    "provider_for",
    "read_recording",
    "recording_path",
    "request_for",
    "wire_recordings",
]
