-- Billing: the payment-webhook inbox, usage counts and the plan's request rate. Apply after
-- 08_workflows.sql.
--
-- A payment webhook has no user. The server verifies the provider's signature, then
-- app.begin_webhook_event() decides which organization the event may touch from what the event
-- names that only that organization and the provider know: one of its invoices (our random id,
-- sent to the provider with the invoice) or its subscription's reference at the provider. An id
-- in the event's metadata never chooses the organization; it can only disagree (then nothing is
-- applied). The returned token, set as app.current_webhook_token, admits that organization with
-- billing permissions while the event is processing in that transaction.
set role tenantry_owner;
set check_function_bodies = off;

drop function if exists app.begin_webhook_event(text, text, text, uuid, timestamptz, jsonb, uuid);
drop function if exists app.record_usage(uuid[], date[], uuid[], bigint[]);
drop function if exists app.organization_requests_per_minute(uuid);

-- Record a verified event as processing under `p_token` and say whose it is:
--   ('fresh', org)       apply it in org, then app.finish_webhook_event();
--   ('duplicate', NULL)  recorded before (a redelivery or replay): nothing to do;
--   ('unroutable', NULL) it names nothing of any organization, or disagrees with its metadata:
--                        kept once for platform admins.
create or replace function app.begin_webhook_event(
  p_provider text, p_event_id text, p_type text, p_created timestamptz, p_payload jsonb, p_token uuid,
  p_invoice uuid, p_provider_ref text, p_metadata_org uuid)
returns table (outcome text, organization_id uuid)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid;
  v_detail text;
begin
  if p_invoice is not null then
    select i.organization_id into v_org from public.invoices i where i.id = p_invoice;
    v_detail := 'the invoice it pays is not ours';
  elsif p_provider_ref is not null then
    -- Exactly one organization's subscription at this provider has this reference.
    select min(s.organization_id::text)::uuid into v_org
    from public.subscriptions s
    where s.provider = p_provider and s.provider_ref = p_provider_ref
    having count(*) = 1;
    v_detail := 'no organization''s subscription has this provider reference';
  else
    v_detail := 'it names no invoice or subscription of ours';
  end if;
  if v_org is not null and p_metadata_org is not null and p_metadata_org <> v_org then
    v_org := null;
    v_detail := 'its metadata names another organization than the one owning what it names';
  end if;
  if v_org is null then
    insert into public.webhook_events (provider, event_id, event_type, organization_ref, event_created_at, status,
                                       detail, payload)
    values (p_provider, p_event_id, left(p_type, 255), p_metadata_org, p_created, 'unroutable', v_detail, p_payload)
    on conflict (provider, event_id) do nothing;
    return query select case when found then 'unroutable' else 'duplicate' end, null::uuid;
    return;
  end if;
  insert into public.webhook_events (provider, event_id, event_type, organization_ref, event_created_at, status,
                                     payload, processing_token)
  values (p_provider, p_event_id, left(p_type, 255), v_org, p_created, 'processing', p_payload, p_token)
  on conflict (provider, event_id) do nothing;
  if found then
    return query select 'fresh'::text, v_org;
  else
    return query select 'duplicate'::text, null::uuid;
  end if;
end
$$;

-- The event's outcome, its token cleared, in the transaction that applied it.
create or replace function app.finish_webhook_event(p_token uuid, p_status text, p_detail text) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_status not in ('processed', 'ignored') then
    raise exception 'a webhook event finishes processed or ignored' using errcode = '22023';
  end if;
  update public.webhook_events e set status = p_status, detail = left(p_detail, 500), processing_token = null
  where e.processing_token = p_token and e.status = 'processing';
  return found;
end
$$;

-- An event whose organization cannot be served here (another region, suspended, gone): kept,
-- once, for platform admins. It admits nobody anywhere (no token).
create or replace function app.record_unroutable_webhook_event(
  p_provider text, p_event_id text, p_type text, p_org uuid, p_created timestamptz, p_payload jsonb, p_detail text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.webhook_events (provider, event_id, event_type, organization_ref, event_created_at, status,
                                     detail, payload)
  values (p_provider, p_event_id, left(p_type, 255), p_org, p_created, 'unroutable', left(p_detail, 500), p_payload)
  on conflict (provider, event_id) do nothing;
  return found;
end
$$;

-- Usage: a server adds the requests it counted since its last flush, for many organizations in
-- one statement. Counts only ever grow, and only where they can be true: organizations of the
-- region in context, today or yesterday (UTC, for a flush across midnight), members (the nil
-- key) or the organization's own API keys, at most 10 million a row per flush, 10,000 rows a call.
create or replace function app.record_usage(p_orgs uuid[], p_days date[], p_keys uuid[], p_counts bigint[])
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if cardinality(p_orgs) > 10000 then
    raise exception 'too many usage rows in one call' using errcode = '22023';
  end if;
  -- No subquery refers to the rows of unnest() (Citus plans no correlated subquery over a set
  -- returning function; each of these it can run on its own first).
  with t as materialized (
    select o, d, k, least(c, 10000000) as c from unnest(p_orgs, p_days, p_keys, p_counts) as t(o, d, k, c)
    where c > 0 and d between (now() at time zone 'UTC')::date - 1 and (now() at time zone 'UTC')::date
  )
  insert into public.usage_counters as u (organization_id, day, api_key_id, requests)
  select t.o, t.d, t.k, t.c from t
  where t.o in (select x.id from public.organizations x where x.region = app.current_region())
    and (t.k = '00000000-0000-0000-0000-000000000000'
         or (t.o, t.k) in (select a.organization_id, a.id from public.api_keys a
                           where a.id in (select t.k from t)))
  on conflict (organization_id, day, api_key_id) do update set requests = u.requests + excluded.requests;
end
$$;

-- The request rate the plan of the organization in context allows (`limits.requests_per_minute`).
-- A plan's rate needs a subscription in good standing (active, trialing, or past_due while the
-- provider retries); an incomplete subscription (first invoice unpaid), an unpaid or a canceled
-- one gets the free plan's.
create or replace function app.organization_requests_per_minute() returns integer
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.current_org_id() is null then
    return null;
  end if;
  return coalesce(
    (select (p.limits ->> 'requests_per_minute')::integer
     from public.subscriptions s join public.plans p on p.id = s.plan_id
     where s.organization_id = app.current_org_id() and s.status in ('active', 'trialing', 'past_due')),
    (select (p.limits ->> 'requests_per_minute')::integer from public.plans p where p.id = 'free'));
end
$$;

call app.install_definer(array[
    'app.begin_webhook_event(text, text, text, timestamptz, jsonb, uuid, uuid, text, uuid)',
    'app.finish_webhook_event(uuid, text, text)',
    'app.record_unroutable_webhook_event(text, text, text, uuid, timestamptz, jsonb, text)',
    'app.record_usage(uuid[], date[], uuid[], bigint[])',
    'app.organization_requests_per_minute()'
], '{tenantry_app}');
