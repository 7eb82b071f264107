-- The audit chain's hash for a row of any table shaped like audit_events: on a Citus worker the
-- chain trigger fires on a shard, whose rows are of the shard's own type (audit_events_102533),
-- which the functions taking public.audit_events (V4) do not accept. These overloads have the same
-- bodies, so they hash exactly alike; a call with a public.audit_events row still resolves to V4's
-- (an exact match wins over a polymorphic one), so nothing changes on PostgreSQL. Having no table
-- in their signatures, Citus creates them on the workers too.
create or replace function app.audit_canonical(e anyelement) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_array(
    e.organization_id, e.seq, e.id,
    to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    e.actor_type, e.actor_id, e.action, e.target_type, e.target_id, e.outcome,
    host(e.ip), e.user_agent, e.request_id, e.details)::text
$$;

create or replace function app.audit_hash(prev bytea, e anyelement) returns bytea
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select sha256(prev || convert_to(app.audit_canonical(e), 'UTF8')) $$;
