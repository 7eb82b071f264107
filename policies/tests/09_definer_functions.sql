-- Every SECURITY DEFINER function the app role may call, called by it with hostile arguments:
-- another organization's ids, other users' secrets without their secret, the nil (platform) id,
-- out-of-range values. Each must act only on what the verified context (or a secret only its
-- legitimate caller holds) names. The first test fails when a door is added without a case here.
begin;
select plan(102);

-- Alice is admin of A (Carol owns A); Bob owns B; Dave is a viewer of A restricted to A1; Erin is
-- a viewer of A (erased below). C is an organization of region eu.
insert into users (id, issuer, subject, email) values
  ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice', 'alice@a.test'),
  ('00000000-0000-0000-0000-0000000000b0', 'test', 'bob', 'bob@b.test'),
  ('00000000-0000-0000-0000-00000000ca01', 'test', 'carol', 'carol@a.test'),
  ('00000000-0000-0000-0000-00000000da7e', 'test', 'dave', 'dave@a.test'),
  ('00000000-0000-0000-0000-0000000000e1', 'test', 'erin', 'erin@a.test');
insert into organizations (id, name, slug, region, data_mode) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a', 'us', 'metadata_only'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'pgtap-b', 'us', 'full'),
  ('cccccccc-0000-0000-0000-000000000000', 'C', 'pgtap-c', 'eu', 'metadata_only');
insert into memberships (organization_id, user_id, role, restricted) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'admin', false),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000ca01', 'owner', false),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000da7e', 'viewer', true),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-0000000000e1', 'viewer', false),
  ('bbbbbbbb-0000-0000-0000-000000000000', '00000000-0000-0000-0000-0000000000b0', 'owner', false);
insert into workspaces (organization_id, id, name, region) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'A1', 'us'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a2', 'A2', 'us'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'B1', 'us'),
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000c1', 'C1', 'eu');
insert into member_workspaces (organization_id, user_id, workspace_id) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-0000000000a1');
insert into roles (organization_id, id, name) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000f1', 'b-billing');
insert into role_permissions (organization_id, role_id, permission) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000f1', 'billing:manage');
insert into invitations (organization_id, id, email, role, token_hash, invited_by, expires_at) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000e2', 'x@b.test', 'admin',
   sha256('b-invitation'), '00000000-0000-0000-0000-0000000000b0', now() + interval '1 day');
insert into api_keys (organization_id, id, name, secret_hash, scopes) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000ce', 'b key', sha256('b-key'),
   '{billing:read}');
insert into sessions (id, user_id, provider, created_at, last_refreshed_at, idle_expires_at, absolute_expires_at)
values ('5e550000-0000-0000-0000-0000000000b0', '00000000-0000-0000-0000-0000000000b0', 'test', now(), now(),
        now() + interval '1 day', now() + interval '1 day');
insert into refresh_tokens (id, session_id, secret_hash, created_at) values
  ('7e000000-0000-0000-0000-0000000000b0', '5e550000-0000-0000-0000-0000000000b0', sha256('b-refresh'), now());
insert into login_attempts (state_hash, browser_hash, provider, pkce_verifier, nonce, created_at, expires_at) values
  (sha256('b-state'), sha256('b-browser'), 'local', 'v', 'n', now(), now() + interval '10 minutes');
insert into workflows (organization_id, workspace_id, id, name, draft) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'bbbbbbbb-0000-0000-0000-00000000f100',
   'wb', 'steps: []');
insert into workflows (organization_id, workspace_id, id, name, draft, latest_version) values
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000c1', 'cccccccc-0000-0000-0000-00000000f100',
   'wc', 'x', 1);
insert into workflow_versions (organization_id, workspace_id, workflow_id, version, definition, spec) values
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000c1', 'cccccccc-0000-0000-0000-00000000f100', 1, 'x', '{}');
insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input_bytes) values
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000c1', 'cccccccc-0000-0000-0000-0000000000e1',
   'cccccccc-0000-0000-0000-00000000f100', 1, 0);
insert into subscriptions (organization_id, id, plan_id, status, current_period_start, current_period_end, provider,
                           provider_ref) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000005b5', 'pro', 'incomplete', now(),
   now() + interval '1 month', 'stripe', 'sub_b');
insert into invoices (organization_id, id, number, subscription_id, currency, total_minor, period_start, period_end)
values ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-000000001a01', 1,
        'bbbbbbbb-0000-0000-0000-0000000005b5', 'USD', 4900, now(), now() + interval '1 month');
