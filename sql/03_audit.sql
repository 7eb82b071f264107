-- The doors through RLS (SECURITY DEFINER functions), one file per area, 03 to 10. Each function
-- is owned by tenantry_definer (NOLOGIN), has a fixed search_path and does one narrow thing. The
-- rule every one of them follows: what it may touch comes from the verified context the server set
-- transaction-locally (user, session, API key, region, run claim, webhook token) or from a secret
-- only its legitimate caller holds (a refresh token, a sign-in completion), never from its
-- arguments alone. policies/tests/09_definer_functions.sql calls each with hostile arguments.
-- Apply as (or SET ROLE to) the owner after 02_context.sql. Idempotent. The tables they read are
-- created by migrations/, so bodies are not checked here (as pg_dump does).
--
-- This file: the one way a definer function appends to an audit chain. The chain trigger
-- (migrations/V4) assigns the sequence and hashes. Internal: the app role cannot call it (its own
-- entries go through the audit_events policy, which confines them to the organization in context).
set role tenantry_owner;
set check_function_bodies = off;

create or replace function app.audit_append(
  p_org uuid, p_actor_type text, p_actor_id uuid, p_action text, p_target_type text, p_target_id text,
  p_outcome text, p_details jsonb, p_ip inet default null, p_user_agent text default null,
  p_request_id text default null)
returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, ip, user_agent, request_id, details, prev_hash, hash)
  values (p_org, gen_random_uuid(), p_actor_type, p_actor_id, p_action, p_target_type, p_target_id, p_outcome,
          p_ip, left(p_user_agent, 500), left(p_request_id, 100), coalesce(p_details, '{}'), '\x', '\x')
$$;

-- The platform chain: the log of the nil organization id, which no tenant can have (a check on
-- organizations) and no tenant context can name.
create or replace function app.platform_org() returns uuid
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$ select '00000000-0000-0000-0000-000000000000'::uuid $$;
revoke all on function app.platform_org() from public;
grant execute on function app.platform_org() to tenantry_definer;

call app.install_definer(array['app.audit_append(uuid, text, uuid, text, text, text, text, jsonb, inet, text, text)'], '{}');

-- The audit watchdog (the worker's periodic check, `tenantry audit verify --metrics-file`):
-- every chain in the database verified, with how many there are, how many are broken, and the
-- first broken ones' organizations (at most 20, for the operator's log). Counts and ids only,
-- never an entry's content. A definer function because the worker has no organization context.
-- One organization at a time (on Citus, each a query routed to that organization's shard; a
-- lateral call per row of a distributed table would nest distributed queries).
create or replace function app.verify_audit_chains()
returns table (chains bigint, broken bigint, broken_organizations uuid[])
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid;
begin
  chains := 0;
  broken := 0;
  for v_org in select distinct e.organization_id from public.audit_events e order by 1 loop
    chains := chains + 1;
    if exists (select 1 from app.audit_verify(v_org)) then
      broken := broken + 1;
      if coalesce(cardinality(broken_organizations), 0) < 20 then
        broken_organizations := coalesce(broken_organizations, '{}') || v_org;
      end if;
    end if;
  end loop;
  return next;
end
$$;

call app.install_definer(array['app.verify_audit_chains()'], '{tenantry_app}');
