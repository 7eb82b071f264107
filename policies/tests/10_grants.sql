-- No grant exceeds the granter, in the database itself: straight to the tables as the app role
-- (the handler's 403 is not there to help), every way permissions flow is refused beyond what
-- the granting principal holds, its workspace restriction included.
begin;
select plan(20);

-- In A: Mona holds a custom role with members:manage, roles:manage and api_keys:manage only;
-- Ada is an admin; Rita is an admin restricted to A1; Vic is a viewer.
insert into users (id, issuer, subject) values
  ('00000000-0000-0000-0000-00000000a0a0', 'test', 'mona'),
  ('00000000-0000-0000-0000-00000000ada0', 'test', 'ada'),
  ('00000000-0000-0000-0000-000000000717', 'test', 'rita'),
  ('00000000-0000-0000-0000-000000000f1c', 'test', 'vic'),
  ('00000000-0000-0000-0000-00000000ce11', 'test', 'newcomer');
insert into organizations (id, name, slug) values ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a');
insert into roles (organization_id, id, name) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000f1', 'manager');
insert into role_permissions (organization_id, role_id, permission) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000f1', 'org:read'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000f1', 'members:read'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000f1', 'members:manage'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000f1', 'roles:manage'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000f1', 'api_keys:manage');
insert into memberships (organization_id, user_id, role, custom_role_id, restricted) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a0a0', 'custom', 'aaaaaaaa-0000-0000-0000-0000000000f1', false),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000ada0', 'admin', null, false),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000717', 'admin', null, true),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000f1c', 'viewer', null, false);
insert into workspaces (organization_id, id, name, region) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'A1', 'us'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a2', 'A2', 'us');
insert into member_workspaces (organization_id, user_id, workspace_id) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000717', 'aaaaaaaa-0000-0000-0000-0000000000a1');

create function pg_temp.as_user(p_user uuid, p_sql text) returns text
language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', p_user::text, true);
  perform set_config('app.current_organization_id', 'aaaaaaaa-0000-0000-0000-000000000000', true);
  perform set_config('app.current_region', 'us', true);
  perform app.enter_context();
  execute p_sql into v;
  execute 'reset role';
  return v;
end $$;

-- Role assignment: only roles the granter holds entirely.
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$insert into memberships
  (organization_id, user_id, role) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000ce11', 'admin') returning 1$q$)$$, '42501', null,
  'a member manager cannot add an admin');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$update memberships set role = 'admin',
  custom_role_id = null where user_id = '00000000-0000-0000-0000-00000000a0a0' returning 1$q$)$$, '42501', null,
  'nor make themselves admin');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$update memberships set role = 'viewer'
  where user_id = '00000000-0000-0000-0000-00000000ada0' returning 1$q$)$$, '42501',
  'row-level security check: this member is beyond the principal''s reach',
  'nor touch an admin (memberships_check_grant refuses the row)');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000ada0', $q$insert into memberships
  (organization_id, user_id, role) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000ce11', 'owner') returning 1$q$)$$, '42501', null, 'an admin cannot add an owner');
select lives_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000ada0', $q$insert into memberships
  (organization_id, user_id, role, custom_role_id) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000ce11', 'custom', 'aaaaaaaa-0000-0000-0000-0000000000f1') returning 1$q$)$$,
  'an admin can give a custom role within their own permissions');

-- Invitations and custom roles.
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$insert into invitations
  (organization_id, id, email, role, token_hash, expires_at) values ('aaaaaaaa-0000-0000-0000-000000000000',
  gen_random_uuid(), 'x@evil.test', 'admin', sha256('t'), now() + interval '1 day') returning 1$q$)$$, '42501', null,
  'a member manager cannot invite an admin');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$insert into role_permissions
  (organization_id, role_id, permission) values ('aaaaaaaa-0000-0000-0000-000000000000',
  'aaaaaaaa-0000-0000-0000-0000000000f1', 'billing:manage') returning 1$q$)$$, '42501', null,
  'nor put a permission they lack into a role (their own included)');