insert into provider_grants (organization_id, id, provider, role) values
  ('bbbbbbbb-0000-0000-0000-000000000000', gen_random_uuid(), 'local', 'viewer');
insert into audit_events (organization_id, id, actor_type, action, outcome, prev_hash, hash) values
  ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'system', 'auth.sign_in', 'allowed', '\x', '\x'),
  ('dddddddd-0000-0000-0000-000000000000', gen_random_uuid(), 'user', 'workspace.create', 'allowed', '\x', '\x');
-- B has an endpoint, two events, and a delivery of the first being delivered under claim d311...;
-- C (eu) has one due.
insert into organization_data_keys (organization_id, id, wrapped_key, master_key_version) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000d1', decode(repeat('00', 60), 'hex'), 1),
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000d1', decode(repeat('00', 60), 'hex'), 1);
insert into webhook_endpoints (organization_id, id, url, event_types, data_key_id, secret_nonce, secret_ciphertext) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000a7', 'https://b.example.com/hook', '{*}',
   'bbbbbbbb-0000-0000-0000-0000000000d1', decode(repeat('00', 12), 'hex'), decode(repeat('00', 48), 'hex')),
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000a7', 'https://c.example.com/hook', '{*}',
   'cccccccc-0000-0000-0000-0000000000d1', decode(repeat('00', 12), 'hex'), decode(repeat('00', 48), 'hex'));
insert into events (organization_id, id, type, occurred_at, data) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-7000-8000-0000000000e1', 'workspace.created', now(), '{}'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-7000-8000-0000000000e2', 'workspace.created', now(), '{}'),
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-7000-8000-0000000000e1', 'workspace.created', now(), '{}');
insert into webhook_deliveries (organization_id, id, endpoint_id, event_id, status, attempts, claim_token,
                                lease_expires_at) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000de', 'bbbbbbbb-0000-0000-0000-0000000000a7',
   'bbbbbbbb-0000-7000-8000-0000000000e1', 'delivering', 1, 'd3110000-0000-0000-0000-0000000000b0',
   now() + interval '1 hour');
insert into webhook_deliveries (organization_id, id, endpoint_id, event_id) values
  ('cccccccc-0000-0000-0000-000000000000', 'cccccccc-0000-0000-0000-0000000000de', 'cccccccc-0000-0000-0000-0000000000a7',
   'cccccccc-0000-7000-8000-0000000000e1');
-- D was deleted, in another transaction than ours.
insert into organization_tombstones (organization_id, deleted_xid) values
  ('dddddddd-0000-0000-0000-000000000000', '1'::xid8);

-- Runs `p_sql` as the app role in a context: a user (or none), an organization named (or none),
-- region us, and optionally a webhook token or a run claim. Returns the first column as text.
create function pg_temp.as_app(p_user uuid, p_org uuid, p_sql text, p_webhook uuid default null,
                               p_claim uuid default null, p_delivery uuid default null) returns text
language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', coalesce(p_user::text, ''), true);
  perform set_config('app.current_organization_id', coalesce(p_org::text, ''), true);
  perform set_config('app.current_region', 'us', true);
  perform set_config('app.current_session_id', '', true);
  perform set_config('app.current_api_key_id', '', true);
  perform set_config('app.current_webhook_token', coalesce(p_webhook::text, ''), true);
  perform set_config('app.current_run_claim', coalesce(p_claim::text, ''), true);
  perform set_config('app.current_delivery_claim', coalesce(p_delivery::text, ''), true);
  perform app.enter_context();
  execute p_sql into v;
  execute 'reset role';
  return v;
end $$;
-- Alice in A naming `p_org`.
create function pg_temp.alice(p_org uuid, p_sql text) returns text language sql as $$
  select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', p_org, p_sql) $$;
create function pg_temp.alice(p_sql text) returns text language sql as $$
  select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', p_sql) $$;

