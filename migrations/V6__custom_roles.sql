-- Custom roles: an organization names a set of catalogue permissions and assigns it to members.
-- Nobody can put into a role, or hand out through one, a permission they do not hold
-- themselves (see policies/70_roles.sql).

create table public.roles (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  name            text not null check (name ~ '^[a-z0-9][a-z0-9_-]{0,49}$'),
  description     text not null default '' check (char_length(description) <= 500),
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  primary key (organization_id, id),
  constraint roles_name_key unique (organization_id, name)
);
create trigger roles_set_updated_at before update on public.roles
  for each row execute function public.set_updated_at();
alter table public.roles enable row level security;
alter table public.roles force row level security;

create table public.role_permissions (
  organization_id uuid not null,
  role_id         uuid not null,
  permission      text not null references public.permissions (name),
  primary key (organization_id, role_id, permission),
  foreign key (organization_id, role_id) references public.roles (organization_id, id) on delete cascade
);
alter table public.role_permissions enable row level security;
alter table public.role_permissions force row level security;

-- A membership holds a built-in role, or `custom` with the custom role it points to. A role in
-- use cannot be deleted.
alter table public.memberships add column custom_role_id uuid;
alter table public.memberships add constraint memberships_custom_role_fkey
  foreign key (organization_id, custom_role_id) references public.roles (organization_id, id);
alter table public.memberships drop constraint memberships_role_check;
alter table public.memberships add constraint memberships_role_check
  check (role in ('owner', 'admin', 'editor', 'approver', 'viewer', 'auditor', 'billing_admin',
                  'integration_admin', 'custom'));
alter table public.memberships add constraint memberships_custom_role_check
  check ((role = 'custom') = (custom_role_id is not null));
create index memberships_custom_role_idx on public.memberships (organization_id, custom_role_id);
