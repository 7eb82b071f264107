-- Events (migrations/V27__events.sql): the function every event trigger runs, which decides an
-- event's type and payload from the changed row and queues its webhook deliveries
-- (migrations/V28__webhook_endpoints.sql), and retention. Apply after 10_key_rotation.sql.
--
-- app.record_event() is SECURITY DEFINER because an event must be written whoever made the
-- change (a member, an API key, the worker holding a run's claim, a payment webhook), and none of
-- them may write events directly: the app role has no INSERT on events at all. It touches only
-- the organization of the row that fired it, a row the caller's own policies just let it write,
-- and takes nothing from arguments.
set role tenantry_owner;
set check_function_bodies = off;

-- A version 7 UUID of `p_at`: 48 bits of Unix time in milliseconds, then random bits, so ids
-- sort by time (as Rust's Uuid::now_v7(), which the server uses for the rows it creates). No SET
-- clause (it uses pg_catalog only), so PostgreSQL inlines it: an event is written per change.
create or replace function app.uuid_v7(p_at timestamptz default clock_timestamp()) returns uuid
language sql volatile parallel safe
as $$
  select encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              placing substring(int8send(floor(extract(epoch from p_at) * 1000)::bigint) from 3)
              from 1 for 6),
      52, 1), 53, 1), 'hex')::uuid
$$;
-- The smallest version 7 UUID of `p_at`'s millisecond: `id >= app.uuid_v7_floor(t)` holds for
-- every id made at `t` or later, so time ranges are ranges of the primary key.
create or replace function app.uuid_v7_floor(p_at timestamptz) returns uuid
language sql stable parallel safe
as $$
  select encode(
    overlay('\x00000000000070000000000000000000'::bytea
            placing substring(int8send(floor(extract(epoch from p_at) * 1000)::bigint) from 3)
            from 1 for 6), 'hex')::uuid
$$;
revoke all on function app.uuid_v7(timestamptz), app.uuid_v7_floor(timestamptz) from public;
grant execute on function app.uuid_v7(timestamptz), app.uuid_v7_floor(timestamptz) to tenantry_app, tenantry_definer;

-- One INSERT per table, its payload built inside it: PL/pgSQL sets up every expression it
-- evaluates outside a statement again in each transaction, and an event is written in most.
-- Whether the organization has an enabled endpoint is a second statement: the probe cannot ride
-- in the event's RETURNING clause (as it did in V30), since Citus allows no subquery in an INSERT.
create or replace function app.record_event() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row record := case when tg_op = 'DELETE' then old else new end;
  v_at timestamptz := clock_timestamp();
  v_event record; -- the event written: organization_id, id, type, occurred_at
  v_table text := app.logical_table_name(tg_table_name);
