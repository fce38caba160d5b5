"""Which model endpoint a deployment uses: the one rule shared by ``up`` and experiments.

In order (the first that applies wins):

    1 the topology's ``system.model`` block     its base_url, model and key (api_key_env)
    2 ``OPENAI_BASE_URL``                       that endpoint, with ``OPENAI_API_KEY`` if set
    3 ``OPENAI_API_KEY`` alone                  the provider's default endpoint
                                                (``https://api.openai.com/v1``), as the
                                                ``openai`` client itself does
    4 nothing configured                        the embedded simulator (``actors.model``),
                                                started by the caller

A key is never sent to the embedded simulator: it runs only when no key, no URL and no
model block is configured. The model name is the model block's when there is one, else
``UNDERSTUDY_MODEL`` when set, else ``understudy-embedded`` (the simulator, or a URL from
``OPENAI_BASE_URL``) or ``DEFAULT_PROVIDER_MODEL`` (the provider's default endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Final, Literal

from protocols.topology import ModelConfig

__all__ = [
    "DEFAULT_PROVIDER_MODEL",
    "EMBEDDED_MODEL",
    "PROVIDER_DEFAULT_URL",
    "ModelEndpoint",
    "resolve_model_endpoint",
]

PROVIDER_DEFAULT_URL: Final = "https://api.openai.com/v1"
DEFAULT_PROVIDER_MODEL: Final = "gpt-4o-mini"
EMBEDDED_MODEL: Final = "understudy-embedded"
EMBEDDED_KEY: Final = "understudy-embedded"

Source = Literal["topology", "OPENAI_BASE_URL", "OPENAI_API_KEY", "embedded"]


@dataclass(frozen=True)
class ModelEndpoint:
    """The endpoint agents talk to.

    ``base_url`` is None only for the embedded simulator before it is started (its port is
    chosen then); ``api_key`` is None when none is configured (local servers need none).
    """

    source: Source
    base_url: str | None
    model: str
    api_key: str | None

    @property
    def embedded(self) -> bool:
        """True when this is the embedded simulator (nothing was configured)."""
        return self.source == "embedded"

    def describe(self) -> str:
        """One line for a startup screen: the URL, the model, and where they came from."""
        url = self.base_url or "(not started)"
        why = {
            "topology": "from the topology's system.model",
            "OPENAI_BASE_URL": "from OPENAI_BASE_URL",
            "OPENAI_API_KEY": "the provider's default endpoint: OPENAI_API_KEY is set, "
            "OPENAI_BASE_URL is not",
            "embedded": "the embedded simulator: no system.model, OPENAI_BASE_URL or "
            "OPENAI_API_KEY is configured",
        }[self.source]
        return f"model endpoint: {url} model={self.model} ({why})"

    def export(self, environ: MutableMapping[str, str]) -> None:
        """Write the endpoint into ``environ`` (agents and the orchestrator read it there).

        Raises:
            ValueError: the embedded simulator's URL is not known yet (start it first).
        """
        if self.base_url is None:
            msg = "the embedded model's base_url is unknown until it is started"
            raise ValueError(msg)
        environ["OPENAI_BASE_URL"] = self.base_url
        environ["UNDERSTUDY_MODEL"] = self.model
        if self.api_key is not None:
            environ["OPENAI_API_KEY"] = self.api_key
        elif self.embedded:
            environ["OPENAI_API_KEY"] = EMBEDDED_KEY


def resolve_model_endpoint(
    configured: ModelConfig | None, environ: Mapping[str, str]
) -> ModelEndpoint:
    """Decide the model endpoint from the topology's model block and the environment.

    Args:
        configured: the topology's ``system.model`` (None when it has none).
        environ: the environment to read (``os.environ``); only read, never changed.

    Returns:
        The endpoint; for the embedded simulator ``base_url`` is None (start it, then
        ``dataclasses.replace`` the URL in).
    """
    chosen_model = environ.get("UNDERSTUDY_MODEL") or None
    if configured is not None:
        return ModelEndpoint(
            "topology",
            configured.base_url,
            configured.model,
            environ.get(configured.api_key_env) or None,
        )
    key = environ.get("OPENAI_API_KEY") or None
    url = environ.get("OPENAI_BASE_URL") or None
    if url is not None:
        return ModelEndpoint("OPENAI_BASE_URL", url, chosen_model or EMBEDDED_MODEL, key)
    if key is not None:
        return ModelEndpoint(
            "OPENAI_API_KEY", PROVIDER_DEFAULT_URL, chosen_model or DEFAULT_PROVIDER_MODEL, key
        )
    return ModelEndpoint("embedded", None, chosen_model or EMBEDDED_MODEL, None)
