"""The OpenAPI document: complete, and checked against the running app by schemathesis."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from tests.gateway.support import GatewayFactory, Keys, serving

from bastion.artifacts.served_model import ServedModel
from bastion.config import GatewaySettings
from bastion.gateway.models import ModelSet
from bastion.gateway.openapi import openapi_document

ROUTES = {
    ("/v2/health/live", "get"),
    ("/v2/health/ready", "get"),
    ("/v2", "get"),
    ("/v2/models/{name}", "get"),
    ("/v2/models/{name}/ready", "get"),
    ("/v2/models/{name}/infer", "post"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
}


def test_document_lists_every_route_and_its_answers(demo_model: ServedModel) -> None:
    models = ModelSet.of({"digits": demo_model, "iris": demo_model})
    document = openapi_document(GatewaySettings(), models)
    assert document["openapi"].startswith("3.0")
    routes = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == ROUTES
    for path, item in document["paths"].items():
        for operation in item.values():
            statuses = set(operation["responses"])
            if path.startswith("/v2/health"):
                assert operation["security"] == []
            else:
                assert {"200", "401", "429", "503"} <= statuses, path
                assert "security" not in operation  # the document-wide key requirement
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["responses"]) == {
        "200", "400", "401", "403", "404", "408", "413", "422", "429", "500", "503", "504",
    }  # fmt: skip
    assert infer["parameters"][0]["schema"] == {"type": "string", "enum": ["digits", "iris"]}
    assert infer["parameters"][0]["example"] == "digits"
    example = infer["requestBody"]["content"]["application/json"]["example"]
    assert example["inputs"][0]["shape"] == [1, 64]
    assert example["inputs"][0]["data"] == [0.0] * 64
    assert document["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "1048576 bytes" in document["components"]["schemas"]["InferRequest"]["description"]


def test_component_schemas_are_valid_json_schema() -> None:
    schemas = openapi_document(GatewaySettings(), {})["components"]["schemas"]
    for name, schema in schemas.items():
        jsonschema.Draft4Validator.check_schema(schema), name


pytestmark = pytest.mark.anyio


async def test_the_served_document_is_the_generated_one(make_gateway: GatewayFactory, keys: Keys):
    gateway = make_gateway()
    async with serving(gateway) as client:
        response = await client.get("/openapi.json", headers=keys.headers("client"))
    assert response.status_code == 200
    assert response.json() == openapi_document(gateway.settings, gateway.models)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_violation(
    make_gateway: GatewayFactory, keys: Keys, mode: str
) -> None:
    """A property-based run: generated requests, every answer checked against the document.

    Checks: no server error, status codes, content types, response schemas and headers as
    documented, negative data rejected, authentication not ignored. Valid-by-schema data is
    not expected to be accepted: a schema cannot say that a tensor's values must number the
    product of its shape or lie in the model's range, so most generated inferences get 422.
    """
    gateway = make_gateway(
        rate_limit={"per_key_per_minute": 100_000, "per_address_per_minute": 100_000},
        max_body_bytes=65_536,
    )
    secret = keys.secrets["sre"]
    # The key as configured authentication: schemathesis then also checks that the same
    # request without it, or with a wrong one, is refused.
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": secret}}}})
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", gateway, config=config, headers={"Authorization": f"Bearer {secret}"}
    )
    seen: dict[tuple[str, int], int] = {}

    run = settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if mode == "negative" and "{" not in operation.path:
                continue  # nothing to make invalid: no parameter, no body
            strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

            @run
            @given(case=strategy)
            def check(case: Any) -> None:
                response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
                key = (case.operation.label, response.status_code)
                seen[key] = seen.get(key, 0) + 1

            check()
    finally:
        schemathesis_asgi.shutdown_lifespans()
    # Every operation was exercised (schemathesis leaves out the document's own route).
    operations = {label for label, _ in seen}
    expected = {f"{m.upper()} {p}" for p, m in ROUTES if mode == "positive" or "{" in p}
    assert operations == expected - {"GET /openapi.json"}
    if mode == "positive":
        assert ("POST /v2/models/{name}/infer", 200) in seen  # the document's example
        assert ("POST /v2/models/{name}/infer", 422) in seen
        assert ("GET /v2/models/{name}", 200) in seen
