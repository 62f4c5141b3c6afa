"""The gateway's OpenAPI 3 document, served at ``GET /openapi.json`` (API not yet stable).

It describes every route, every status each can answer, and the Open Inference Protocol v2
request and response bodies (KServe "Open Inference Protocol (V2 Inference Protocol)", REST
section), with the limits this gateway enforces (sizes, batch, datatypes) and the models it
serves as the allowed values of ``{name}``. It is precise enough for schemathesis to generate
valid and invalid requests from it and to check every answer against it (the test suite does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion import __version__
from bastion.artifacts.served_model import OIP_DATATYPES
from bastion.config import GatewaySettings
from bastion.core.principals import MODEL_NAME_PATTERN

if TYPE_CHECKING:
    from bastion.gateway.models import ServedEntry

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"
_ERRORS = {
    400: "Malformed JSON or headers.",
    401: "Missing, unknown, revoked or expired API key (one answer for all).",
    403: "The key's role or model scope does not allow this.",
    404: "No such model is served.",
    408: "The request body was not received in time.",
    413: "The body, or the number of elements in it, is too large.",
    422: "The request does not fit the model (tensor name, datatype, shape, batch, values).",
    429: "Rate limit reached (per key or per client address); see Retry-After.",
    500: "The model failed.",
    503: "The gateway cannot serve now (saturated, or a backing service is unreachable).",
    504: "The prediction did not finish in time.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in statuses:
        response = _json(_ref("Error"), _ERRORS[status])
        if status == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 1},
                    "required": True,
                }
            }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
            }
        responses[str(status)] = response
    return responses


_KEYED = (401, 429, 503)


def _schemas(settings: GatewaySettings) -> dict[str, Any]:
    datatypes = sorted(OIP_DATATYPES)
    tensor_data: dict[str, Any] = {
        "type": "array",
        "description": "The values, row-major: flat, or nested as the shape.",
        "items": {"oneOf": [{"type": "number"}, {"type": "boolean"}, {"type": "array"}]},
    }
    parameters = {"type": "object", "description": "Free-form parameters (ignored)."}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {"type": "string", "description": "A short generic text."}},
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "additionalProperties": False,
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "additionalProperties": False,
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string", "enum": datatypes},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "classes": {"type": "array", "items": {"type": "string"}},
                        "digest": {"type": "string"},
                    },
                },
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 256},
                "shape": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {"type": "integer", "minimum": 1},
                },
                "datatype": {"type": "string", "enum": datatypes},
                "data": tensor_data,
                "parameters": parameters,
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 256},
                "parameters": parameters,
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "description": (
                f"At most {settings.max_body_bytes} bytes, {settings.max_json_elements} "
                f"elements, nesting depth {settings.max_json_depth}; a batch of at most "
                f"{settings.max_batch} rows; values within the model's training range."
            ),
            "properties": {
                "id": {"type": "string", "maxLength": 256},
                "parameters": parameters,
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": _ref("RequestInput"),
                },
                "outputs": {"type": "array", "maxItems": 16, "items": _ref("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": datatypes},
                "data": {"type": "array", "items": {"type": "number"}},
                "parameters": {
                    "type": "object",
                    "properties": {"top_k": {"type": "integer", "minimum": 1}},
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "additionalProperties": False,
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
    }


def _example(entry: ServedEntry) -> dict[str, Any]:
    batch = entry.probe(1)
    return {
        "id": "example",
        "inputs": [
            {
                "name": entry.input.name,
                "shape": list(batch.shape),
                "datatype": entry.input.datatype,
                "data": batch.ravel().tolist(),
            }
        ],
    }


def openapi_document(
    settings: GatewaySettings, models: Mapping[str, ServedEntry]
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a gateway serving ``models``.

    The first model (by name) gives the example of ``{name}`` and a valid inference request.
    """
    name_schema: dict[str, Any] = {"type": "string", "pattern": f"^{MODEL_NAME_PATTERN}$"}
    name: dict[str, Any] = {"name": "name", "in": "path", "required": True}
    body: dict[str, Any] = {"schema": _ref("InferRequest")}
    if models:
        first = models[min(models)]
        name_schema = {"type": "string", "enum": sorted(models)}
        name["example"] = first.name
        if first.probe(1).size <= 4096:
            body["example"] = _example(first)
    name["schema"] = name_schema
    open_: dict[str, Any] = {"security": []}
    keyed = _errors(*_KEYED)
    paths: dict[str, Any] = {
        "/v2/health/live": {
            "get": {
                "operationId": "live",
                "summary": "Liveness: the process answers.",
                **open_,
                "responses": {"200": _json(_ref("Live"), "Alive.")},
            }
        },
        "/v2/health/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: models loaded and backing services reachable.",
                **open_,
                "responses": {
                    "200": _json(_ref("Ready"), "Ready to serve."),
                    "503": _json(_ref("Ready"), "Not ready."),
                },
            }
        },
        "/v2": {
            "get": {
                "operationId": "serverMetadata",
                "summary": "Server metadata.",
                "responses": {"200": _json(_ref("ServerMetadata"), "Server metadata."), **keyed},
            }
        },
        "/v2/models/{name}": {
            "get": {
                "operationId": "modelMetadata",
                "summary": "A model's metadata; outputs as the caller's role receives them.",
                "parameters": [name],
                "responses": {
                    "200": _json(_ref("ModelMetadata"), "Model metadata."),
                    **keyed,
                    **_errors(403, 404),
                },
            }
        },
        "/v2/models/{name}/ready": {
            "get": {
                "operationId": "modelReady",
                "summary": "Whether a model is ready.",
                "parameters": [name],
                "responses": {
                    "200": _json(_ref("ModelReady"), "The model's readiness."),
                    **keyed,
                    **_errors(403, 404),
                },
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "operationId": "infer",
                "summary": "Inference (Open Inference Protocol v2, JSON tensors).",
                "parameters": [name],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": body},
                },
                "responses": {
                    "200": _json(_ref("InferResponse"), "The outputs the caller's role sees."),
                    **keyed,
                    **_errors(400, 403, 404, 408, 413, 422, 500, 504),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (needs gateway.operate: roles sre, admin).",
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **keyed,
                    **_errors(403),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **keyed,
                },
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "bastion gateway",
            "version": __version__,
            "description": (
                "A hardened Open Inference Protocol v2 gateway. Every route but the health "
                "checks needs an API key (Authorization: Bearer, or X-API-Key). Errors are "
                '{"error": "<generic text>"}.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
