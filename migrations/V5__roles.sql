-- The permission catalogue and the built-in roles, defined once, here. Handlers check a
-- permission first (to answer 403 naming it); write policies check the same permission through
-- app.has_permission(), which reads these tables.
-- `member` becomes `editor` (the operator role); five roles are added.

insert into public.permissions (name, description) values
  ('roles:manage',         'Create, change and delete the organization''s custom roles'),
  ('billing:read',         'Read the subscription, invoices and the ledger'),
  ('billing:manage',       'Change the subscription and billing details'),
  ('flags:read',           'Read feature flags and evaluate them'),
  ('flags:write',          'Configure feature flags for the organization'),
  ('workflows:read',       'List and read workflows, versions and runs'),
  ('workflows:write',      'Create and edit workflow drafts'),
  ('workflows:publish',    'Publish a workflow version'),
  ('runs:execute',         'Start and cancel workflow runs'),
  ('provider_keys:manage', 'Store, rotate and delete bring-your-own provider keys')
on conflict (name) do nothing;

alter table public.builtin_role_permissions drop constraint builtin_role_permissions_role_check;
alter table public.memberships drop constraint memberships_role_check;
update public.builtin_role_permissions set role = 'editor' where role = 'member';

-- memberships has FORCE RLS and a migration runs with no tenant context, so the owner lifts
-- FORCE for this one statement. The ALTER holds an exclusive lock until this migration commits:
-- nobody ever sees the table unforced, and `tenantry check` verifies it is forced again.
alter table public.memberships no force row level security;
update public.memberships set role = 'editor' where role = 'member';
alter table public.memberships force row level security;

alter table public.builtin_role_permissions add constraint builtin_role_permissions_role_check
  check (role in ('owner', 'admin', 'editor', 'approver', 'viewer', 'auditor', 'billing_admin', 'integration_admin'));
alter table public.memberships add constraint memberships_role_check
  check (role in ('owner', 'admin', 'editor', 'approver', 'viewer', 'auditor', 'billing_admin', 'integration_admin'));

-- What each built-in role grants. owner: everything. admin: everything but deleting the
-- organization and managing owners.
delete from public.builtin_role_permissions;
insert into public.builtin_role_permissions (role, permission)
select 'owner', name from public.permissions
union all
select 'admin', name from public.permissions where name not in ('org:delete', 'owners:manage')
union all
select r.role, p.name
from (values
  ('editor',            array['org:read', 'members:read', 'workspaces:read', 'workspaces:write',
                              'flags:read', 'workflows:read', 'workflows:write', 'runs:execute']),
  ('approver',          array['org:read', 'members:read', 'workspaces:read', 'flags:read',
                              'workflows:read', 'workflows:publish']),
  ('viewer',            array['org:read', 'members:read', 'workspaces:read', 'flags:read', 'workflows:read']),
  ('auditor',           array['org:read', 'members:read', 'workspaces:read', 'flags:read', 'workflows:read',
                              'audit:read', 'billing:read']),
  ('billing_admin',     array['org:read', 'billing:read', 'billing:manage']),
  ('integration_admin', array['org:read', 'workspaces:read', 'api_keys:manage', 'provider_keys:manage'])
) as r(role, perms)
cross join lateral unnest(r.perms) as p(name);
