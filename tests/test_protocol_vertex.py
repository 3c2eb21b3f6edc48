"""Google Vertex AI: every recorded Vertex stream through the real HTTP path, Gemini and Claude URL
forms (regional and `global` hosts), auth (token, token callable, google-auth credentials refreshed
when expired), missing settings, prices, and the Claude-on-Vertex request compared with the
anthropic SDK's own `AnthropicVertex` client; fallback Bedrock Claude -> Anthropic -> Vertex Claude.
"""

from __future__ import annotations

import datetime

import pytest

from helpers import collect, run, texts

import llmrelay
from llmrelay import FallbackEvent, MissingAPIKeyError
from llmrelay.cloud import GoogleAuth
from llmrelay.errors import MissingCredentialsError
from llmrelay.testing import Reply, client_for, faults, read_recording, wire_recordings

RECORDINGS = [n for n in wire_recordings() if n.startswith("vertex/")]
AUTH = GoogleAuth(token="ya29.tok", project="test-project", location="us-central1")
GEMINI_PATH = "/v1/projects/test-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"

#: name -> (text start, finish, input, output, model), read from the recordings by hand
CASES = {
    "vertex/gemini_sse_google_search_grounding.sse": ("Pydantic AI's documentation can be found", "STOP", 16, 226),
    "vertex/gemini_sse_text_gemini25flash.sse": ("When systems hum, a silent, complex art,", "STOP", 8, 2581),
    "vertex/gemini_sse_text_gemini25flash_async.sse": ("In tangled webs of cloud and code,", "STOP", 8, 2464),
    "vertex/gemini_sse_text_gemini25flash_async_2.sse": ("In digital realms, where tangled systems weave,", "STOP", 8, 1514),
}


def vertex_client(server, **kw):
    return llmrelay.Client(base_urls={"vertex": server.url + "/v1"}, api_keys={"vertex": AUTH}, env={}, retry=0, **kw)


def faults_text(name: str) -> str:
    """The text of a whole Anthropic recording, decoded offline."""
    from llmrelay.events import TextDelta
    from llmrelay.protocols import anthropic

    d = anthropic.Decoder()
    out = d.feed(read_recording(name)) + d.end()
    return "".join(e.text for e in out if type(e) is TextDelta)


def test_every_vertex_recording_has_a_case():
    assert sorted(CASES) == RECORDINGS