-- 1. Every door has a case in this file.
select set_eq(
  $$select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'app' and p.prosecdef and has_function_privilege('tenantry_app', p.oid, 'execute')$$,
  array['current_org_id', 'enter_context', 'has_permission', 'workspace_restricted', 'allowed_workspace_ids',
        'workspace_allowed',
        'current_permissions', 'role_grants', 'can_grant_role', 'within_restriction', 'member_within_restriction',
        'provision_user', 'refresh_profile', 'create_login_attempt', 'take_login_attempt',
        'sync_provider_memberships', 'caller_organizations', 'start_session', 'start_console_session', 'use_console_session',
        'refresh_token_state', 'rotate_refresh_token', 'end_session',
        'record_security_event', 'erase_current_user', 'create_organization', 'create_organization_recorded',
        'accept_invitation', 'find_api_key',
        'touch_api_key', 'anonymise_organization_audit', 'is_platform_admin', 'admin_list_organizations',
        'admin_change_organization', 'admin_put_flag', 'admin_target_flag', 'admin_list_webhook_events',
        'publish_workflow', 'publish_workflow_version', 'current_run_id', 'claim_next_run', 'renew_run_claim', 'release_run_claim',
        'begin_webhook_event',
        'finish_webhook_event', 'record_unroutable_webhook_event', 'record_usage',
        'organization_requests_per_minute', 'organization_data_mode', 'prune_events', 'current_delivery', 'current_claim',
        'claim_next_delivery', 'finish_delivery', 'ping_webhook_endpoint', 'run_queue_stats',
        'verify_audit_chains'],
  'every definer function the app role may call is covered here');

-- The context: naming B gives Alice nothing there.
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', 'select app.current_org_id()::text'), null,
  'current_org_id: naming another organization is not membership');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', 'select permissions::text from app.current_principal()'),
  null, 'current_principal: no permissions in another organization');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', $$select app.has_permission('billing:manage')::text$$),
  'false', 'has_permission: nothing in another organization');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-000000000000',
  'select app.workspace_restricted()::text'), 'true', 'workspace_restricted: a restricted member is');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'bbbbbbbb-0000-0000-0000-000000000000',
  'select count(*)::text from workspaces'), '0', 'workspace_restricted: and nothing of another organization opens up');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', 'select count(*)::text from app.allowed_workspace_ids()'),
  '0', 'allowed_workspace_ids: none in another organization');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000',
  $$select app.workspace_allowed('bbbbbbbb-0000-0000-0000-0000000000b1')::text$$), 'false',
  'workspace_allowed: not a workspace of an organization she only names');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-000000000000',
  $$select app.workspace_allowed('aaaaaaaa-0000-0000-0000-0000000000a2')::text
           || app.workspace_allowed('aaaaaaaa-0000-0000-0000-0000000000a1')::text$$), 'falsetrue',
  'workspace_allowed: a restricted member only her own workspace');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-000000000000',
  $$select set_config('app.verified_workspaces', '', true) || app.workspace_allowed('aaaaaaaa-0000-0000-0000-0000000000a2')::text$$),
  'false', 'workspace_allowed: lifting her restriction by hand breaks the seal');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', 'select app.current_permissions()::text'), null,
  'current_permissions: none in another organization');
select is(pg_temp.alice($$select app.role_grants('custom', 'bbbbbbbb-0000-0000-0000-0000000000f1')::text$$), '{}',
  'role_grants: another organization''s custom role grants nothing here');
select is(pg_temp.alice($$select app.can_grant_role('owner', null)::text$$), 'false',
  'can_grant_role: an admin cannot grant owner');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', $$select app.can_grant_role('viewer', null)::text$$),
  'false', 'can_grant_role: nothing in another organization');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-000000000000',
  $$select app.within_restriction('{aaaaaaaa-0000-0000-0000-0000000000a2}')::text$$), 'false',
  'within_restriction: a restricted member cannot hand out another workspace');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-000000000000',
  'select app.within_restriction(null)::text'), 'false',
  'within_restriction: nor lift the restriction of what it creates');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000da7e', 'aaaaaaaa-0000-0000-0000-000000000000',
  $$select app.member_within_restriction('00000000-0000-0000-0000-00000000a11c')::text$$), 'false',
  'member_within_restriction: a restricted member cannot act on an unrestricted one');

-- Identity.
select is(pg_temp.alice($$select app.provision_user('test', 'bob', 'evil@x.test', 'Evil')::text$$),
  '00000000-0000-0000-0000-0000000000b0', 'provision_user: an existing identity maps to its user');
select is((select email || '/' || coalesce(display_name, '-') from users where subject = 'bob'), 'bob@b.test/-',
  'provision_user: and is not changed by it');
select lives_ok($$select pg_temp.alice($q$select app.refresh_profile('evil@x.test', 'Evil')::text$q$)$$,
  'refresh_profile: runs for the user in context');
