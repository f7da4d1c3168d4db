"""The management API's declared methods: typed results for mypy, honest declarations."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aicm._io.api_calls import Api, Call, PagesApi
from aicm._io.service_api import ServiceApiMethods
from aicm._sync.service_api import ServiceApiSyncMethods

USER_CODE = """
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

from aicm import (
    AsyncCostManagerClient, CostEvent, CostManagerClient, Customer, Page, UsageEvent, UsageLimit,
)


async def async_calls(client: AsyncCostManagerClient) -> Decimal:
    page: Page[UsageEvent] = await client.list_usage_events(customer_key="a", limit=3)
    events: AsyncIterator[CostEvent] = client.iter_cost_events(customer_key=["a", "b"])
    customer: Customer = await client.create_customer(customer_key="k", name="n")
    await client.delete_customer(customer.uuid)
    limit: UsageLimit = await client.update_usage_limit("id", amount=Decimal("1.5"))
    await client.get_customer(3)  # wrong
    await client.list_customers(offst=3)  # wrong
    return limit.amount


def sync_calls(client: CostManagerClient) -> Decimal:
    page: Page[UsageEvent] = client.list_usage_events(customer_key="a", limit=3)
    events: Iterator[CostEvent] = client.iter_cost_events(customer_key=["a", "b"])
    customer: Customer = client.create_customer(customer_key="k", name="n")
    client.delete_customer(customer.uuid)
    limit: UsageLimit = client.update_usage_limit("id", amount=Decimal("1.5"))
    client.get_customer(3)  # wrong
    client.iter_customers(offset=3)  # wrong
    wrong: Customer = client.get_usage_event("e")  # wrong
    return limit.amount
"""


def test_mypy_sees_the_typed_results_and_flags_wrong_calls(tmp_path: Path) -> None:
    """mypy --strict on user code: each method's declared result type, each wrong call flagged."""
    (tmp_path / "user.py").write_text(USER_CODE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    flagged = {int(n) for n in re.findall(r"^user\.py:(\d+): error:", proc.stdout, re.MULTILINE)}
    marked = {n for n, text in enumerate(USER_CODE.splitlines(), 1) if text.endswith("# wrong")}
    assert flagged == marked, proc.stdout


def _declarations() -> list[tuple[str, Api[Any, Any] | PagesApi[Any, Any]]]:
    return [
        (name, value)
        for name, value in vars(ServiceApiMethods).items()
        if isinstance(value, (Api, PagesApi))
    ]


def _sample(parameter: inspect.Parameter) -> Any:
    return "x" if parameter.default is inspect.Parameter.empty else parameter.default


@pytest.mark.parametrize(("name", "api"), _declarations(), ids=lambda v: str(v)[:40])
def test_a_declaration_sends_only_its_parameters(
    name: str, api: Api[Any, Any] | PagesApi[Any, Any]
) -> None:
    """A declaration passes its ``locals()``: nothing but its own parameters may be in them
    (a helper variable would be sent to the service as a field)."""
    parameters = api.signature.parameters
    call = api.declare(None, **{p: _sample(v) for p, v in parameters.items()})
    assert isinstance(call, Call)
    assert set(call.arguments) - {"self"} <= set(parameters), name
    assert call.method in ("GET", "POST", "PUT", "DELETE")
    assert not set(re.findall(r"{(\w+)}", call.path)) - set(parameters), name


def test_every_async_method_has_its_sync_twin_with_the_same_signature() -> None:
    """The sync client has every declared method, with the async one's signature and docs."""
    declared = dict(_declarations())
    assert len(declared) == 34
    for name, api in declared.items():
        twin = getattr(ServiceApiSyncMethods, name)
        assert twin.api is api
        assert twin.__doc__ == api.__doc__
        assert "self" not in api.signature.parameters


def test_the_sync_client_takes_exactly_the_async_clients_options() -> None:
    """``CostManagerClient(**options)`` passes them on: its TypedDict names each option of
    ``AsyncCostManagerClient`` with the same type, and no other."""
    from aicm import AsyncCostManagerClient
    from aicm._sync.client import ClientOptions

    parameters = inspect.signature(AsyncCostManagerClient.__init__).parameters
    declared = {name: str(p.annotation) for name, p in parameters.items() if name != "self"}
    options = {name: kind.__forward_arg__ for name, kind in ClientOptions.__annotations__.items()}
    assert options == declared
