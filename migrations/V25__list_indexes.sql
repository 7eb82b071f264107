-- Indexes for the lists' filters and sorts (issue 14). Every list pages by keyset on one of
-- these (or on a primary or unique key), inside the organization: `src/api/<resource>.rs` names
-- the index beside each statement. Expand-only.

-- Name prefixes are case-insensitive (`lower(name) like 'abc%'`): text_pattern_ops makes the
-- prefix a range scan whatever the database's collation.
create index workspaces_name_prefix on public.workspaces (organization_id, lower(name) text_pattern_ops);
create index roles_name_prefix on public.roles (organization_id, lower(name) text_pattern_ops);
create index workflows_name_prefix on public.workflows (organization_id, workspace_id, lower(name) text_pattern_ops);

-- Members: newest or oldest first, optionally by role; by e-mail through the users table.
create index memberships_by_created on public.memberships (organization_id, created_at, user_id);
create index memberships_by_role on public.memberships (organization_id, role, created_at, user_id);
create index users_email_lower on public.users (lower(email));

-- API keys by name.
create index api_keys_by_name on public.api_keys (organization_id, name, id);

-- Workflows of a workspace by creation (ids are UUIDv7).
create index workflows_by_workspace on public.workflows (organization_id, workspace_id, id);

-- Runs of a workspace in one status.
create index workflow_runs_by_status on public.workflow_runs (organization_id, workspace_id, status, id);

-- Audit events by actor, and by time (seq and occurred_at rise together; a time range finds its
-- first and last entries here).
create index audit_events_by_actor on public.audit_events (organization_id, actor_id, seq);
create index audit_events_by_time on public.audit_events (organization_id, occurred_at, seq);

-- Invoices by status and by issue date.
create index invoices_by_status on public.invoices (organization_id, status, id);
create index invoices_by_issued on public.invoices (organization_id, issued_at, id);

-- Platform administration: every organization by name, payment events by arrival.
create index organizations_by_name on public.organizations (name, id);
create index webhook_events_by_received on public.webhook_events (received_at, provider, event_id);
