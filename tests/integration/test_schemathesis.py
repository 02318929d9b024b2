"""Property-based API tests: schemathesis generates requests for every operation of the running local gateway's
own /openapi.json and checks that no answer is a 5xx and that every answer matches the documented schema.

The operations come from the route table (so each is its own test item); their definitions and the request
strategies come from the document the gateway serves, loaded at test time (the gateway starts in a fixture).
Schemathesis's lazy `from_fixture` loader fails under pytest 9 (it sets `Function._nodeid`), hence plain
Hypothesis `@given` over each operation's strategy. Bounded: MAX_EXAMPLES per operation, derandomized.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.routes import ROUTES
from local.gateway import LocalGateway
from shared.settings import Settings

if TYPE_CHECKING:
    from tests.integration.conftest import TestUser

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 20  # per operation, positive and negative cases together
UNDOCUMENTED = {"/openapi.json", "/docs"}  # the document itself and Swagger UI are not in the document
OPERATIONS = [(route.method, route.path) for route in ROUTES if route.path not in UNDOCUMENTED]
CHECKS = [
    not_a_server_error,  # API.md: never a 500 for bad input
    response_schema_conformance,
    status_code_conformance,  # only documented status codes
    content_type_conformance,
]
# Not `negative_data_rejection`: it counts unknown query parameters (`?=false`) as schema violations, which
# OpenAPI cannot forbid and API.md does not reject; invalid known parameters and bodies are covered by the
# 4xx-or-conforming checks above and by the per-endpoint tests.


@pytest.fixture
def api_schema(gateway: LocalGateway, stack_env: Settings) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")


def test_every_route_is_documented(api_schema: schemathesis.BaseSchema) -> None:
    labels = {operation.ok().label for operation in api_schema.get_all_operations()}  # type: ignore[union-attr]
    assert labels == {f"{method} {path}" for method, path in OPERATIONS}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, new_user: Callable[..., TestUser], method: str, path: str
) -> None:
    operation = api_schema[path][method]
    headers = new_user().headers
    cases = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