select is((select string_agg(subject || '=' || email, ',' order by subject) from users where email = 'evil@x.test'),
  'alice=evil@x.test', 'refresh_profile: only that user''s profile changed');
select is((select string_agg(p.organization_id::text || '/' || u.subject || '=' || p.email || '@' || (p.row_version = u.row_version),
                             ',' order by p.organization_id, u.subject)
             from member_profiles p join users u on u.id = p.user_id where u.subject in ('alice', 'bob')),
  (select string_agg(m.organization_id::text || '/' || u.subject || '=' || u.email || '@true', ',' order by m.organization_id, u.subject)
     from memberships m join users u on u.id = m.user_id where u.subject in ('alice', 'bob')),
  'refresh_profile: and each organization''s copy of it, row version too; no one else''s');
-- The caller's organizations: the verified user's, whatever organization is named.
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000',
                        $$select string_agg(slug || '=' || role, ',' order by slug) from app.caller_organizations()$$),
  'pgtap-a=admin', 'caller_organizations: Alice''s organization alone, naming B changes nothing');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', 'select count(*)::text from app.caller_organizations()'),
  '0', 'caller_organizations: without a user, none');
select lives_ok($$select pg_temp.as_app(null, null, $q$select app.create_login_attempt(sha256('s2'), sha256('b2'),
  'local', null, 'v', 'n', null, now(), now() + interval '10 years')::text$q$)$$, 'create_login_attempt: anyone may start');
select ok((select expires_at <= now() + interval '15 minutes' from login_attempts where state_hash = sha256('s2')),
  'create_login_attempt: but it lives 15 minutes at most');
select is(pg_temp.as_app(null, null, $$select count(*)::text from app.take_login_attempt(sha256('b-state'),
  sha256('another-browser'), sha256('c'), now())$$), '0', 'take_login_attempt: not from another browser');
select is((select taken_at from login_attempts where state_hash = sha256('b-state')), null,
  'take_login_attempt: and the attempt stays unused for its owner');
select lives_ok($$select pg_temp.alice(null, $q$select app.sync_provider_memberships('local',
  '{bbbbbbbb-0000-0000-0000-000000000000,bbbbbbbb-0000-0000-0000-000000000000}', '{owner,admin}')::text$q$)$$,
  'sync_provider_memberships: callable');
select is((select count(*) from memberships where organization_id = 'bbbbbbbb-0000-0000-0000-000000000000'
           and user_id = '00000000-0000-0000-0000-00000000a11c'), 0::bigint,
  'sync_provider_memberships: grants no role B did not consent to (it consented to viewer only)');
select throws_ok($$select pg_temp.alice(null, $q$select app.start_session('made-up', gen_random_uuid(), now(),
  now() + interval '1 day', now() + interval '1 day', gen_random_uuid(), sha256('t'), null, null)::text$q$)$$,
  '42501', null, 'start_session: only from a completed sign-in');
select throws_ok($$select pg_temp.alice(null, $q$select app.start_console_session('made-up', gen_random_uuid(), now(),
  now() + interval '1 day', now() + interval '1 day', sha256('c'), null, null)::text$q$)$$,
  '42501', null, 'start_console_session: only from a completed sign-in');
update sessions set console_secret_hash = sha256('b-console') where id = '5e550000-0000-0000-0000-0000000000b0';
select is(pg_temp.as_app(null, null, $$select count(*)::text from app.use_console_session(
  '5e550000-0000-0000-0000-0000000000b0', sha256('guess'), now(), now() + interval '10 years')$$), '0',
  'use_console_session: a session id without its cookie''s secret finds nothing');
select ok((select idle_expires_at < now() + interval '5 years' from sessions
           where id = '5e550000-0000-0000-0000-0000000000b0'),
  'use_console_session: and extends nothing');
select is(pg_temp.as_app(null, null, $$select user_id::text from app.use_console_session(
  '5e550000-0000-0000-0000-0000000000b0', sha256('b-console'), now(), now() + interval '1 hour')$$),
  '00000000-0000-0000-0000-0000000000b0', 'use_console_session: the secret finds its session''s user');
select is(pg_temp.as_app(null, null, $$select count(*)::text from app.refresh_token_state(
  '7e000000-0000-0000-0000-0000000000b0', sha256('guess'))$$), '0', 'refresh_token_state: nothing without the secret');
