#!/usr/bin/env python3
"""Checks of the OpenAPI document that need the suites' results or a JSON Schema validator:

1. Every example in the document (schemas, properties, parameters, request and response
   bodies) is valid against the schema it illustrates (JSON Schema 2020-12, as OpenAPI 3.1).
2. Every status the integration suites observed, per operation, is one the document lists
   (OBSERVED: the TSV the test servers append to, `method, route template, status, count`).

    openapi_check.py openapi/openapi.json [OBSERVED]
"""
import collections
import json
import sys

from jsonschema import Draft202012Validator


def validator_for(doc, schema):
    root = dict(schema)
    root["components"] = doc["components"]
    return Draft202012Validator(root)


def examples(doc):
    """(where, schema, example) for every example in the document."""
    for name, schema in doc["components"]["schemas"].items():
        if "example" in schema:
            yield f"schema {name}", {"$ref": f"#/components/schemas/{name}"}, schema["example"]
        for prop, sub in schema.get("properties", {}).items():
            if "example" in sub:
                yield f"schema {name}.{prop}", sub, sub["example"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            for p in op.get("parameters", []):
                if "example" in p:
                    yield f"{where} parameter {p['name']}", p.get("schema", {}), p["example"]
            bodies = [("request", op.get("requestBody", {}))]
            bodies += [(f"response {s}", r) for s, r in op.get("responses", {}).items()]
            for label, body in bodies:
                for ctype, media in body.get("content", {}).items():
                    if "example" in media:
                        yield f"{where} {label} {ctype}", media.get("schema", {}), media["example"]


def check_examples(doc):
    failures, count = [], 0
    for where, schema, example in examples(doc):
        count += 1
        errors = sorted(validator_for(doc, schema).iter_errors(example), key=lambda e: list(e.path))
        for e in errors[:3]:
            failures.append(f"{where}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
    return count, failures


def check_observed(doc, observed):
    seen = collections.defaultdict(int)
    for line in open(observed):
        method, route, status, count = line.rstrip("\n").split("\t")
        seen[(method, route, status)] += int(count)
    failures, operations = [], set()
    for (method, route, status), count in sorted(seen.items()):
        if route == "unmatched" or status == "405":
            continue  # no operation: a path or method the API does not have
        method = "GET" if method == "HEAD" else method
        op = doc["paths"].get(route, {}).get(method.lower())
        if op is None:
            continue  # not an API operation (/metrics, /openapi.json, Swagger UI)
        operations.add((method, route))
        if status not in op["responses"]:
            failures.append(f"{method} {route} ({op['operationId']}) answered {status} ({count}x), "
                            f"which it does not document (documents {', '.join(sorted(op['responses']))})")
    return len(operations), failures


def main():
    doc = json.load(open(sys.argv[1]))
    count, failures = check_examples(doc)
    print(f"openapi: {count} examples checked against their schemas")
    if len(sys.argv) > 2:
        ops, observed_failures = check_observed(doc, sys.argv[2])
        total = sum(1 for item in doc["paths"].values() for _ in item)
        print(f"openapi: statuses observed on {ops} of {total} operations, all compared with the document")
        failures += observed_failures
    for f in failures:
        print(f"openapi: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


main()
