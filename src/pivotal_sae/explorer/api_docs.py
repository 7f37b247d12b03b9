"""The API's reference page (/api/docs) read from the app's own OpenAPI schema.

FastAPI's Swagger UI loads its script from a CDN and is a blank page offline; this page is plain
HTML from the explorer's templates, so it works wherever the server does.
"""

from __future__ import annotations

from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


def type_of(schema: dict[str, Any]) -> dict[str, str | None]:
    """`{"text": "list[Latent]", "ref": "Latent"}`: a readable type and the schema it names."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return {"text": name, "ref": name}
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            parts = [type_of(option) for option in schema[key]]
            ref = next((p["ref"] for p in parts if p["ref"]), None)
            return {"text": " | ".join(str(p["text"]) for p in parts), "ref": ref}
    if "enum" in schema:
        return {"text": " | ".join(repr(v) for v in schema["enum"]), "ref": None}
    kind = schema.get("type", "any")
    if kind == "array":
        inner = type_of(schema.get("items", {}))
        return {"text": f"list[{inner['text']}]", "ref": inner["ref"]}
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = type_of(schema["additionalProperties"])
        return {"text": f"dict[str, {inner['text']}]", "ref": inner["ref"]}
    return {"text": str(kind), "ref": None}


def _json_schema(content: dict[str, Any] | None) -> dict[str, Any] | None:
    media = (content or {}).get("application/json")
    return media.get("schema") if media else None


def _operation(path: str, method: str, op: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {
            "name": p["name"],
            "where": p.get("in", ""),
            "type": type_of(p.get("schema", {}))["text"],
            "required": bool(p.get("required")),
            "description": p.get("description") or p.get("schema", {}).get("description", ""),
        }
        for p in op.get("parameters", [])
    ]
    body = _json_schema(op.get("requestBody", {}).get("content"))
    responses = op.get("responses", {})
    ok: dict[str, Any] = next((responses[c] for c in ("200", "201") if c in responses), {})
    response = _json_schema(ok.get("content"))
    return {
        "anchor": f"{method}-{path.strip('/').replace('/', '-').replace('{', '').replace('}', '')}",
        "method": method.upper(),
        "path": path,
        "summary": op.get("summary", ""),
        "description": op.get("description", ""),
        "parameters": parameters,
        "body": type_of(body) if body else None,
        "response": type_of(response) if response else None,
        "errors": [code for code in responses if not code.startswith("2")],
    }


def api_reference(openapi: dict[str, Any]) -> dict[str, Any]:
    """What api.html shows: the operations in schema order and every named schema's fields."""
    operations = [
        _operation(path, method, item[method])
        for path, item in openapi.get("paths", {}).items()
        for method in METHODS
        if method in item
    ]
    schemas = []
    for name, schema in sorted(openapi.get("components", {}).get("schemas", {}).items()):
        required = set(schema.get("required", []))
        fields = [
            {
                "name": field,
                "type": type_of(spec),
                "required": field in required,
                "description": spec.get("description", ""),
            }
            for field, spec in schema.get("properties", {}).items()
        ]
        schemas.append({"name": name, "description": schema.get("description", ""),
                        "fields": fields})  # fmt: skip
    info = openapi.get("info", {})
    return {
        "title": info.get("title", "API"),
        "summary": info.get("summary", ""),
        "openapi": openapi.get("openapi", ""),
        "operations": operations,
        "schemas": schemas,
    }
