"""RunPod's OpenAPI contract (the vendored subset) as a validator for requests and responses.

Used by the loopback fake (every request it receives and every response it sends is checked) and by tests
(e.g. the ``--dry-run`` body against ``CreatePodRequest``). Schemas are JSON Schema 2020-12 (OpenAPI 3.1),
validated with ``openapi-schema-validator``'s OAS 3.1 validator and format checker.

Requests are held to the document as published: its request schemas are closed (``unevaluatedProperties:
false``), so an unknown field is an error, as on the real API (a 422). Responses are held to a *stricter*
reading: every object the document describes is closed, so the fake cannot invent a field the real API
does not document (and the client cannot come to depend on one).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS31Validator, oas31_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SUBSET = Path(__file__).with_name("runpod-openapi-v2.subset.json")
_REQUEST_URI = "urn:runpod-openapi-v2:request"
_RESPONSE_URI = "urn:runpod-openapi-v2:response"


@dataclass(frozen=True)
class Operation:
    template: str  # e.g. /v2/pods/{id}
    method: str  # lower case
    path_params: dict[str, str]
    spec: dict[str, Any]
    parameters: list[dict[str, Any]]


def _allof_members(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "allOf":
                found |= {m["$ref"].rsplit("/", 1)[1] for m in v if isinstance(m, dict) and "$ref" in m}
            _allof_members(v, found)
    elif isinstance(node, list):
        for v in node:
            _allof_members(v, found)
    return found


def _close(node: Any, open_: bool = False) -> Any:
    """Close every object schema that is not composed into another by ``allOf`` (those are closed where they
    are used, through ``unevaluatedProperties``, which sees into ``allOf`` and ``$ref``)."""
    if isinstance(node, list):
        return [_close(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "allOf":
            out[k] = [_close(m, open_=True) for m in v]
        elif k == "properties":
            out[k] = {name: _close(s) for name, s in v.items()}
        else:
            out[k] = _close(v)
    if (not open_ and ("properties" in node or "allOf" in node) and "additionalProperties" not in node
            and "unevaluatedProperties" not in node):
        out["unevaluatedProperties"] = False
    return out


class Contract:
    def __init__(self, path: Path = SUBSET):
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        strict = copy.deepcopy(self.document)
        members = _allof_members(strict["components"]["schemas"], set())
        strict["components"]["schemas"] = {
            name: _close(schema, open_=name in members) for name, schema in strict["components"]["schemas"].items()}
        self._registry = Registry().with_resources([
            (_REQUEST_URI, DRAFT202012.create_resource(self.document)),
            (_RESPONSE_URI, DRAFT202012.create_resource(strict)),
        ])
        self._routes = [(re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(t)) + "$"), t)
                        for t in self.document["paths"]]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.document["x-provenance"]

    @cached_property
    def schema_names(self) -> list[str]:
        return sorted(self.document["components"]["schemas"])

    # ------------------------------------------------------------------ schemas
    def _validator(self, ref: str, strict: bool) -> OAS31Validator:
        base = _RESPONSE_URI if strict else _REQUEST_URI
        return OAS31Validator({"$ref": base + ref}, registry=self._registry, format_checker=oas31_format_checker)

    def errors(self, schema: dict[str, Any] | str, instance: Any, *, strict: bool = False) -> list[str]:
        """Violations of ``schema`` (a component schema name, or an inline schema/``$ref``), as
        ``field: message`` lines; empty when valid."""
        if isinstance(schema, str):
            ref = f"#/components/schemas/{schema}"
            validator = self._validator(ref, strict)
        elif "$ref" in schema and len(schema) == 1:
            validator = self._validator(schema["$ref"], strict)
        else:
            base = _RESPONSE_URI if strict else _REQUEST_URI
            validator = OAS31Validator({"$defs": {}, "allOf": [_rebase(schema, base)]}, registry=self._registry,
                                       format_checker=oas31_format_checker)
        out = []
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in err.absolute_path) or "(body)"
            out.append(f"{where}: {err.message}")
        return out

    # ------------------------------------------------------------------ operations
    def operation(self, method: str, path: str) -> Operation | None:
        for pattern, template in self._routes:
            m = pattern.match(path)
            if m and method.lower() in self.document["paths"][template]:
                item = self.document["paths"][template]
                params = [self._resolve(p) for p in item.get("parameters", [])]
                params += [self._resolve(p) for p in item[method.lower()].get("parameters", [])]
                return Operation(template, method.lower(), m.groupdict(), item[method.lower()], params)
        return None

    def path_known(self, path: str) -> bool:
        return any(p.match(path) for p, _t in self._routes)

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            _hash, _components, kind, name = node["$ref"].split("/")
            node = self.document["components"][kind][name]
        return node

    def request_errors(self, op: Operation, query: dict[str, list[str]], headers: dict[str, str],
                       body: Any) -> list[str]:
        """Query/header parameters and the JSON body against the operation (``body`` None: no body sent)."""
        errors = []
        known = set()
        for param in op.parameters:
            name, where = param["name"], param["in"]
            known.add((where, name.lower() if where == "header" else name))
            if where == "query":
                values = query.get(name)
                raw = values[-1] if values else None
            elif where == "header":
                raw = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
            else:
                continue
            if raw is None:
                if param.get("required"):
                    errors.append(f"{where} parameter {name}: required")
                continue
            value = _coerce(raw, self._resolve(param["schema"]) if "$ref" in param["schema"] else param["schema"],
                            param)
            errors += [f"{where} parameter {name}: {e.split(': ', 1)[1]}" for e in self.errors(param["schema"], value)]
        for name in query:
            if ("query", name) not in known:
                errors.append(f"query parameter {name}: not defined for {op.method.upper()} {op.template}")
        content = (op.spec.get("requestBody") or {}).get("content", {})
        if "application/json" in content:
            if body is None:
                if op.spec["requestBody"].get("required"):
                    errors.append("(body): a JSON body is required")
            else:
                errors += self.errors(content["application/json"]["schema"], body)
        elif body is not None:
            errors.append(f"(body): {op.method.upper()} {op.template} takes no body")
        return errors

    def response_spec(self, op: Operation, status: int) -> dict[str, Any] | None:
        responses = op.spec["responses"]
        # a documented status may be an empty object once its prose is stripped (e.g. deleteCluster's 204)
        spec = responses[str(status)] if str(status) in responses else responses.get("default")
        return self._resolve(spec) if spec is not None else None

    def response_errors(self, op: Operation, status: int, headers: dict[str, str], body: bytes) -> list[str]:
        """The response's status, content type, headers and (strictly closed) JSON body against the operation."""
        spec = self.response_spec(op, status)
        if spec is None:
            return [f"status {status} is not a documented response of {op.method.upper()} {op.template}"]
        errors = []
        for name, header in (spec.get("headers") or {}).items():
            value = headers.get(name)
            if value is not None and "schema" in header:
                schema = self._resolve(header["schema"]) if "$ref" in header["schema"] else header["schema"]
                errors += [f"header {name}: {e.split(': ', 1)[1]}" for e in self.errors(schema, _coerce(value, schema))]
        content = spec.get("content")
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
        if not content:
            if body:
                errors.append(f"status {status} has no body in the document, but {len(body)} bytes were sent")
            return errors
        if ctype not in content:
            return errors + [f"content type {ctype or '(none)'} is not one of {sorted(content)} for status {status}"]
        if ctype == "text/event-stream":
            return errors
        try:
            data = json.loads(body)
        except ValueError:
            return errors + ["(body): not JSON"]
        return errors + self.errors(content[ctype]["schema"], data, strict=True)


def _rebase(node: Any, base: str) -> Any:
    if isinstance(node, dict):
        return {k: (base + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v, base))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v, base) for v in node]
    return node


def _coerce(raw: str, schema: dict[str, Any], param: dict[str, Any] | None = None) -> Any:
    """A query/header string as the typed value its schema describes (form style, explode=false arrays)."""
    kind = schema.get("type")
    if kind == "array":
        item = schema.get("items", {})
        return [_coerce(v, item) for v in raw.split(",")] if raw else []
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw
