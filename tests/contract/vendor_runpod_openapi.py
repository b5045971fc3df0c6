"""Vendor the part of RunPod's published OpenAPI document that trainpod calls into ``tests/contract``.

    python -m tests.contract.vendor_runpod_openapi /path/to/openapi-v2.json

Keeps, for the operations in ``OPERATIONS`` only: their parameters, request bodies and responses, and every
component they reference (transitively). Prose (descriptions, summaries, examples, code samples) is dropped:
the file is machine-readable only. Provenance (title, version, sync date, source, the full document's
sha256) goes in ``x-provenance``. Re-run it when RunPod publishes a new document; the contract tests then
check the client and the fake against the new one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("runpod-openapi-v2.subset.json")
SOURCE = "https://api.runpod.io — RunPod REST API v2 OpenAPI document (Frontdoor v2.9.0), as synced to shared/runpod"
SYNCED = "2026-08-18"
OPERATIONS = {
    "/v2/pods": ["get", "post"],
    "/v2/pods/{id}": ["get", "delete"],
    "/v2/pods/{id}/action": ["post"],
    "/v2/pods/{id}/logs": ["get"],
    "/v2/registries": ["get", "post"],
    "/v2/registries/{id}": ["delete"],
    "/v2/catalog/gpus": ["get"],
    "/v2/billing/pods": ["get"],
    "/v2/clusters": ["get", "post"],
    "/v2/clusters/{id}": ["get", "delete"],
    "/v2/clusters/{id}/pods": ["get"],
}
PROSE = {"description", "summary", "example", "examples", "x-codeSamples", "tags", "x-enum-varnames"}


def _strip(node: Any, names: bool = False) -> Any:
    """Drop prose keys; ``names``: ``node`` maps property names (kept whatever they are) to schemas."""
    if isinstance(node, dict):
        return {k: _strip(v, names=(k == "properties" and not names)) for k, v in node.items()
                if names or k not in PROSE}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v)
            else:
                found |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v)
    return found


def subset(doc: dict[str, Any], raw: bytes) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, methods in OPERATIONS.items():
        item = doc["paths"][path]
        kept = {m: _strip(item[m]) for m in methods}
        if "parameters" in item:
            kept["parameters"] = _strip(item["parameters"])
        paths[path] = kept
    components: dict[str, dict[str, Any]] = {}
    todo = sorted(_refs(paths))
    while todo:
        ref = todo.pop()
        _hash, _components, kind, name = ref.split("/")
        if name in components.get(kind, {}):
            continue
        node = _strip(doc["components"][kind][name])
        components.setdefault(kind, {})[name] = node
        todo.extend(sorted(_refs(node)))
    for kind in components:
        components[kind] = dict(sorted(components[kind].items()))
    return {
        "openapi": doc["openapi"],
        "info": {"title": doc["info"]["title"], "version": doc["info"]["version"]},
        "x-provenance": {"source": SOURCE, "version": doc["info"]["version"], "synced": SYNCED,
                         "sha256": hashlib.sha256(raw).hexdigest(),
                         "operations": {p: sorted(m) for p, m in OPERATIONS.items()}},
        "servers": doc.get("servers", []),
        "security": doc.get("security", []),
        "paths": paths,
        "components": components,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    raw = Path(argv[0]).read_bytes()
    OUT.write_text(json.dumps(subset(json.loads(raw), raw), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
