"""post_encoded: the service's answer (or its absence) as a value, over loopback HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from aicm._core.exceptions import (
    AuthenticationError,
    ClientRequestError,
    MissingApiKeyError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from aicm._core.jsonplain import dumps
from aicm._core.models import Endpoint, TrackRecord
from aicm._core.policy import Outcome
from aicm._io.http import AsyncCostManagerClient
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio


def encoded(*ids: str) -> list[str]:
    return [
        dumps(TrackRecord.build("openai", "openai::gpt-4o", {"n": 1}, response_id=i).wire())
        for i in ids
    ]


@pytest.fixture
async def client(connection: dict[str, str]) -> AsyncIterator[AsyncCostManagerClient]:
    """An async client pointed at the collector, closed after the test."""
    async with AsyncCostManagerClient(**connection) as c:
        yield c


async def test_a_2xx_is_delivered_with_its_results(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """202: DELIVERED, the result holding the refusals only (with only_failures)."""
    collector.set_faults(Faults(reject_response_ids={"ans-bad"}))
    answer = await client.post_encoded(
        Endpoint.TRACK, encoded("ans-ok", "ans-bad"), only_failures=True
    )
    assert answer.outcome is Outcome.DELIVERED
    assert answer.error is None
    assert answer.result is not None
    assert [(r.response_id, r.ok) for r in answer.result.results] == [("ans-bad", False)]
    assert answer.unwrap() is answer.result


@pytest.mark.parametrize(
    ("faults", "outcome", "error", "retry_after"),
    [
        (Faults(failure_rate=1.0, failure_status=503), Outcome.RETRYABLE, ServerError, None),
        (
            Faults(failure_rate=1.0, failure_status=429, retry_after=3),
            Outcome.RETRYABLE,
            RateLimitedError,
            3.0,
        ),
        (Faults(failure_rate=1.0, failure_status=422), Outcome.PERMANENT, ClientRequestError, None),
        (Faults(require_api_key="another-key"), Outcome.AUTH, AuthenticationError, None),
    ],
)
async def test_an_error_status_is_an_answer_not_a_raise(
    client: AsyncCostManagerClient,
    collector: LocalCollector,
    faults: Faults,
    outcome: Outcome,
    error: type[Exception],
    retry_after: float | None,
) -> None:
    """A non-2xx answer comes back as its outcome and the error a caller would see;
    unwrap() raises that same error, as does the public track()."""
    collector.set_faults(faults)
    answer = await client.post_encoded(Endpoint.TRACK, encoded("ans-1"))
    assert answer.outcome is outcome
    assert isinstance(answer.error, error)
    assert answer.retry_after == retry_after
    with pytest.raises(error) as raised:
        answer.unwrap()
    assert raised.value is answer.error
    with pytest.raises(error):
        await client.track([TrackRecord.build("openai", "openai::gpt-4o", {}, response_id="a2")])


async def test_no_answer_is_retryable(anyio_backend: str) -> None:
    """Nobody listening: RETRYABLE with a TransportError, nothing raised."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AsyncCostManagerClient(
        aicm_api_key="k-123", aicm_api_base=f"http://127.0.0.1:{port}", timeout=2
    ) as client:
        answer = await client.post_encoded(Endpoint.TRACK, encoded("ans-3"))
    assert answer.outcome is Outcome.RETRYABLE
    assert isinstance(answer.error, TransportError)


async def test_no_key_pauses(anyio_backend: str) -> None:
    """No API key at all: AUTH with MissingApiKeyError, before any request."""
    async with AsyncCostManagerClient(aicm_api_base="http://127.0.0.1:9") as client:
        answer = await client.post_encoded(Endpoint.TRACK, encoded("ans-4"))
    assert answer.outcome is Outcome.AUTH
    assert isinstance(answer.error, MissingApiKeyError)
