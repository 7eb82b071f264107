-- The audit log: append-only, per organization, hash-chained. Each entry's hash covers the
-- previous entry's hash and the entry's canonical content, so a changed, deleted, reordered or
-- inserted entry breaks the chain at that point (`app.audit_verify`).
-- No foreign key to organizations: the log outlives the organization it describes.

create table public.audit_events (
  organization_id uuid not null,
  seq             bigint not null,
  id              uuid not null,
  occurred_at     timestamptz not null default now(),
  actor_type      text not null check (actor_type in ('user', 'api_key', 'platform_admin', 'system')),
  actor_id        uuid,
  action          text not null check (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
  target_type     text check (char_length(target_type) <= 100),
  target_id       text check (char_length(target_id) <= 200),
  outcome         text not null check (outcome in ('allowed', 'denied', 'failed')),
  ip              inet,
  user_agent      text check (char_length(user_agent) <= 500),
  request_id      text check (char_length(request_id) <= 100),
  details         jsonb not null default '{}',
  prev_hash       bytea not null check (octet_length(prev_hash) = 32),
  hash            bytea not null check (octet_length(hash) = 32),
  primary key (organization_id, seq)
);
create index audit_events_action_idx on public.audit_events (organization_id, action, seq);
alter table public.audit_events enable row level security;
alter table public.audit_events force row level security;

-- The canonical content of an entry: a JSON array, unambiguous whatever the values contain.
create or replace function app.audit_canonical(e public.audit_events) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_array(
    e.organization_id, e.seq, e.id,
    to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    e.actor_type, e.actor_id, e.action, e.target_type, e.target_id, e.outcome,
    host(e.ip), e.user_agent, e.request_id, e.details)::text
$$;

create or replace function app.audit_hash(prev bytea, e public.audit_events) returns bytea
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select sha256(prev || convert_to(app.audit_canonical(e), 'UTF8')) $$;

-- Chain each new entry: sequence, previous hash and hash are assigned here, never by a client.
-- SECURITY DEFINER so the chain head is found whatever the inserting principal may read; an
-- advisory lock per organization makes concurrent inserts take turns.
create or replace function app.audit_chain() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_seq bigint;
  v_hash bytea;
begin
  perform pg_advisory_xact_lock(hashtextextended('audit:' || new.organization_id::text, 0));
  select a.seq, a.hash into v_seq, v_hash
  from public.audit_events a
  where a.organization_id = new.organization_id
  order by a.seq desc
  limit 1;
  new.seq := coalesce(v_seq, 0) + 1;
  new.prev_hash := coalesce(v_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
  new.occurred_at := now();
  new.hash := app.audit_hash(new.prev_hash, new);
  return new;
end
$$;
alter function app.audit_chain() owner to tenantry_definer;
revoke all on function app.audit_chain() from public;
create trigger audit_events_chain before insert on public.audit_events
  for each row execute function app.audit_chain();

-- Append-only for every role, the owner included (a superuser can still disable triggers; that
-- is what the chain is for).
create or replace function app.audit_refuse_change() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'the audit log is append-only' using errcode = 'TY002';
end
$$;
create trigger audit_events_append_only before update or delete on public.audit_events
  for each row execute function app.audit_refuse_change();
create trigger audit_events_no_truncate before truncate on public.audit_events
  for each statement execute function app.audit_refuse_change();

-- The first entry of an organization's chain that does not verify (no row: the chain is intact).
-- Runs as the caller: through the app role it checks what the caller may read (audit:read).
create or replace function app.audit_verify(p_org uuid)
returns table (seq bigint, reason text)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select v.seq, v.reason
  from (
    select e.seq,
           case
             when e.seq <> coalesce(lag(e.seq) over w, 0) + 1 then 'sequence_gap'
             when e.prev_hash <> coalesce(lag(e.hash) over w,
                    '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
               then 'previous_hash_mismatch'
             when e.hash <> app.audit_hash(e.prev_hash, e) then 'content_hash_mismatch'
           end as reason
    from public.audit_events e
    where e.organization_id = p_org
    window w as (order by e.seq)
  ) v
  where v.reason is not null
  order by v.seq
  limit 1
$$;

insert into public.permissions (name, description) values ('audit:read', 'Read and verify the audit log');
insert into public.builtin_role_permissions (role, permission) values ('owner', 'audit:read'), ('admin', 'audit:read');
