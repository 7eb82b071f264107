-- Webhook deliveries, seen from a dispatcher (`tenantry worker`): claim the next due delivery,
-- finish it with the attempt's outcome. And the test ping. Apply after 11_events.sql.
--
-- As for runs, a claim token is a dispatcher's only authority: set as app.current_delivery_claim,
-- it admits the delivery's organization (app.current_org_id()) with no permission, and the
-- dispatch policies (policies/99_webhooks.sql, 99_events.sql, 98_provider_keys.sql) let it read
-- that one delivery, its event, its endpoint and the organization's wrapped data key. It writes
-- only through app.finish_delivery(), which takes the delivery from that verified context, never
-- from an argument.
set role tenantry_owner;
set check_function_bodies = off;

-- The delivery the dispatcher in context holds the claim on, its endpoint and its event (no row
-- for everyone else), as app.enter_context() found it delivering under that claim when the
-- transaction began. It reads the sealed context, not the deliveries table; the dispatch
-- policies use app.current_claim('delivery', ...), which reads the same.
create or replace function app.current_delivery(out delivery_id uuid, out endpoint_id uuid, out event_id uuid)
returns setof record
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query select app.verified_claim_part('delivery', 2), app.verified_claim_part('delivery', 3),
                      app.verified_claim_part('delivery', 4)
               where app.verified_claim_part('delivery', 2) is not null;
end
$$;

-- Claims a delivery of the region in context. First a claim whose lease ran out (its dispatcher
-- died mid-attempt): that attempt is logged as lost and the delivery is claimed again, or failed
-- when it has had `p_max_attempts`. Else the delivery that fell due first (`next_attempt_at` at
-- or before `p_now`), skipping endpoints with `p_max_per_endpoint` attempts in flight and
-- organizations with `p_max_per_org`: a slow or failing endpoint holds at most its share of the
-- dispatchers, and never delays anyone else's deliveries. Due deliveries are looked for in the
-- order they fell due among the first 100 of them; when all of those are held up (one endpoint's
-- backlog), each enabled endpoint's oldest due delivery is looked at instead. FOR UPDATE SKIP
-- LOCKED makes claims exclusive without blocking (app.lock_due_delivery() says how exact the
-- caps are).
-- `p_now` is the dispatcher's clock (tests inject one); leases use the database's.
create or replace function app.claim_next_delivery(
  p_worker text, p_lease_seconds integer, p_max_attempts integer, p_max_per_endpoint integer,
  p_max_per_org integer, p_now timestamptz)
returns table (organization_id uuid, delivery_id uuid, claim_token uuid, attempt integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  v_region text := app.current_region();
  v_now timestamptz := coalesce(p_now, now());
  v_lease integer := least(greatest(coalesce(p_lease_seconds, 60), 1), 3600);
  v_max_attempts integer := least(greatest(coalesce(p_max_attempts, 10), 1), 100);
  v_per_endpoint integer := least(greatest(coalesce(p_max_per_endpoint, 4), 1), 1000);
  v_per_org integer := least(greatest(coalesce(p_max_per_org, 8), 1), 10000);
  v_org uuid;
  v_id uuid;
  v_attempts integer;
  v_seen integer;
  v_candidate record;
  v_token uuid;
  v_until timestamptz;
begin
  if v_region is null then
    return;
  end if;
  loop
    v_id := null;
    -- Found first, then locked one by one: Citus refuses FOR UPDATE in a query over many shards,
    -- and allows it in one routed to a single organization's.
    for v_candidate in
      select d.organization_id, d.id
      from public.webhook_deliveries d
      where d.status = 'delivering' and d.lease_expires_at < now()
        and exists (select 1 from public.organizations o
                    where o.id = d.organization_id and o.region = v_region and o.suspended_at is null)
      order by d.lease_expires_at
      limit 10
    loop
      select d.organization_id, d.id, d.attempts into v_org, v_id, v_attempts
      from public.webhook_deliveries d
      where d.organization_id = v_candidate.organization_id and d.id = v_candidate.id
        and d.status = 'delivering' and d.lease_expires_at < now()
      for update of d skip locked;
      exit when v_id is not null;
    end loop;
    if v_id is not null then
      insert into public.webhook_delivery_attempts (organization_id, delivery_id, attempt, started_at, duration_ms, error)
      values (v_org, v_id, greatest(v_attempts, 1), now(), 0, 'lease_expired: the dispatcher stopped mid-attempt')
      on conflict do nothing;
      if v_attempts >= v_max_attempts then
        update public.webhook_deliveries d
        set status = 'failed', claim_token = null, claimed_by = null, lease_expires_at = null,
            last_error = 'lease_expired', finished_at = now()
        where d.organization_id = v_org and d.id = v_id;
        continue;
      end if;
    else
      v_seen := 0;
      for v_candidate in
        select d.organization_id, d.id, d.endpoint_id
        from public.webhook_deliveries d
        where d.status = 'pending' and d.next_attempt_at <= v_now
        order by d.next_attempt_at
        limit 100
      loop
        v_seen := v_seen + 1;
        if app.lock_due_delivery(v_candidate.organization_id, v_candidate.endpoint_id, v_candidate.id, v_region,
                                 v_per_endpoint, v_per_org, v_now) then
          v_org := v_candidate.organization_id;
          v_id := v_candidate.id;
          exit;
        end if;
      end loop;
      if v_id is null and v_seen = 100 then
        for v_candidate in
          select w.organization_id, w.id as endpoint_id, h.id
          from public.webhook_endpoints w
          cross join lateral (
            select d.id, d.next_attempt_at from public.webhook_deliveries d
            where d.organization_id = w.organization_id and d.endpoint_id = w.id
              and d.status = 'pending' and d.next_attempt_at <= v_now
            order by d.next_attempt_at
            limit 1) h
          where w.enabled
          order by h.next_attempt_at
          limit 100
        loop
          if app.lock_due_delivery(v_candidate.organization_id, v_candidate.endpoint_id, v_candidate.id, v_region,
                                   v_per_endpoint, v_per_org, v_now) then
            v_org := v_candidate.organization_id;
            v_id := v_candidate.id;
            exit;
          end if;
        end loop;
      end if;
      if v_id is null then
        return;
      end if;
    end if;
    -- The token and the lease's end are values here, not functions in the UPDATE (which Citus
    -- would have to evaluate on the shard).
    v_token := gen_random_uuid();
    v_until := now() + make_interval(secs => v_lease);
    return query
      update public.webhook_deliveries d
      set status = 'delivering', claim_token = v_token, claimed_by = left(p_worker, 200),
          lease_expires_at = v_until, attempts = d.attempts + 1
      where d.organization_id = v_org and d.id = v_id
      returning d.organization_id, d.id, d.claim_token, d.attempts;
    return;
  end loop;