-- API keys: scopes within the creator's permissions, restriction within the creator's.
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$insert into api_keys
  (organization_id, id, name, secret_hash, scopes) values ('aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(),
  'k', sha256('k'), '{billing:manage}') returning 1$q$)$$, '42501', null, 'a key cannot hold a scope its creator lacks');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-000000000717', $q$insert into api_keys
  (organization_id, id, name, secret_hash, scopes) values ('aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(),
  'k', sha256('k'), '{workspaces:read}') returning 1$q$)$$, '42501', null,
  'a restricted member''s key cannot be unrestricted');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-000000000717', $q$insert into api_keys
  (organization_id, id, name, secret_hash, scopes, workspace_ids) values ('aaaaaaaa-0000-0000-0000-000000000000',
  gen_random_uuid(), 'k', sha256('k'), '{workspaces:read}', '{aaaaaaaa-0000-0000-0000-0000000000a2}') returning 1$q$)$$,
  '42501', null, 'nor restricted to a workspace beyond the creator''s');

-- Restrictions: never lifted or widened by a restricted member, never a way around one.
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-000000000717', $q$update memberships
  set restricted = false where user_id = '00000000-0000-0000-0000-000000000717' returning 1$q$)$$, '42501', null,
  'a restricted member cannot lift their own restriction');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-000000000717', $q$insert into member_workspaces
  (organization_id, user_id, workspace_id) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-000000000717', 'aaaaaaaa-0000-0000-0000-0000000000a2') returning 1$q$)$$, '42501', null,
  'nor widen it');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-000000000717', $q$insert into memberships
  (organization_id, user_id, role) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000ce11', 'viewer') returning 1$q$)$$, '42501', null,
  'nor add an unrestricted member');

-- Identity-provider consents: within the granter's roles, never by a restricted member.
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-000000000717', $q$insert into provider_grants
  (organization_id, id, provider, role) values ('aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(), 'local',
  'viewer') returning 1$q$)$$, '42501', null, 'a restricted member cannot let a provider grant roles');

-- The row checks behind the grant rules, straight on the tables: the member's role, the role a
-- provider would grant.
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$insert into member_workspaces
  (organization_id, user_id, workspace_id) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000ada0', 'aaaaaaaa-0000-0000-0000-0000000000a2') returning 1$q$)$$, '42501',
  'row-level security check: this member''s role is beyond the principal''s',
  'a member manager cannot restrict an admin to a workspace');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$delete from member_workspaces
  where user_id = '00000000-0000-0000-0000-000000000717' returning 1$q$)$$, '42501',
  'row-level security check: this member''s role is beyond the principal''s',
  'nor unlist a restricted admin''s workspace');
select is(pg_temp.as_user('00000000-0000-0000-0000-00000000ada0', $q$insert into member_workspaces
  (organization_id, user_id, workspace_id) values ('aaaaaaaa-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-000000000f1c', 'aaaaaaaa-0000-0000-0000-0000000000a2') returning 1$q$), '1',
  'an admin lists a viewer''s workspace');
select throws_ok($$select pg_temp.as_user('00000000-0000-0000-0000-00000000a0a0', $q$insert into provider_grants
  (organization_id, id, provider, role) values ('aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(), 'local',
  'admin') returning 1$q$)$$, '42501', 'row-level security check: this role is beyond the principal''s own',
  'a member manager cannot let a provider grant admin');
select is(pg_temp.as_user('00000000-0000-0000-0000-00000000ada0', $q$delete from memberships
  where user_id = '00000000-0000-0000-0000-000000000f1c' returning 1$q$), '1',
  'an admin removes the viewer');
select is((select count(*) from member_workspaces where user_id = '00000000-0000-0000-0000-000000000f1c'), 0::bigint,
  'whose workspace rows went with the membership (a cascade, which the row checks leave alone)');

select * from finish();
rollback;
