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

create or replace function app.record_event() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row record := case when tg_op = 'DELETE' then old else new end;
  v_org uuid := v_row.organization_id;
  v_type text;
  v_data jsonb;
  v_content jsonb;
  v_workspace uuid;
  v_mode text;
  v_at timestamptz := clock_timestamp();
  v_id uuid := app.uuid_v7(v_at);
begin
  -- The mode read here, not through the caller's context (which, for a worker, ends with its run).
  select o.data_mode into v_mode from public.organizations o where o.id = v_org;
  -- Rows deleted with their organization (a cascade) take their events with them.
  if not found then
    return null;
  end if;
  case tg_table_name
  when 'memberships' then
    if tg_op = 'INSERT' then
      v_type := 'member.added';
    elsif tg_op = 'DELETE' then
      v_type := 'member.removed';
    elsif (old.role, old.custom_role_id) is distinct from (new.role, new.custom_role_id) then
      v_type := 'member.role_changed';
    else
      return null; -- other changes (a workspace restriction) are not events
    end if;
    v_data := jsonb_build_object('user_id', v_row.user_id, 'role', v_row.role,
                                 'custom_role_id', v_row.custom_role_id);
    if v_type = 'member.role_changed' then
      v_data := v_data || jsonb_build_object('previous_role', old.role,
                                             'previous_custom_role_id', old.custom_role_id);
    end if;
  when 'invitations' then
    v_type := 'invitation.accepted';
    v_data := jsonb_build_object('invitation_id', new.id, 'user_id', new.accepted_by, 'role', new.role,
                                 'custom_role_id', new.custom_role_id);
  when 'workspaces' then
    v_type := case tg_op when 'INSERT' then 'workspace.created' else 'workspace.deleted' end;
    v_data := jsonb_build_object('workspace_id', v_row.id, 'name', v_row.name, 'region', v_row.region);
  when 'api_keys' then
    if tg_op = 'INSERT' then
      v_type := 'api_key.created';
    elsif old.revoked_at is null and new.revoked_at is not null then
      v_type := 'api_key.revoked';
    else
      return null;
    end if;
    v_data := jsonb_build_object('api_key_id', v_row.id, 'name', v_row.name, 'scopes', to_jsonb(v_row.scopes),
                                 'expires_at', v_row.expires_at);
  when 'workflow_versions' then
    v_type := 'workflow.version_published';
    v_data := jsonb_build_object(
      'workflow_id', new.workflow_id, 'version', new.version,
      'workspace_id', (select w.workspace_id from public.workflows w
                       where w.organization_id = new.organization_id and w.id = new.workflow_id));
  when 'workflow_runs' then
    v_type := 'run.' || new.status;
    v_data := jsonb_build_object('run_id', new.id, 'workspace_id', new.workspace_id,
                                 'workflow_id', new.workflow_id, 'version', new.version, 'status', new.status,
                                 'attempts', new.attempts, 'error_code', new.error_code,
                                 'failed_step', new.failed_step, 'output_bytes', new.output_bytes);
    -- Content, which the data-mode trigger on events refuses outside full mode.
    if v_mode = 'full' and (new.output is not null or new.error_message is not null) then
      v_content := jsonb_strip_nulls(jsonb_build_object('output', new.output, 'error_message', new.error_message));
    end if;
  when 'subscriptions' then
    if tg_op = 'UPDATE' and (old.plan_id, old.status) is not distinct from (new.plan_id, new.status) then
      return null;
    end if;
    v_type := 'subscription.changed';
    v_data := jsonb_build_object('subscription_id', new.id, 'plan_id', new.plan_id, 'status', new.status,
                                 'current_period_end', new.current_period_end);
    if tg_op = 'UPDATE' then
      v_data := v_data || jsonb_build_object('previous_plan_id', old.plan_id, 'previous_status', old.status);
    end if;
  when 'invoices' then
    if new.status <> 'paid' or (tg_op = 'UPDATE' and old.status = 'paid') then
      return null;
    end if;
    v_type := 'invoice.paid';
    v_data := jsonb_build_object('invoice_id', new.id, 'number', new.number, 'currency', new.currency,
                                 'total_minor', new.total_minor, 'amount_paid_minor', new.amount_paid_minor,
                                 'paid_at', new.paid_at);
  when 'provider_keys' then
    v_type := 'provider_key.changed';
    v_data := jsonb_build_object('workspace_id', v_row.workspace_id, 'provider', v_row.provider,
                                 'action', case tg_op when 'INSERT' then 'stored'
                                                      when 'UPDATE' then 'replaced' else 'deleted' end);
  when 'webhook_endpoints' then
    v_type := 'webhook_endpoint.disabled';
    v_data := jsonb_build_object('endpoint_id', new.id, 'url', new.url, 'reason', new.disabled_reason,
                                 'consecutive_failures', new.consecutive_failures,
                                 'failing_since', new.failing_since);
  else
    raise exception 'app.record_event() does not know table %', tg_table_name;
  end case;
  v_workspace := nullif(v_data ->> 'workspace_id', '')::uuid;
  insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, workspace_id,
                             data, content)
  values (v_org, v_id, v_type, v_at, app.current_user_id(), app.current_api_key_id(), v_workspace,
          v_data, v_content);
  -- One delivery to each enabled endpoint of this organization that wants the type. An
  -- organization without endpoints pays one probe of the primary key for it (a SELECT: starting
  -- an INSERT costs more, on every change of every organization).
  if exists (select 1 from public.webhook_endpoints w where w.organization_id = v_org and w.enabled) then
    insert into public.webhook_deliveries (organization_id, id, endpoint_id, event_id, next_attempt_at)
    select v_org, app.uuid_v7(v_at), w.id, v_id, v_at
    from public.webhook_endpoints w
    where w.organization_id = v_org and w.enabled and (v_type = any (w.event_types) or '*' = any (w.event_types));
    if found then
      perform pg_notify('tenantry_deliveries', ''); -- no data: a dispatcher wakes and claims
    end if;
  end if;
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

call app.install_definer(array['app.record_event()'], '{}');
call app.install_definer(array['app.prune_events(integer, integer)'], '{tenantry_app}');
