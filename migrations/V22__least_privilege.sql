-- Least privilege inside an organization (issue 12): restrictions that cannot be lost or lifted
-- by accident, restrictions that travel with keys and invitations, one-time secrets never kept
-- for replay, organizations' consent to sign-in role mappings, and the records definer functions
-- need to act only on what the verified context names.

-- A member's workspace restriction is a flag of its own. Before, "no rows in member_workspaces"
-- meant unrestricted, so deleting a restricted member's last workspace lifted the restriction.
alter table public.memberships add column restricted boolean not null default false;
alter table public.memberships no force row level security;
update public.memberships m set restricted = true
where exists (select 1 from public.member_workspaces w
              where w.organization_id = m.organization_id and w.user_id = m.user_id);
alter table public.memberships force row level security;
-- app.workspace_restricted() runs once per statement of every workspace-scoped read: a partial
-- index of the (few) restricted memberships keeps that lookup as cheap as an empty table.
create index memberships_restricted on public.memberships (organization_id, user_id) where restricted;

-- An API key or an invitation made by a restricted member is restricted too (NULL: unrestricted).
alter table public.api_keys add column workspace_ids uuid[]
  check (workspace_ids is null or cardinality(workspace_ids) between 1 and 1000);
alter table public.invitations add column workspace_ids uuid[]
  check (workspace_ids is null or cardinality(workspace_ids) between 1 and 1000);

-- A response that carried a one-time secret (an API key, an invitation token) is remembered by
-- its status and Location only: a replay says it succeeded, never shows the secret again.
alter table public.idempotency_keys add column secret_withheld boolean not null default false;
alter table public.idempotency_keys no force row level security;
update public.idempotency_keys set response_body = null, secret_withheld = true
where response_type = 'application/json' and response_status = 201
  and (response_location like '%/api-keys/%' or response_location like '%/invitations/%');
alter table public.idempotency_keys force row level security;

-- The nil organization id is the platform's audit chain: no tenant may ever have it.
alter table public.organizations add constraint organizations_id_not_nil
  check (id <> '00000000-0000-0000-0000-000000000000');

-- Deleted organizations, by the transaction that deleted them. app.anonymise_organization_audit()
-- acts only on an organization deleted in its own transaction, so it cannot be pointed at another
-- tenant's (or the platform's) log. Written only by the delete trigger; the app role has no access.
create table public.organization_tombstones (
  organization_id uuid primary key check (organization_id <> '00000000-0000-0000-0000-000000000000'),
  deleted_at      timestamptz not null default now(),
  deleted_xid     xid8 not null
);
alter table public.organization_tombstones enable row level security;
alter table public.organization_tombstones force row level security;

create trigger organizations_tombstone after delete on public.organizations
  for each row execute function app.organization_tombstone();

-- An organization's consent to sign-in role mappings: the identity provider (`provider`, the
-- grant source sign-in records) may give members these built-in roles here, and no others. The
-- platform's configuration says which claims map to which role; the organization says whether
-- that provider may grant it at all, and the granter must hold every permission of the role.
create table public.provider_grants (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  provider        text not null check (char_length(provider) between 1 and 200),
  role            text not null check (role in ('owner', 'admin', 'editor', 'approver', 'viewer', 'auditor',
                                                'billing_admin', 'integration_admin')),
  granted_by      uuid references public.users (id) on delete set null,
  created_at      timestamptz not null default now(),
  primary key (organization_id, id),
  unique (organization_id, provider, role)
);
alter table public.provider_grants enable row level security;
alter table public.provider_grants force row level security;

-- Sign-in: the attempt is bound to the browser that started it (a hash of a cookie it was given,
-- against login CSRF), and taking it at the callback leaves a single-use completion (hash only)
-- that starting the session consumes, so sessions are started only by a sign-in that completed.
alter table public.login_attempts add column browser_hash bytea check (octet_length(browser_hash) = 32);
alter table public.login_attempts add column completion_hash bytea check (octet_length(completion_hash) = 32);
alter table public.login_attempts add column issuer text check (char_length(issuer) <= 500);
alter table public.login_attempts add column taken_at timestamptz;
create index login_attempts_completion_idx on public.login_attempts (completion_hash) where completion_hash is not null;

-- Fair claims: the queue finds each organization's oldest queued run and counts running ones.
create index workflow_runs_queued_by_org on public.workflow_runs (organization_id, created_at)
  where status = 'queued';
create index workflow_runs_running_by_org on public.workflow_runs (organization_id) where status = 'running';

-- Payment webhooks find the invoice or the subscription an event names: by our invoice id, or by
-- the provider's own reference for the subscription.
create index invoices_by_id on public.invoices (id);
create index subscriptions_provider_ref on public.subscriptions (provider, provider_ref)
  where provider_ref is not null;

-- Another organization's data mode is not the caller's business: in a tenant context the
-- data-mode trigger asks about the organization it writes in, the one in context, and any other
-- reads as unknown (which the trigger treats as metadata_only, the strictest). Without a context
-- (a DBA's data migration, a restore) it answers for any organization.
create or replace function app.organization_data_mode(p_org uuid) returns text
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.requested_org_id() is not null and p_org is distinct from app.current_org_id() then
    return null;
  end if;
  return (select o.data_mode from public.organizations o where o.id = p_org);
end
$$;