begin
  if tg_op = 'DELETE' then -- nested: a condition with a subquery is a query of its own, each time
    -- Rows deleted with their organization (a cascade) write no event: it is gone already.
    if not exists (select 1 from public.organizations o where o.id = v_row.organization_id) then
      return null;
    end if;
  end if;
  -- The busiest first: each test is an expression of its own.
  if v_table = 'workflow_runs' then
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id,
                               workspace_id, data, content)
    select new.organization_id, app.uuid_v7(v_at), 'run.' || new.status, v_at, app.current_user_id(),
           app.current_api_key_id(), new.workspace_id,
           jsonb_build_object('run_id', new.id, 'workspace_id', new.workspace_id, 'workflow_id', new.workflow_id,
                              'version', new.version, 'status', new.status, 'attempts', new.attempts,
                              'error_code', new.error_code, 'failed_step', new.failed_step,
                              'output_bytes', new.output_bytes),
           -- Content only in full mode (the data-mode trigger on events refuses it otherwise), the
           -- mode read here, not through the caller's context (a worker's ends with its run).
           case when o.data_mode = 'full' and (new.output is not null or new.error_message is not null)
                then jsonb_strip_nulls(jsonb_build_object('output', new.output, 'error_message', new.error_message))
           end
    from public.organizations o where o.id = new.organization_id
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'workspaces' then
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id,
                               workspace_id, data)
    values (v_row.organization_id, app.uuid_v7(v_at),
            case when tg_op = 'INSERT' then 'workspace.created' else 'workspace.deleted' end, v_at,
            app.current_user_id(), app.current_api_key_id(), v_row.id,
            jsonb_build_object('workspace_id', v_row.id, 'name', v_row.name, 'region', v_row.region))
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'memberships' then
    if tg_op = 'UPDATE' and (old.role, old.custom_role_id) is not distinct from (new.role, new.custom_role_id) then
      return null; -- other changes (a workspace restriction) are not events
    end if;
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
    values (v_row.organization_id, app.uuid_v7(v_at),
            case when tg_op = 'INSERT' then 'member.added' when tg_op = 'DELETE' then 'member.removed'
                       else 'member.role_changed' end, v_at,
            app.current_user_id(), app.current_api_key_id(),
            jsonb_build_object('user_id', v_row.user_id, 'role', v_row.role, 'custom_role_id', v_row.custom_role_id)
            || case when tg_op = 'UPDATE'
                    then jsonb_build_object('previous_role', old.role, 'previous_custom_role_id', old.custom_role_id)
                    else '{}' end)
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'api_keys' then
    if tg_op = 'UPDATE' and not (old.revoked_at is null and new.revoked_at is not null) then
      return null;
    end if;
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
    values (new.organization_id, app.uuid_v7(v_at),
            case when tg_op = 'INSERT' then 'api_key.created' else 'api_key.revoked' end, v_at,
            app.current_user_id(), app.current_api_key_id(),
            jsonb_build_object('api_key_id', new.id, 'name', new.name, 'scopes', to_jsonb(new.scopes),
                               'expires_at', new.expires_at))
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'invitations' then
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
    values (new.organization_id, app.uuid_v7(v_at), 'invitation.accepted', v_at,
            app.current_user_id(), app.current_api_key_id(),
            jsonb_build_object('invitation_id', new.id, 'user_id', new.accepted_by, 'role', new.role,
                               'custom_role_id', new.custom_role_id))
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'workflow_versions' then
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id,
                               workspace_id, data)
    select new.organization_id, app.uuid_v7(v_at), 'workflow.version_published', v_at,
           app.current_user_id(), app.current_api_key_id(), f.workspace_id,
           jsonb_build_object('workflow_id', new.workflow_id, 'version', new.version, 'workspace_id', f.workspace_id)
    from (select (select w.workspace_id from public.workflows w
                  where w.organization_id = new.organization_id and w.id = new.workflow_id) as workspace_id) f
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'subscriptions' then
    if tg_op = 'UPDATE' and (old.plan_id, old.status) is not distinct from (new.plan_id, new.status) then
      return null;
    end if;
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
    values (new.organization_id, app.uuid_v7(v_at), 'subscription.changed', v_at,
            app.current_user_id(), app.current_api_key_id(),
            jsonb_build_object('subscription_id', new.id, 'plan_id', new.plan_id, 'status', new.status,
                               'current_period_end', new.current_period_end)
            || case when tg_op = 'UPDATE'
                    then jsonb_build_object('previous_plan_id', old.plan_id, 'previous_status', old.status)
                    else '{}' end)
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'invoices' then
    if new.status <> 'paid' or (tg_op = 'UPDATE' and old.status = 'paid') then
      return null;
    end if;
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
    values (new.organization_id, app.uuid_v7(v_at), 'invoice.paid', v_at,
            app.current_user_id(), app.current_api_key_id(),
            jsonb_build_object('invoice_id', new.id, 'number', new.number, 'currency', new.currency,
                               'total_minor', new.total_minor, 'amount_paid_minor', new.amount_paid_minor,
                               'paid_at', new.paid_at))
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'provider_keys' then
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id,
                               workspace_id, data)
    values (v_row.organization_id, app.uuid_v7(v_at), 'provider_key.changed', v_at,
            app.current_user_id(), app.current_api_key_id(), v_row.workspace_id,
            jsonb_build_object('workspace_id', v_row.workspace_id, 'provider', v_row.provider,
                               'action', case when tg_op = 'INSERT' then 'stored'
                                                    when tg_op = 'UPDATE' then 'replaced' else 'deleted' end))
    returning organization_id, id, type, occurred_at into v_event;
  elsif v_table = 'webhook_endpoints' then
    insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
    values (new.organization_id, app.uuid_v7(v_at), 'webhook_endpoint.disabled', v_at,
            app.current_user_id(), app.current_api_key_id(),
            jsonb_build_object('endpoint_id', new.id, 'url', new.url, 'reason', new.disabled_reason,
                               'consecutive_failures', new.consecutive_failures,
                               'failing_since', new.failing_since))
    returning organization_id, id, type, occurred_at into v_event;
  else
    raise exception 'app.record_event() does not know table %', v_table;
  end if;
  -- One delivery to each enabled endpoint that wants the type. Most organizations have none: a
  -- probe of the index first, cheaper than an INSERT that finds nothing.
  if exists (select 1 from public.webhook_endpoints w where w.organization_id = v_event.organization_id and w.enabled) then
    insert into public.webhook_deliveries (organization_id, id, endpoint_id, event_id, next_attempt_at)
    select v_event.organization_id, app.uuid_v7(v_at), w.id, v_event.id, v_at
    from public.webhook_endpoints w
    where w.organization_id = v_event.organization_id and w.enabled
      and (v_event.type = any (w.event_types) or '*' = any (w.event_types));
    if found and not app.fired_on_shard(tg_table_name) then
      perform pg_notify('tenantry_deliveries', ''); -- no data: a dispatcher wakes and claims
    end if;
  end if;
  return null;
