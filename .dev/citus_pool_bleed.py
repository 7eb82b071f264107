#!/usr/bin/env python3
"""The Citus drill's pool-bleed probe: two tenants' owners hammer one server whose pool has two
connections (so every connection serves both tenants in turn), with reads, writes and refused
requests mixed, and every answer must be the caller's own tenant's. The same shape as
tests/api/isolation.rs's pool_bleed, over HTTP against a server on the coordinator.

    .dev/citus_pool_bleed.py BASE_URL TOKEN_A ORG_A TOKEN_B ORG_B [REQUESTS]
"""
import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, token_a, org_a, token_b, org_b = sys.argv[1:6]
total = int(sys.argv[6]) if len(sys.argv) > 6 else 2000


def call(method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def one(i):
    token, org, other = (token_a, org_a, org_b) if i % 4 < 2 else (token_b, org_b, org_a)
    if i % 10 == 3:  # a write now and then
        status, ws = call("POST", f"/api/v1/orgs/{org}/workspaces", token, {"name": f"bleed-{i}"})
        assert status == 201, f"request {i}: create answered {status}"
        assert ws["organization_id"] == org, f"request {i}: created in {ws['organization_id']}"
    elif i % 10 == 7:  # a refused one: the other tenant's
        status, _ = call("GET", f"/api/v1/orgs/{other}/workspaces", token)
        assert status == 404, f"request {i}: the other tenant's workspaces answered {status}"
    else:
        status, page = call("GET", f"/api/v1/orgs/{org}/workspaces?limit=200", token)
        assert status == 200, f"request {i}: list answered {status}"
        for ws in page["items"]:
            assert ws["organization_id"] == org, f"request {i}: saw {ws['organization_id']}'s workspace"
    return 1


with ThreadPoolExecutor(max_workers=8) as pool:
    done = sum(pool.map(one, range(total)))
print(f"pool bleed: {done} requests from two tenants over a pool of two connections, every answer its own")
