-- The dispatcher (sql/12_deliveries.sql): its two per-endpoint scans, and the test ping's event
-- type. Expand-only: a server of the previous release runs against it unchanged.

-- Each endpoint's oldest due delivery (when one endpoint's backlog fills the head of the queue).
create index webhook_deliveries_due_by_endpoint on public.webhook_deliveries (organization_id, endpoint_id, next_attempt_at)
  where status = 'pending';
-- Attempts in flight, per organization and endpoint (the caps).
create index webhook_deliveries_in_flight on public.webhook_deliveries (organization_id, endpoint_id)
  where status = 'delivering';

insert into public.event_types (type, description) values
  ('webhook_endpoint.test', 'A test ping sent to one endpoint on request (never to any other endpoint)');
