-- On a Citus worker a trigger fires on a shard, whose name carries the shard id
-- (`memberships_102008`). Triggers that branch on the table they fired on ask
-- app.logical_table_name(tg_table_name), as a branch on the bare name would take the wrong arm
-- there (the organization_id of a table that has none); the NOTIFY triggers stay quiet on a shard
-- (app.fired_on_shard(): a NOTIFY cannot be part of the two-phase commit the coordinator runs, and
-- no server listens on a worker). Same bodies otherwise (V14, V16, V17, V18).

create or replace function app.workflow_runs_notify() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.fired_on_shard(tg_table_name) then
    perform pg_notify('tenantry_runs', '');
  end if;
  return null;
end
$$;

create or replace function app.standing_notify() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_table text := app.logical_table_name(tg_table_name);
begin
  if app.fired_on_shard(tg_table_name) then
    return null;
  end if;
  if v_table in ('sessions', 'users', 'builtin_role_permissions') then
    perform pg_notify('tenantry_standing', '*');
  elsif v_table = 'organizations' then
    perform pg_notify('tenantry_standing', coalesce(new.id, old.id)::text);
  else
    perform pg_notify('tenantry_standing', coalesce(new.organization_id, old.organization_id)::text);
  end if;
  return null;
end
$$;

create or replace function app.flags_notify() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.fired_on_shard(tg_table_name) then
    return null;
  end if;
  if app.logical_table_name(tg_table_name) = 'feature_flags' then
    perform pg_notify('tenantry_flags', '*');
  else
    perform pg_notify('tenantry_flags', coalesce(new.organization_id, old.organization_id)::text);
  end if;
  return null;
end
$$;

create or replace function app.journal_balanced() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := new.organization_id;
  -- Fired by either table; each names the transaction differently.
  v_txn uuid := (to_jsonb(new) ->> case when app.logical_table_name(tg_table_name) = 'journal_transactions'
                                        then 'id' else 'transaction_id' end)::uuid;
begin
  if (select count(*) from public.journal_entries e where e.organization_id = v_org and e.transaction_id = v_txn) < 2 then
    raise exception 'journal transaction % has fewer than two entries', v_txn using errcode = 'TY042';
  end if;
  if exists (select 1 from public.journal_entries e
             where e.organization_id = v_org and e.transaction_id = v_txn
             group by e.currency having sum(e.amount_minor) <> 0) then
    raise exception 'journal transaction % does not balance', v_txn using errcode = 'TY042';
  end if;
  if exists (select 1 from public.journal_entries e join public.ledger_accounts a
               on a.organization_id = e.organization_id and a.id = e.account_id
             where e.organization_id = v_org and e.transaction_id = v_txn and a.currency <> e.currency) then
    raise exception 'journal transaction % posts to an account of another currency', v_txn using errcode = 'TY042';
  end if;
  return null;
end
$$;
