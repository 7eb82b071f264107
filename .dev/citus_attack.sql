-- As the app role on the coordinator (psql -v acme=ORG -v alice=USER): a context the database did
-- not verify admits nothing on the workers. Prints one row per attempt; the drill compares them.
\set ON_ERROR_STOP 1
\pset tuples_only on
\pset format unaligned
set citus.propagate_set_commands = 'local';
-- 0. A verified context (alice, a member of Acme): the members are seen.
begin;
select set_config('app.current_user_id', :'alice', true), set_config('app.current_organization_id', :'acme', true),
       set_config('app.current_session_id', '', true), set_config('app.current_api_key_id', '', true),
       set_config('app.current_region', 'us', true), set_config('app.current_run_claim', '', true),
       set_config('app.current_webhook_token', '', true), set_config('app.current_delivery_claim', '', true) \gset ignore_
select (app.enter_context()).active \gset ignore_
select 'verified ' || count(*) from public.memberships where user_id <> :'alice';
-- Keep what an attacker on the app role could read of it.
select current_setting('app.verified_org') as v_org, current_setting('app.verified_permissions') as v_perms,
       current_setting('app.verified_workspaces') as v_ws, current_setting('app.verified_claim') as v_claim,
       current_setting('app.context_seal') as v_seal \gset
commit;
-- 1. The verified values set by hand, with a made-up seal.
begin;
set local app.current_user_id = :'alice';
set local app.current_organization_id = :'acme';
set local app.verified_org = :'acme';
set local app.verified_permissions = '{members:read}';
set local app.context_seal = 'deadbeef';
select 'forged ' || count(*) from public.memberships where user_id <> :'alice';
commit;
-- 2. The real seal of transaction 0, replayed with every setting it covered.
begin;
set local app.current_user_id = :'alice';
set local app.current_organization_id = :'acme';
set local app.current_session_id = '';
set local app.current_api_key_id = '';
set local app.current_region = 'us';
set local app.current_run_claim = '';
set local app.current_webhook_token = '';
set local app.current_delivery_claim = '';
set local app.verified_org = :'v_org';
set local app.verified_permissions = :'v_perms';
set local app.verified_workspaces = :'v_ws';
set local app.verified_claim = :'v_claim';
set local app.context_seal = :'v_seal';
select 'replayed ' || count(*) from public.memberships where user_id <> :'alice';
commit;
