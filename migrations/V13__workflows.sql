-- Workflows: a draft (YAML) per workflow in a workspace, and published versions 1, 2, 3, ...
-- that the database keeps immutable. Publishing goes through app.publish_workflow(), which takes
-- a row lock on the workflow, so concurrent publishes get consecutive numbers without gaps.

create table public.workflows (
  organization_id uuid not null,
  workspace_id    uuid not null,
  id              uuid not null,
  name            text not null check (char_length(name) between 1 and 200),
  draft           text not null check (octet_length(draft) <= 262144),
  latest_version  integer not null default 0,
  archived_at     timestamptz,
  created_by      uuid references public.users (id) on delete set null,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  primary key (organization_id, id),
  foreign key (organization_id, workspace_id) references public.workspaces (organization_id, id) on delete cascade,
  constraint workflows_name_key unique (organization_id, workspace_id, name)
);
create trigger workflows_set_updated_at before update on public.workflows
  for each row execute function public.set_updated_at();
alter table public.workflows enable row level security;
alter table public.workflows force row level security;

create table public.workflow_versions (
  organization_id uuid not null,
  workflow_id     uuid not null,
  version         integer not null check (version >= 1),
  definition      text not null,
  spec            jsonb not null,
  published_by    uuid references public.users (id) on delete set null,
  published_at    timestamptz not null default now(),
  primary key (organization_id, workflow_id, version),
  foreign key (organization_id, workflow_id) references public.workflows (organization_id, id) on delete cascade
);
alter table public.workflow_versions enable row level security;
alter table public.workflow_versions force row level security;

-- Published versions never change. Deleting one is allowed only as part of deleting its
-- workflow (cascading from a workspace or organization deletion). SECURITY DEFINER so the
-- answer does not depend on what the caller can see.
create or replace function app.workflow_versions_immutable() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'DELETE' and not exists (select 1 from public.workflows w
                                      where w.organization_id = old.organization_id and w.id = old.workflow_id) then
    return old;
  end if;
  raise exception 'published workflow versions are immutable' using errcode = 'TY030';
end
$$;
alter function app.workflow_versions_immutable() owner to tenantry_definer;
revoke all on function app.workflow_versions_immutable() from public;
create trigger workflow_versions_immutable before update or delete on public.workflow_versions
  for each row execute function app.workflow_versions_immutable();
