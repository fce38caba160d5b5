"""Pure parts of the metrics: exit reason classes and the price table's validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.core.runtime_metrics import exit_reason_class
from protocols.topology import SystemConfig


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("normal", "normal"),
        ("shutdown", "shutdown"),
        ("shutdown:intensity", "shutdown"),
        ("killed", "killed"),
        ("noconnection", "noconnection"),
        ("error:retryable:RateLimitError: 429; retry_after=1", "error_retryable"),
        ("error:fatal:AuthenticationError: 401", "error_fatal"),
        ("error:RuntimeError: asked to fail", "error"),
        ("something else", "other"),
        (None, "other"),
    ],
)
def test_exit_reasons_fall_in_a_few_classes(reason: str | None, expected: str) -> None:
    assert expected == exit_reason_class(reason)


def test_a_price_table_reads_usd_per_million_tokens_per_model() -> None:
    config = SystemConfig.model_validate(
        {"metrics": {"port": 9100, "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}}}
    )

    assert 9100 == config.metrics.port
    assert (0.15, 0.6) == (
        config.metrics.prices["gpt-4o-mini"].input,
        config.metrics.prices["gpt-4o-mini"].output,
    )
    assert SystemConfig().metrics.port is None


@pytest.mark.parametrize(
    "metrics",
    [
        {"port": 0},
        {"port": 70000},
        {"prices": {"m": {"input": -1, "output": 1}}},
        {"prices": {"m": {"input": 1}}},
    ],
)
def test_a_bad_metrics_block_is_refused(metrics: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="metrics"):
        SystemConfig.model_validate({"metrics": metrics})