select is(pg_temp.as_app(null, null, $$select app.rotate_refresh_token('7e000000-0000-0000-0000-0000000000b0',
  sha256('guess'), gen_random_uuid(), sha256('mine'), now(), now() + interval '1 day')::text$$), 'false',
  'rotate_refresh_token: cannot spend another''s token without its secret');
select lives_ok($$select pg_temp.as_app(null, null, $q$select app.end_session('7e000000-0000-0000-0000-0000000000b0',
  sha256('guess'), 'expired', now())::text$q$)$$, 'end_session: callable');
select is((select revoked_at from sessions where id = '5e550000-0000-0000-0000-0000000000b0'), null,
  'end_session: a session id without its refresh token''s secret ends nothing');
select throws_ok($$select pg_temp.as_app(null, null, $q$select app.end_session('7e000000-0000-0000-0000-0000000000b0',
  sha256('b-refresh'), 'revoked_by_admin', now())::text$q$)$$, '22023', null, 'end_session: only its two reasons');
select throws_ok($$select pg_temp.alice(null, $q$select app.record_security_event('platform_admin',
  '00000000-0000-0000-0000-00000000a11c', 'organization.suspend', 'organization', null, 'allowed', null, null, null,
  '{}')::text$q$)$$, '42501', null, 'record_security_event: no forged platform administration');
select throws_ok($$select pg_temp.alice(null, $q$select app.record_security_event('user',
  '00000000-0000-0000-0000-0000000000b0', 'auth.logout', 'session', null, 'allowed', null, null, null,
  '{}')::text$q$)$$, '42501', null, 'record_security_event: not in another user''s name');
select lives_ok($$select pg_temp.as_app('00000000-0000-0000-0000-0000000000e1', null,
  $q$select app.erase_current_user(null, null, null)::text$q$)$$, 'erase_current_user: erases the user in context');
select is((select string_agg(subject, ',' order by subject) from users), 'alice,bob,carol,dave',
  'erase_current_user: and nobody else');

-- Organizations.
select throws_ok($$select pg_temp.alice(null, $q$select app.create_organization(
  '00000000-0000-0000-0000-000000000000', 'Platform', 'platform', 'us', null)::text$q$)$$, '22023', null,
  'create_organization: never the nil id (the platform''s audit chain)');
select throws_ok($$select pg_temp.alice(null, $q$select app.create_organization(
  'bbbbbbbb-0000-0000-0000-000000000000', 'Takeover', 'takeover', 'us', null)::text$q$)$$, '23505', null,
  'create_organization: never an existing organization''s id');
-- The server's door: the same refusals, and its audit entry goes only into the organization it made.
select throws_ok($$select pg_temp.alice(null, $q$select id::text from app.create_organization_recorded(
  '00000000-0000-0000-0000-000000000000', 'Platform', 'platform', 'us', null, null, null, null)$q$)$$, '22023', null,
  'create_organization_recorded: never the nil id');
select throws_ok($$select pg_temp.alice(null, $q$select id::text from app.create_organization_recorded(
  'bbbbbbbb-0000-0000-0000-000000000000', 'Takeover', 'takeover', 'us', null, null, null, null)$q$)$$, '23505', null,
  'create_organization_recorded: never an existing organization''s id');
select throws_ok($$select pg_temp.as_app(null, null, $q$select id::text from app.create_organization_recorded(
  'cccccccc-0000-0000-0000-0000000000c9', 'Nobody', 'nobody-org', 'us', null, null, null, null)$q$)$$, '42501', null,
  'create_organization_recorded: nothing without a user');
select is(pg_temp.alice(null, $q$select slug || ' ' || region from app.create_organization_recorded(
  'cccccccc-0000-0000-0000-0000000000c9', 'Recorded', 'recorded-org', 'us', null, '10.0.0.9', 'probe/1', 'req-9')$q$),
  'recorded-org us', 'create_organization_recorded: returns the organization it made');
select results_eq($$select action, actor_id, target_id, host(ip), user_agent, request_id, details ->> 'slug'
                      from audit_events where organization_id = 'cccccccc-0000-0000-0000-0000000000c9'$$,
  $$values ('organization.create', '00000000-0000-0000-0000-00000000a11c'::uuid, 'cccccccc-0000-0000-0000-0000000000c9',
            '10.0.0.9', 'probe/1', 'req-9', 'recorded-org')$$,
  'create_organization_recorded: one entry, in the new organization''s chain, with the request');