@pytest.mark.parametrize("chunking", ["events", "random"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", RECORDINGS)
async def test_recordings(server, name, mode, chunking):
    start, finish, inp, out = CASES[name]
    c = vertex_client(server)
    server.enqueue(Reply.recording(name, chunking=chunking, max_piece=29))
    _, r = await collect(c, mode, "vertex:gemini-2.5-flash", "hi")
    await c.aclose()
    assert r.text.startswith(start) and r.raw_finish_reason == finish
    assert (r.usage.input_tokens, r.usage.output_tokens) == (inp, out)
    assert r.model == "gemini-2.5-flash"
    req = server.requests[0]
    assert req.path == GEMINI_PATH
    assert req.headers["authorization"] == "Bearer ya29.tok"
    assert "x-goog-api-key" not in req.headers
    # the same bytes through the Gemini API provider: the same protocol, the same response
    g = client_for(server, retry=0)
    server.enqueue(Reply.recording(name, chunking=chunking, max_piece=29))
    _, direct = await collect(g, mode, "gemini:gemini-2.5-flash", "hi")
    await g.aclose()
    assert (direct.text, direct.usage, direct.choices, direct.provider_events) == (r.text, r.usage, r.choices, r.provider_events)


def test_grounding_metadata_is_kept(server):
    c = vertex_client(server)
    server.enqueue(Reply.recording("vertex/gemini_sse_google_search_grounding.sse"))
    r = c.complete("vertex:gemini-2.5-flash", "hi")
    final = [e.data for e in r.provider_events if e.kind == "groundingMetadata" and e.data][-1]
    assert final["webSearchQueries"] and final["groundingChunks"]
    c.close()


def test_url_forms_and_env():
    env = {"GOOGLE_CLOUD_PROJECT": "proj-1", "GOOGLE_CLOUD_LOCATION": "europe-west4", "GOOGLE_OAUTH_ACCESS_TOKEN": "t"}
    _, req, _, _ = llmrelay.Client(env=env).prepare("vertex:gemini-2.5-pro", "hi")
    assert req.url == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/europe-west4"
                       "/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    assert req.headers["authorization"] == "Bearer t"
    _, req, _, _ = llmrelay.Client(env={**env, "GOOGLE_CLOUD_LOCATION": "global"}).prepare("vertex:gemini-2.5-pro", "hi")
    assert req.url.startswith("https://aiplatform.googleapis.com/v1/projects/proj-1/locations/global/publishers/google/")
    _, req, _, _ = llmrelay.Client(env={"GOOGLE_CLOUD_PROJECT": "p2", "GOOGLE_OAUTH_ACCESS_TOKEN": "t"}).prepare(
        "vertex:claude-sonnet-4-5@20250929", "hi", max_tokens=100)
    assert req.url == ("https://aiplatform.googleapis.com/v1/projects/p2/locations/global/publishers/anthropic/models/"
                       "claude-sonnet-4-5@20250929:streamRawPredict")
    assert req.json == {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 100,
                        "stream": True, "anthropic_version": "vertex-2023-10-16"}
    assert "anthropic-version" not in req.headers and "x-api-key" not in req.headers


def test_claude_on_vertex_request_equals_anthropic_vertex_sdk(server):
    """The anthropic SDK's AnthropicVertex client and llmrelay send the same request for the same call."""
    anthropic = pytest.importorskip("anthropic")
    pytest.importorskip("google.auth")
    server.enqueue(Reply.recording("anthropic/text_basic.sse"), Reply.recording("anthropic/text_basic.sse"))
    sdk = anthropic.AnthropicVertex(region="us-central1", project_id="test-project", access_token="ya29.tok",
                                    base_url=server.url + "/v1", max_retries=0)
    with sdk.messages.stream(model="claude-sonnet-4-5@20250929", max_tokens=300, system="Be brief.",
                             messages=[{"role": "user", "content": [{"type": "text", "text": "Two names for a pelican"}]}]) as s:
        sdk_message = s.get_final_message()
    sdk.close()
    c = vertex_client(server)
    r = c.complete("vertex:claude-sonnet-4-5@20250929",
                   [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two names for a pelican"}],
                   max_tokens=300)
    c.close()
    theirs, ours = server.requests
    assert ours.path == theirs.path
    assert ours.path.endswith("/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict")
    # everything but the version string: Google documents `vertex-2023-10-16` (what we send); this
    # anthropic SDK release sends its own API version date there instead
    assert ours.json["anthropic_version"] == "vertex-2023-10-16"
    assert {k: v for k, v in ours.json.items() if k != "anthropic_version"} == {
        k: v for k, v in theirs.json.items() if k != "anthropic_version"}
    assert ours.headers["authorization"] == theirs.headers["authorization"] == "Bearer ya29.tok"
    assert r.text == "".join(b.text for b in sdk_message.content if b.type == "text")
    assert (r.usage.output_tokens, r.raw_finish_reason) == (sdk_message.usage.output_tokens, sdk_message.stop_reason)


def test_token_callable_is_asked_before_every_request(server):
    issued = []

    def token() -> str:
        issued.append(f"tok{len(issued)}")
        return issued[-1]

    c = llmrelay.Client(base_urls={"vertex": server.url + "/v1"}, env={"GOOGLE_CLOUD_PROJECT": "test-project",
                        "GOOGLE_CLOUD_LOCATION": "us-central1"}, api_keys={"vertex": token}, retry=0)
    server.enqueue(Reply.recording("vertex/gemini_sse_text_gemini25flash.sse"),
                   Reply.recording("vertex/gemini_sse_text_gemini25flash.sse"))
    c.complete("vertex:gemini-2.5-flash", "hi")
    c.complete("vertex:gemini-2.5-flash", "hi")
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer tok0", "Bearer tok1"]
    c.close()


def test_google_auth_credentials_are_refreshed_when_expired(server):
    """google-auth credentials whose token expires: refreshed (by google-auth, through its refresh
    handler) before the request that needs it, and reused while valid."""
    oauth2 = pytest.importorskip("google.oauth2.credentials")
    refreshed = []

    def handler(request, scopes):
        refreshed.append(len(refreshed))
        return f"fresh-{len(refreshed)}", datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(hours=1)

    creds = oauth2.Credentials(token=None, refresh_handler=handler)
    auth = GoogleAuth(credentials=creds, project="test-project", location="us-central1")
    c = llmrelay.Client(base_urls={"vertex": server.url + "/v1"}, api_keys={"vertex": auth}, env={}, retry=0)
    for i in range(3):
        server.enqueue(Reply.recording("vertex/gemini_sse_text_gemini25flash.sse"))
        c.complete("vertex:gemini-2.5-flash", "hi")
        if i == 0:  # an hour goes by: the token has expired mid-session
            creds.expiry = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(seconds=1)
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer fresh-1", "Bearer fresh-2", "Bearer fresh-2"]
    c.close()


def test_missing_credentials_and_project():
    with pytest.raises(MissingCredentialsError) as info:
        llmrelay.Client(env={"GOOGLE_CLOUD_PROJECT": "p"}).prepare("vertex:gemini-2.5-flash", "hi")
    assert isinstance(info.value, MissingAPIKeyError)
    for needle in ("api_key=", "GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "gcloud auth application-default login",
                   "GoogleAuth"):
        assert needle in str(info.value)
    with pytest.raises(MissingCredentialsError, match="GOOGLE_CLOUD_PROJECT"):
        llmrelay.Client(env={"GOOGLE_OAUTH_ACCESS_TOKEN": "t"}).prepare("vertex:gemini-2.5-flash", "hi")


def test_adc_failure_is_typed(monkeypatch, tmp_path):
    """google-auth installed, no Application Default Credentials anywhere: a typed error, nothing sent."""
    pytest.importorskip("google.auth")
    for var in ("GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud ADC file
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server probe
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    from llmrelay.cloud import google

    monkeypatch.setattr(google, "_ADC", [])
    with pytest.raises(MissingCredentialsError, match="google-auth"):
        llmrelay.Client().prepare("vertex:gemini-2.5-flash", "hi")


def test_prices_for_gemini_and_claude_on_vertex(server):
    pytest.importorskip("genai_prices")
    from llmrelay.cost import cost_of
    from llmrelay.usage import Usage

    c = vertex_client(server)
    server.enqueue(Reply.recording("vertex/gemini_sse_text_gemini25flash.sse"), Reply.recording("anthropic/text_basic.sse"))
    r = c.complete("vertex:gemini-2.5-flash", "hi")
    assert r.cost.total == pytest.approx(cost_of("gemini", "gemini-2.5-flash", r.usage).total)
    r = c.complete("vertex:claude-sonnet-4-5@20250929", "hi")
    assert r.cost.total is not None and "anthropic" in r.cost.priced_as
    assert r.cost.total == pytest.approx(cost_of("anthropic", "claude-sonnet-4-5", Usage(
        input_tokens=r.usage.input_tokens, output_tokens=r.usage.output_tokens)).total)
    c.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_fallback_bedrock_claude_to_anthropic_to_vertex_claude(server, mode):
    """Bedrock fails before content (503), Anthropic is cut after text, Vertex Claude continues it (prefill)."""
    rec = "anthropic/text_basic.sse"
    server.enqueue(faults.status(503, protocol="bedrock"), faults.cut(rec, after=5), faults.ok(rec))
    c = client_for(server, retry=0)
    models = ["bedrock:us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic:claude-sonnet-4-5",
              "vertex:claude-sonnet-4-5@20250929"]
    events, err, r = await run(c, mode, models, "hi")
    await c.aclose()
    assert err is None, err
    modes = [(e.from_model, e.to_model, e.mode) for e in events if type(e) is FallbackEvent]
    assert modes == [(models[0], models[1], "fresh"), (models[1], models[2], "prefill")]
    partial = r.attempts[1].response.text
    whole = faults_text(rec)
    cont = whole.lstrip() if partial[-1:].isspace() else whole
    assert partial and r.text == partial + cont  # the cut text once, then the continuation
    assert texts(events) == r.text  # and the caller saw exactly that, in order
    third = server.requests[2]
    assert third.path.endswith("/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict")
    assert third.json["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": partial.rstrip()}]}
    assert [a.model for a in r.attempts] == models
