-- Outbound webhooks: endpoints, deliveries and their attempts. Apply as the owner, after
-- migrations. Everything here needs webhooks:manage in the organization in context (and is never
-- open to a worker's run claim), except what a dispatcher reads while it holds a delivery's claim:
-- that delivery and its endpoint (the `_dispatch` policies; it writes through
-- app.finish_delivery() only). Deliveries are created only by app.record_event() (the definer),
-- with the event they carry: the app role cannot insert one, so no principal can make an endpoint
-- receive anything but its own organization's events.
begin;
set local role tenantry_owner;

revoke all on public.webhook_endpoints, public.webhook_deliveries, public.webhook_delivery_attempts from tenantry_app;
grant select, insert, delete on public.webhook_endpoints to tenantry_app;
grant update (url, description, event_types, enabled, disabled_reason, data_key_id, secret_nonce, secret_ciphertext,
              previous_secret_nonce, previous_secret_ciphertext, previous_secret_expires_at, consecutive_failures,
              failing_since)
  on public.webhook_endpoints to tenantry_app;
grant select (organization_id, id, endpoint_id, event_id, status, attempts, next_attempt_at, last_attempt_at,
              last_response_status, last_error, created_at, finished_at)
  on public.webhook_deliveries to tenantry_app;
grant update (status, next_attempt_at, finished_at) on public.webhook_deliveries to tenantry_app;
grant select on public.webhook_delivery_attempts to tenantry_app;
grant select, update (enabled, disabled_reason, consecutive_failures, failing_since)
  on public.webhook_endpoints to tenantry_definer;
grant select, insert, update on public.webhook_deliveries to tenantry_definer;
grant select, insert on public.webhook_delivery_attempts to tenantry_definer;

drop policy if exists webhook_endpoints_all on public.webhook_endpoints;
create policy webhook_endpoints_all on public.webhook_endpoints for all to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('webhooks:manage')
         and app.without_run_claim())
  with check (organization_id = app.current_org_id() and app.has_permission('webhooks:manage')
              and app.without_run_claim());

drop policy if exists webhook_endpoints_dispatch on public.webhook_endpoints;
create policy webhook_endpoints_dispatch on public.webhook_endpoints for select to tenantry_app
  using (organization_id = app.current_org_id()
         and id = app.current_claim('delivery', 'endpoint'));

drop policy if exists webhook_deliveries_dispatch on public.webhook_deliveries;
create policy webhook_deliveries_dispatch on public.webhook_deliveries for select to tenantry_app
  using (organization_id = app.current_org_id()
         and id = app.current_claim('delivery', 'id'));

drop policy if exists webhook_deliveries_select on public.webhook_deliveries;
create policy webhook_deliveries_select on public.webhook_deliveries for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('webhooks:manage')
         and app.without_run_claim());

-- A person may only send a delivery again: any state but `delivering` back to `pending`. That the
-- endpoint is enabled is the API's check (it holds the endpoint's row locked while it retries),
-- not the policy's: it is the endpoint's row, and a pending delivery to a disabled endpoint is
-- never claimed anyway (app.claim_next_delivery takes enabled endpoints only).
drop policy if exists webhook_deliveries_retry on public.webhook_deliveries;
create policy webhook_deliveries_retry on public.webhook_deliveries for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('webhooks:manage')
         and app.without_run_claim() and status <> 'delivering')
  with check (organization_id = app.current_org_id() and status = 'pending' and finished_at is null);

drop policy if exists webhook_delivery_attempts_select on public.webhook_delivery_attempts;
create policy webhook_delivery_attempts_select on public.webhook_delivery_attempts for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('webhooks:manage')
         and app.without_run_claim());

commit;