select throws_ok($$select pg_temp.alice(null, $q$select app.accept_invitation('bbbbbbbb-0000-0000-0000-0000000000e2',
  sha256('guess'), null, null, null)::text$q$)$$, 'TY010', null, 'accept_invitation: nothing without its secret');
select is(pg_temp.as_app(null, null, $$select count(*)::text from app.find_api_key(
  'bbbbbbbb-0000-0000-0000-0000000000ce', sha256('guess'))$$), '0', 'find_api_key: nothing without the secret');
select lives_ok($$select pg_temp.as_app(null, null, $q$select app.touch_api_key('bbbbbbbb-0000-0000-0000-0000000000ce',
  sha256('guess'))::text$q$)$$, 'touch_api_key: callable');
select is((select last_used_at from api_keys where id = 'bbbbbbbb-0000-0000-0000-0000000000ce'), null,
  'touch_api_key: records nothing without the secret');
select throws_ok($$select pg_temp.alice($q$select app.anonymise_organization_audit(
  '00000000-0000-0000-0000-000000000000')::text$q$)$$, '42501', null, 'anonymise_organization_audit: never the platform chain');
select throws_ok($$select pg_temp.alice($q$select app.anonymise_organization_audit(
  'bbbbbbbb-0000-0000-0000-000000000000')::text$q$)$$, '42501', null, 'anonymise_organization_audit: never a live organization');
select throws_ok($$select pg_temp.alice($q$select app.anonymise_organization_audit(
  'dddddddd-0000-0000-0000-000000000000')::text$q$)$$, '42501', null,
  'anonymise_organization_audit: never one deleted in another transaction');

-- Platform administration: nothing for someone who is not a platform admin.
select is(pg_temp.alice('select app.is_platform_admin()::text'), 'false', 'is_platform_admin: alice is not one');
select throws_ok($$select pg_temp.alice('select count(*)::text from app.admin_list_organizations(null, 10)')$$,
  '42501', null, 'admin_list_organizations: refused');
select throws_ok($$select pg_temp.alice($q$select app.admin_change_organization('bbbbbbbb-0000-0000-0000-000000000000',
  'suspend', null, null, null, null)::text$q$)$$, '42501', null, 'admin_change_organization: refused');
select throws_ok($$select pg_temp.alice($q$select app.admin_put_flag('x', null, true, null, null, null, null)::text$q$)$$,
  '42501', null, 'admin_put_flag: refused');
select throws_ok($$select pg_temp.alice($q$select app.admin_target_flag('x', 'bbbbbbbb-0000-0000-0000-000000000000',
  true, null, null, null)::text$q$)$$, '42501', null, 'admin_target_flag: refused');
select throws_ok($$select pg_temp.alice($q$select count(*)::text from app.admin_list_webhook_events(null, 10)$q$)$$,
  '42501', null, 'admin_list_webhook_events: refused');
select throws_ok($$select pg_temp.alice($q$select count(*)::text
    from app.admin_list_organizations('name', false, null, null, 10, null, null)$q$)$$,
  '42501', null, 'admin_list_organizations (paged): refused');
select throws_ok($$select pg_temp.alice($q$select count(*)::text
    from app.admin_list_webhook_events(null, true, false, null, null, null, 10)$q$)$$,
  '42501', null, 'admin_list_webhook_events (paged): refused');

-- Workflows and the queue.
select is(pg_temp.alice($$select app.publish_workflow('bbbbbbbb-0000-0000-0000-00000000f100', 'x', '{}')::text$$), null,
  'publish_workflow: another organization''s workflow does not exist here');
select is((select count(*) from workflow_versions where organization_id = 'bbbbbbbb-0000-0000-0000-000000000000'),
  0::bigint, 'publish_workflow: and B has no new version');
select is(pg_temp.alice($$select count(*)::text from app.publish_workflow_version('bbbbbbbb-0000-0000-0000-00000000f100', 'x', '{}', null, null, null)$$),
  '0', 'publish_workflow_version: nor through the server''s door, which returns no row of B');
select is((select count(*) from audit_events where organization_id = 'bbbbbbbb-0000-0000-0000-000000000000'
   and action = 'workflow.publish'), 0::bigint, 'publish_workflow_version: and records nothing in B''s log');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000', 'select app.current_run_id()::text', null,
  gen_random_uuid()), null, 'current_run_id: a made-up claim holds no run');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000', $$select app.current_claim('run', 'workspace')::text$$,
  null, gen_random_uuid()), null, 'current_claim: a made-up run claim holds no workspace');
