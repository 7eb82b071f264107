-- Schema `app`: the request context helpers the policies read. Apply as (or SET ROLE to) the owner
-- after 01_roles.sql. Idempotent. The app role may USE this schema, never create in it.
set role tenantry_owner;

create schema if not exists app authorization tenantry_owner;
revoke all on schema app from public;
grant usage on schema app to tenantry_app;
-- The definer owns the SECURITY DEFINER functions below, and an owner needs CREATE on their schema.
grant usage, create on schema app to tenantry_definer;

-- The caller's user id, set by the server transaction-locally with
--   select set_config('app.current_user_id', $1, true)
-- NULL when missing or empty: a setting that was ever used on a connection reads back as ''.
create or replace function app.current_user_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_user_id', true), '')::uuid $$;

-- The organization named by the request's URL. NOT proof of membership: policies use
-- app.current_org_id(), which returns this value only when the current user is a member.
create or replace function app.requested_org_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_organization_id', true), '')::uuid $$;

revoke all on function app.current_user_id(), app.requested_org_id() from public;
grant execute on function app.current_user_id(), app.requested_org_id()
  to tenantry_app, tenantry_definer;

-- The session a user's access token belongs to (tokens from other issuers have none).
create or replace function app.current_session_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_session_id', true), '')::uuid $$;

-- The API key a service principal authenticated with (then there is no current user).
create or replace function app.current_api_key_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_api_key_id', true), '')::uuid $$;

revoke all on function app.current_session_id(), app.current_api_key_id() from public;
grant execute on function app.current_session_id(), app.current_api_key_id()
  to tenantry_app, tenantry_definer;

-- The region this server instance serves, set by the server in every transaction. Policies give
-- access only to organizations of this region; without it, none (fail closed).
create or replace function app.current_region() returns text
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_region', true), '') $$;

revoke all on function app.current_region() from public;
grant execute on function app.current_region() to tenantry_app, tenantry_definer;

-- A worker's claim on one workflow run (app.claim_next_run() issues it), set transaction-locally
-- like the other settings. Policies admit its run's organization while the claim holds.
create or replace function app.current_run_claim() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_run_claim', true), '')::uuid $$;
revoke all on function app.current_run_claim() from public;
grant execute on function app.current_run_claim() to tenantry_app, tenantry_definer;

-- A dispatcher's claim on one webhook delivery (app.claim_next_delivery() issues it), set
-- transaction-locally like the others. Policies admit that delivery's organization, and let it
-- read that delivery, its event and its endpoint, while the claim holds.
create or replace function app.current_delivery_claim() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_delivery_claim', true), '')::uuid $$;
revoke all on function app.current_delivery_claim() from public;
grant execute on function app.current_delivery_claim() to tenantry_app, tenantry_definer;

-- A payment webhook's processing token (random, per delivery), set transaction-locally while the
-- event is applied. Policies admit the event's organization only while that event is processing.
create or replace function app.current_webhook_token() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_webhook_token', true), '')::uuid $$;
revoke all on function app.current_webhook_token() from public;
grant execute on function app.current_webhook_token() to tenantry_app, tenantry_definer;

-- Every SECURITY DEFINER function in the files that follow is installed through this: owned by
-- tenantry_definer, callable by nobody by default, and by the roles named (the app role for the
-- doors it may use; nobody for the internal helpers). Each file ends with its list, so a reviewer
-- sees in one place which doors a file opens and for whom.
drop procedure if exists app.install_definer(text, text[]);
create or replace procedure app.install_definer(p_functions text[], p_callers text[])
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_function text;
  v_role text;
begin
  foreach v_function in array p_functions loop
    execute format('alter function %s owner to tenantry_definer', v_function);
    execute format('revoke all on function %s from public', v_function);
    foreach v_role in array p_callers loop
      execute format('grant execute on function %s to %I', v_function, v_role);
    end loop;
  end loop;
end
$$;
revoke all on procedure app.install_definer(text[], text[]) from public;