end
$$;

-- Internal: locks delivery `p_delivery` for a claim if it may start now: still due, its endpoint
-- enabled, its organization in this region and not suspended, and neither at its cap of attempts
-- in flight; false (nothing locked) otherwise, or when another claim holds it. The
-- endpoint's cap is exact: a claim holds the endpoint's advisory lock until it commits, and a
-- concurrent claim skips the endpoint rather than wait (VOLATILE, so the count that follows the
-- lock sees every claim committed before it). The organization's cap may be passed by one or
-- two when claims race.
create or replace function app.lock_due_delivery(
  p_org uuid, p_endpoint uuid, p_delivery uuid, p_region text, p_max_per_endpoint integer, p_max_per_org integer,
  p_now timestamptz)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_endpoint bigint;
  v_org bigint;
begin
  if not exists (select 1 from public.webhook_endpoints w
                 join public.organizations o on o.id = w.organization_id
                 where w.organization_id = p_org and w.id = p_endpoint and w.enabled
                   and o.region = p_region and o.suspended_at is null) then
    return false;
  end if;
  if not pg_try_advisory_xact_lock(hashtext('tenantry.webhook_endpoint'),
                                   hashtext(p_org::text || '/' || p_endpoint::text)) then
    return false;
  end if;
  select count(*) filter (where x.endpoint_id = p_endpoint), count(*) into v_endpoint, v_org
  from public.webhook_deliveries x
  where x.organization_id = p_org and x.status = 'delivering';
  if v_endpoint >= p_max_per_endpoint or v_org >= p_max_per_org then
    return false;
  end if;
  perform 1 from public.webhook_deliveries d
  where d.organization_id = p_org and d.id = p_delivery and d.status = 'pending' and d.next_attempt_at <= p_now
  for update of d skip locked;
  return found;
end
$$;

-- The dispatcher in context records the attempt it made of the delivery it holds the claim on,
-- and gives up the claim: succeeded on a 2xx answer; else pending again at `p_next_attempt_at`
-- (kept within two days of `p_now`), or failed when there is none or it has had `p_max_attempts`.
-- The response body is kept (1 KiB) only for an organization in full mode. The endpoint's health
-- follows: a success resets its run of failures; a failure extends it, and an endpoint that has
-- failed `p_disable_after_failures` times in a row over at least `p_disable_after_secs` is
-- disabled (reason `failing`, an event `webhook_endpoint.disabled` says so) and its pending
-- deliveries fail. Returns the delivery's new status, or NULL when the claim is gone (the lease
-- ran out and another dispatcher took it over): then nothing is written.
create or replace function app.finish_delivery(
  p_started_at timestamptz, p_duration_ms integer, p_response_status integer, p_error text,
  p_response_body text, p_next_attempt_at timestamptz, p_now timestamptz, p_max_attempts integer,
  p_disable_after_failures integer, p_disable_after_secs integer)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := app.current_org_id();
  v_claim uuid := app.current_delivery_claim();
  v_now timestamptz := coalesce(p_now, now());
  v_started timestamptz := coalesce(p_started_at, v_now);
  v_ok boolean := coalesce(p_response_status between 200 and 299, false);
  v_delivery record;
  v_status text;
  v_mode text;
  v_failures integer;
  v_since timestamptz;
  v_error text;
  v_next timestamptz;
  v_finished timestamptz;