select is(pg_temp.as_app(null, null, $$select count(*)::text from app.claim_next_run('w', 1000000, 3, 1000000)$$),
  '0', 'claim_next_run: an eu run is not claimed in the us, whatever the arguments');
select is(pg_temp.as_app(null, null, $$select queued || '/' || running || '/' || attempts_exhausted
                                       from app.run_queue_stats()$$),
  '0/0/0', 'run_queue_stats: an eu run is not counted in the us');
select is(pg_temp.as_app(null, null, $$select chains || '/' || broken || '/'
                                              || coalesce(cardinality(broken_organizations), 0)
                                       from app.verify_audit_chains()$$),
  '3/0/0', 'verify_audit_chains: every chain (the three intact, the recorded organization''s too), whatever the context');
select is(pg_temp.as_app(null, null, $$select string_agg(format_type(t, null), ',' order by ord)
                                       from unnest((select proallargtypes from pg_proc
                                                    where proname = 'verify_audit_chains')) with ordinality u(t, ord)$$),
  'bigint,bigint,uuid[]', 'verify_audit_chains: returns no entry content');
select is(pg_temp.as_app(null, null, $$select app.renew_run_claim(gen_random_uuid(), 100000000)::text$$), 'false',
  'renew_run_claim: nothing without the claim');
select is(pg_temp.as_app(null, null, $$select app.release_run_claim(gen_random_uuid())::text
                                       || app.release_run_claim(null)::text$$), 'falsefalse',
  'release_run_claim: nothing without the claim');

-- Webhook deliveries: a claim admits its own delivery's organization, and there only what it
-- delivers.
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000', 'select count(*)::text from app.current_delivery()',
  p_delivery => gen_random_uuid()), '0', 'current_delivery: a made-up claim holds no delivery');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', 'select app.current_org_id()::text',
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0'), null,
  'current_org_id: B''s delivery claim does not admit another organization');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000',
  'select count(*)::text || app.has_permission(''webhooks:manage'')::text from events',
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0'), '1false',
  'current_delivery: in B the claim reads the one event it delivers, with no permission');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000',
  $$select concat(app.current_claim('delivery', 'id'), app.current_claim('delivery', 'endpoint'),
                 app.current_claim('delivery', 'event'))$$,
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0'), '',
  'current_claim: B''s delivery claim names nothing with another organization named');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000',
  $$select concat(app.current_claim('delivery', 'id'), app.current_claim('delivery', 'endpoint'),
                 app.current_claim('delivery', 'event'), app.current_claim('run', 'id'),
                 app.current_claim('delivery', 'secret'), app.current_claim('delivery', repeat('x', 100000)),
                 app.current_claim(null, null))$$,
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0'),
  (select concat(d.id, d.endpoint_id, d.event_id) from webhook_deliveries d
    where d.claim_token = 'd3110000-0000-0000-0000-0000000000b0'),
  'current_claim: in B, the delivery it holds, and nothing for another kind or a hostile name');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000',
  $$select set_config('app.verified_claim', 'delivery ' || gen_random_uuid() || ' x x', true)
           || coalesce(app.current_claim('delivery', 'id')::text, 'none')$$,
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0') like '%none', true,
  'current_claim: a claim rewritten by hand breaks the seal');
select is(pg_temp.as_app(null, null,
  $$select count(*)::text from app.claim_next_delivery('w', 1000000, 1000, 1000000, 1000000, now() + interval '100 years')$$),
  '0', 'claim_next_delivery: an eu delivery is not claimed in the us, nor a live claim, whatever the arguments');
select is(pg_temp.alice($$select app.finish_delivery(now(), 1, 200, null, null, null, now(), 10, 1, 0)$$), null,
  'finish_delivery: nothing without a claim');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000',
  $$select app.finish_delivery(now(), 1, 500, 'x', 'x', null, now() + interval '9 years', 10, 1, 0)$$,
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0'), null,
  'finish_delivery: B''s claim with another organization named records nothing');
select is((select status || attempts from webhook_deliveries where id = 'bbbbbbbb-0000-0000-0000-0000000000de'),
  'delivering1', 'finish_delivery: and B''s delivery is as it was');
select is((select count(*) from webhook_delivery_attempts), 0::bigint, 'finish_delivery: no attempt was recorded');
select is(pg_temp.alice($$select app.ping_webhook_endpoint('bbbbbbbb-0000-0000-0000-0000000000a7')::text$$), null,
  'ping_webhook_endpoint: another organization''s endpoint does not exist here');
