#!/usr/bin/env python3
"""A short scenario through a Python client generated from the served OpenAPI document
(openapi-python-client): what a client developer does on day one, with typed models.

    client_scenario.py BASE_URL TOKEN   (the generated package `tenantry_client` on PYTHONPATH)
"""
import sys
import uuid

from tenantry_client import AuthenticatedClient
from tenantry_client.api.organizations import create_organization
from tenantry_client.api.workspaces import create_workspace, get_workspace, list_workspaces, update_workspace
from tenantry_client.models import (
    CreateOrganizationRequest,
    CreateWorkspaceRequest,
    ListWorkspacesSort,
    PageWorkspaceResponse,
    Problem,
    UpdateWorkspaceRequest,
    WorkspaceResponse,
)


def check(condition, message):
    if not condition:
        print(f"client scenario: FAILED: {message}", file=sys.stderr)
        sys.exit(1)


base, token = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)
slug = f"client-{uuid.uuid4().hex[:8]}"

res = create_organization.sync_detailed(client=client, body=CreateOrganizationRequest(name="Client Co", slug=slug))
check(res.status_code == 201 and res.parsed.slug == slug, f"create an organization: {res.status_code}")
org = res.parsed.id

for name in ["Staging", "Production", "Sandbox"]:
    res = create_workspace.sync_detailed(org, client=client, body=CreateWorkspaceRequest(name=name))
    check(res.status_code == 201 and isinstance(res.parsed, WorkspaceResponse), f"create {name}: {res.status_code}")
    check("ETag" in res.headers and "Location" in res.headers, "a created workspace has an ETag and a Location")

# A filter and a sort, typed: the sort is an enum of the allowed values.
res = list_workspaces.sync_detailed(org, client=client, sort=ListWorkspacesSort.NAME, limit=2)
check(isinstance(res.parsed, PageWorkspaceResponse), f"list: {res.status_code}")
names = [w.name for w in res.parsed.items]
check(names == ["Production", "Sandbox"], f"sorted by name, two a page: {names}")
res = list_workspaces.sync_detailed(org, client=client, sort=ListWorkspacesSort.NAME, cursor=res.parsed.next_cursor)
check([w.name for w in res.parsed.items] == ["Staging"], "the next page")
res = list_workspaces.sync_detailed(org, client=client, name_prefix="prod")
check([w.name for w in res.parsed.items] == ["Production"], "filtered by name prefix")
production = res.parsed.items[0].id

# Optimistic concurrency: update with the ETag read, then a stale ETag is a 412.
res = get_workspace.sync_detailed(org, production, client=client)
tag = res.headers["ETag"]
res = update_workspace.sync_detailed(org, production, client=client, body=UpdateWorkspaceRequest(name="Prod"), if_match=tag)
check(res.status_code == 200 and res.parsed.name == "Prod", f"update with If-Match: {res.status_code}")
check(res.headers["ETag"] != tag, "the update moved the version")
client_lenient = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=False)
res = update_workspace.sync_detailed(org, production, client=client_lenient, body=UpdateWorkspaceRequest(name="Lost"), if_match=tag)
check(res.status_code == 412 and isinstance(res.parsed, Problem) and res.parsed.code == "precondition_failed",
      f"a stale If-Match: {res.status_code} {res.content!r}")
res = get_workspace.sync_detailed(org, production, client=client)
check(res.parsed.name == "Prod", "the stale update changed nothing")
print("client scenario: organization, workspaces, filter, sort, paging, If-Match and 412 through the generated client")