begin
  if v_claim is null or v_org is null then
    return null;
  end if;
  select d.id, d.endpoint_id, d.attempts into v_delivery
  from public.webhook_deliveries d
  where d.organization_id = v_org and d.claim_token = v_claim and d.status = 'delivering'
  for update;
  if not found then
    return null;
  end if;
  select o.data_mode into v_mode from public.organizations o where o.id = v_org;
  insert into public.webhook_delivery_attempts
    (organization_id, delivery_id, attempt, started_at, duration_ms, response_status, error, response_body)
  values (v_org, v_delivery.id, v_delivery.attempts, v_started, least(greatest(coalesce(p_duration_ms, 0), 0), 86400000),
          p_response_status, left(p_error, 200), case when v_mode = 'full' then left(p_response_body, 1024) end)
  on conflict do nothing;
  v_status := case when v_ok then 'succeeded'
                   when p_next_attempt_at is null
                        or v_delivery.attempts >= least(greatest(coalesce(p_max_attempts, 10), 1), 100) then 'failed'
                   else 'pending' end;
  -- Every new value is computed here: Citus refuses a non-immutable function inside CASE or
  -- COALESCE in an UPDATE of a distributed table.
  v_error := case when v_ok then null else left(coalesce(p_error, 'HTTP ' || p_response_status), 200) end;
  v_next := case when v_status = 'pending'
                 then least(greatest(p_next_attempt_at, v_now), v_now + interval '2 days') end;
  v_finished := case when v_status = 'pending' then null else now() end;
  update public.webhook_deliveries d
  set status = v_status, claim_token = null, claimed_by = null, lease_expires_at = null,
      last_attempt_at = v_started, last_response_status = p_response_status,
      last_error = v_error, next_attempt_at = coalesce(v_next, d.next_attempt_at), finished_at = v_finished
  where d.organization_id = v_org and d.id = v_delivery.id;
  if v_ok then
    update public.webhook_endpoints w set consecutive_failures = 0, failing_since = null
    where w.organization_id = v_org and w.id = v_delivery.endpoint_id
      and (w.consecutive_failures <> 0 or w.failing_since is not null);
    return v_status;
  end if;
  update public.webhook_endpoints w
  set consecutive_failures = w.consecutive_failures + 1, failing_since = coalesce(w.failing_since, v_started)
  where w.organization_id = v_org and w.id = v_delivery.endpoint_id
  returning w.consecutive_failures, w.failing_since into v_failures, v_since;
  if v_failures >= greatest(coalesce(p_disable_after_failures, 10), 1)
     and v_now - v_since >= make_interval(secs => greatest(coalesce(p_disable_after_secs, 0), 0)) then
    update public.webhook_endpoints w set enabled = false, disabled_reason = 'failing'
    where w.organization_id = v_org and w.id = v_delivery.endpoint_id and w.enabled;
    if found then
      update public.webhook_deliveries d
      set status = 'failed', last_error = 'endpoint_disabled', finished_at = now()
      where d.organization_id = v_org and d.endpoint_id = v_delivery.endpoint_id and d.status = 'pending';
    end if;
  end if;
  return v_status;
end
$$;

-- A test ping to one endpoint of the organization in context (webhooks:manage): an event
-- `webhook_endpoint.test`, delivered to that endpoint only (never fanned out), with a delivery
-- the dispatcher sends like any other. Returns the delivery's id; NULL when the organization has
-- no such enabled endpoint.
create or replace function app.ping_webhook_endpoint(p_endpoint uuid) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := app.current_org_id();
  v_at timestamptz := clock_timestamp();
  v_event uuid := app.uuid_v7(v_at);
  v_delivery uuid := app.uuid_v7(v_at);
begin
  if v_org is null or not app.has_permission('webhooks:manage') then
    raise exception 'new row violates row-level security policy for table "webhook_deliveries"' using errcode = '42501';
  end if;
  if not exists (select 1 from public.webhook_endpoints w
                 where w.organization_id = v_org and w.id = p_endpoint and w.enabled) then
    return null;
  end if;
  insert into public.events (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, data)
  values (v_org, v_event, 'webhook_endpoint.test', v_at, app.current_user_id(), app.current_api_key_id(),
          jsonb_build_object('endpoint_id', p_endpoint));
  insert into public.webhook_deliveries (organization_id, id, endpoint_id, event_id, next_attempt_at)
  values (v_org, v_delivery, p_endpoint, v_event, v_at);
  perform pg_notify('tenantry_deliveries', '');
  return v_delivery;
end
$$;

call app.install_definer(array[
    'app.current_delivery()',
    'app.claim_next_delivery(text, integer, integer, integer, integer, timestamptz)',
    'app.finish_delivery(timestamptz, integer, integer, text, text, timestamptz, timestamptz, integer, integer, integer)',
    'app.ping_webhook_endpoint(uuid)'
], '{tenantry_app}');
call app.install_definer(array['app.lock_due_delivery(uuid, uuid, uuid, text, integer, integer, timestamptz)'], '{}');