select throws_ok($$select pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000',
  'select app.ping_webhook_endpoint(''bbbbbbbb-0000-0000-0000-0000000000a7'')::text',
  p_delivery => 'd3110000-0000-0000-0000-0000000000b0')$$, '42501', null,
  'ping_webhook_endpoint: a delivery claim may not ping');

-- Billing.
create temp table hostile_webhook as select gen_random_uuid() as token;
grant select on hostile_webhook to public;
select is(pg_temp.as_app(null, null, format($$select outcome from app.begin_webhook_event('stripe', 'evt_forged',
  'invoice.paid', now(), '{}', %L, gen_random_uuid(), null, 'bbbbbbbb-0000-0000-0000-000000000000')$$,
  (select token from hostile_webhook))), 'unroutable',
  'begin_webhook_event: an organization id alone routes nothing');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000', 'select permissions::text from app.current_principal()',
  (select token from hostile_webhook)), null, 'begin_webhook_event: and its token grants nothing in B');
select is(pg_temp.as_app(null, null, format($$select outcome from app.begin_webhook_event('stripe', 'evt_mixed',
  'invoice.paid', now(), '{}', %L, 'bbbbbbbb-0000-0000-0000-000000001a01', null, 'aaaaaaaa-0000-0000-0000-000000000000')$$,
  gen_random_uuid())), 'unroutable', 'begin_webhook_event: B''s invoice under A''s metadata routes nowhere');
select is(pg_temp.as_app(null, null, $$select app.finish_webhook_event(gen_random_uuid(), 'processed', null)::text$$),
  'false', 'finish_webhook_event: nothing without a processing token');
select lives_ok($$select pg_temp.as_app(null, null, $q$select app.record_unroutable_webhook_event('stripe', 'evt_kept',
  't', 'bbbbbbbb-0000-0000-0000-000000000000', now(), '{}', 'x')::text$q$)$$, 'record_unroutable_webhook_event: callable');
select is((select count(*) from webhook_events where event_id = 'evt_kept' and status = 'unroutable'
           and processing_token is null), 1::bigint, 'record_unroutable_webhook_event: kept, admitting nobody');
select lives_ok($$select pg_temp.as_app(null, null, $q$select app.record_usage(
  '{bbbbbbbb-0000-0000-0000-000000000000,aaaaaaaa-0000-0000-0000-000000000000,cccccccc-0000-0000-0000-000000000000,bbbbbbbb-0000-0000-0000-000000000000,bbbbbbbb-0000-0000-0000-000000000000}',
  array[current_date - 400, current_date, current_date, current_date, current_date]::date[],
  '{00000000-0000-0000-0000-000000000000,bbbbbbbb-0000-0000-0000-0000000000ce,00000000-0000-0000-0000-000000000000,00000000-0000-0000-0000-000000000000,bbbbbbbb-0000-0000-0000-0000000000ce}',
  '{5,7,9,99999999999,-3}')::text$q$)$$, 'record_usage: callable');
select is((select string_agg(organization_id::text || ':' || requests, ',') from usage_counters),
  'bbbbbbbb-0000-0000-0000-000000000000:10000000',
  'record_usage: not the past, not another organization''s key, not another region, capped, never negative');
select is(pg_temp.alice('bbbbbbbb-0000-0000-0000-000000000000', 'select app.organization_requests_per_minute()::text'),
  null, 'organization_requests_per_minute: not another organization''s plan');
select is(pg_temp.alice($$select app.organization_data_mode('bbbbbbbb-0000-0000-0000-000000000000')$$), null,
  'organization_data_mode: not another organization''s');

-- Retention: whatever the arguments, nothing younger than a week is deleted.
insert into events (organization_id, id, type, occurred_at, data) values
  ('bbbbbbbb-0000-0000-0000-000000000000', app.uuid_v7(now() - interval '2 days'), 'workspace.created',
   now() - interval '2 days', '{}'),
  ('bbbbbbbb-0000-0000-0000-000000000000', app.uuid_v7(now() - interval '8 days'), 'workspace.created',
   now() - interval '8 days', '{}');
select is(pg_temp.as_app(null, null, $$select app.prune_events(-5, 1000000)::text || app.prune_events(0, 0)::text$$),
  '10', 'prune_events: only what is older than the 7-day floor, whatever the arguments');

select * from finish();
rollback;