end
$$;

-- Events have no foreign key to organizations (V30: its check, a lookup and a row lock on every
-- event, was an eighth of the event's cost). They go with their organization here instead: after
-- the DELETE of organizations and all its cascades (a statement trigger runs after every row
-- trigger of its statement, the cascades included). A transaction that wrote an event of the
-- organization by changing one of its rows held that row, and the cascade deleting it waited
-- for that transaction to end; this DELETE reads with a snapshot taken after, so it sees that
-- event too. Definer: the app role deletes organizations (org:delete), never events.
create or replace function app.delete_organization_events() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- On Citus this fires on each node's copy of organizations, where it may not write other
  -- nodes' shards; there events carry a cascading key instead (.dev/citus_distribute.sql).
  if app.fired_on_shard(tg_table_name) then
    return null;
  end if;
  delete from public.events e using deleted_organizations d where e.organization_id = d.id;
  return null;
end
$$;

-- Retention: deletes events older than `p_days` days, across organizations, at most `p_batch` of
-- them a call (the worker calls it until it returns fewer). The app role may call it, so what it
-- can delete has a floor of its own: nothing younger than 7 days, whatever the arguments (an
-- organization's systems may be down for days, and deliveries are retried for three).
create or replace function app.prune_events(p_days integer, p_batch integer) returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_before timestamptz := now() - make_interval(days => least(greatest(coalesce(p_days, 30), 7), 3650));
  v_batch integer := least(greatest(coalesce(p_batch, 1000), 1), 10000);
  v_org uuid;
  v_deleted integer := 0;
  v_count integer;
begin
  -- Organization by organization, as a range of the primary key (ids are their time).
  for v_org in select o.id from public.organizations o order by o.id loop
    delete from public.events e
    where e.organization_id = v_org
      and e.id in (select x.id from public.events x
                   where x.organization_id = v_org and x.id < app.uuid_v7_floor(v_before)
                   order by x.id
                   limit v_batch - v_deleted);
    get diagnostics v_count = row_count;
    v_deleted := v_deleted + v_count;
    exit when v_deleted >= v_batch;
  end loop;
  return v_deleted;
end
$$;

call app.install_definer(array['app.record_event()', 'app.delete_organization_events()'], '{}');
call app.install_definer(array['app.prune_events(integer, integer)'], '{tenantry_app}');
