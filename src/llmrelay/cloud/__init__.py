"""Cloud providers: where a request goes and how it is authenticated (Azure OpenAI, AWS Bedrock,
Google Vertex AI).

A cloud provider profile (`Provider.cloud`) speaks an ordinary wire protocol
(OpenAI Chat/Responses, Anthropic Messages, Gemini, Bedrock Converse); what
differs is the URL form and the auth. `resolve(...)` (called while a call is
prepared, before anything is sent) finds the endpoint and the credentials and
returns an auth object that the protocol's `build_request` asks for two things:

- `prepare(call, path, body, headers) -> (url, body)`: the cloud's URL form for
  the protocol's path (Azure deployments / v1, Vertex publishers) and any body
  change (Vertex Anthropic's `anthropic_version`, model in the URL).
- `sign(request)`: the auth headers, computed for each request from the current
  credentials (an expiring token or role credential is refreshed here, before
  the request that needs it). SigV4 signs the final bytes.

The cloud SDK pieces (botocore, google-auth, azure-identity) are optional extras
imported only when such a provider is used, never by `import llmrelay`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..providers import Provider, env_names

if TYPE_CHECKING:  # the classes, for type checkers; at run time they load on first use (__getattr__)
    from .aws import AWSAuth
    from .azure import AzureAuth
    from .google import GoogleAuth

__all__ = ["resolve", "AWSAuth", "AzureAuth", "GoogleAuth", "URL_FORMS", "ALSO_READ"]

#: Where each cloud's requests go (for the README's provider table and `llmrelay models`).
URL_FORMS = {
    "azure": "`{AZURE_OPENAI_ENDPOINT}/openai/deployments/{model}/...?api-version=` or `.../openai/v1/...`",
    "aws": "`https://bedrock-runtime.{region}.amazonaws.com`",
    "google": "`https://{location}-aiplatform.googleapis.com/v1` (`global`: `aiplatform.googleapis.com`)",
}
#: The other variables each cloud reads (besides its credential and base URL variables).
ALSO_READ = {
    "azure": "`OPENAI_API_VERSION` (deployments form; unset: the v1 API); azure-identity's `DefaultAzureCredential` chain",
    "aws": "`AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_SESSION_TOKEN`; botocore's chain (`~/.aws/config`, "
           "`~/.aws/credentials`, SSO, roles)",
    "google": "`GOOGLE_CLOUD_PROJECT`, `GCLOUD_PROJECT`, `GOOGLE_CLOUD_LOCATION`, `GOOGLE_CLOUD_REGION`; "
              "Application Default Credentials",
}


def resolve(provider: Provider, model: str, explicit_key: Any, explicit_base: str | None,
            env: Mapping[str, str]) -> tuple[str, Any]:
    """(base URL, auth object) for a cloud provider; raises `MissingCredentialsError` naming every way."""
    if not explicit_base:  # the provider's base URL variables, as for every provider
        for name in provider.base_url_env + env_names(provider, ("_BASE_URL", "_API_BASE")):
            if env.get(name):
                explicit_base = env[name]
                break
    if provider.cloud == "aws":
        from . import aws as cloud
    elif provider.cloud == "azure":
        from . import azure as cloud  # type: ignore[no-redef]
    elif provider.cloud == "google":
        from . import google as cloud  # type: ignore[no-redef]
    else:  # pragma: no cover - a profile error
        raise ValueError(f"unknown cloud {provider.cloud!r}")
    return cloud.resolve(provider, model, explicit_key, explicit_base, env)


def __getattr__(name: str) -> Any:
    if name == "AWSAuth":
        from .aws import AWSAuth

        return AWSAuth
    if name == "AzureAuth":
        from .azure import AzureAuth

        return AzureAuth
    if name == "GoogleAuth":
        from .google import GoogleAuth

        return GoogleAuth
    raise AttributeError(name)
