-- Payment webhooks (Stripe, Razorpay). Every verified event is recorded once, by provider and
-- event id: a redelivery finds its row and does nothing. An event is applied in the same
-- transaction that records it, under its organization's RLS context: the handler holds a random
-- token, set as app.current_webhook_token, and the policies admit the event's organization with
-- billing permissions only while that event is being processed in that transaction (the token is
-- cleared before commit, so no committed row ever carries one). Events whose organization is
-- unknown, or cannot be served here, are kept for platform admins, not dropped.
--
-- This is the platform's inbox, not tenant data: the app role has no privilege on it at all, and
-- `organization_ref` is kept after an organization is deleted, like the audit log, as the record
-- of what the provider sent.

create table public.webhook_events (
  provider          text not null check (provider in ('stripe', 'razorpay')),
  event_id          text not null check (char_length(event_id) between 1 and 255),
  event_type        text not null check (char_length(event_type) between 1 and 255),
  organization_ref  uuid,
  event_created_at  timestamptz,
  received_at       timestamptz not null default now(),
  status            text not null
                    check (status in ('processing', 'processed', 'ignored', 'unroutable')),
  detail            text check (char_length(detail) <= 500),
  payload           jsonb not null,
  processing_token  uuid,
  primary key (provider, event_id),
  constraint webhook_events_token check ((status = 'processing') = (processing_token is not null))
);
alter table public.webhook_events enable row level security;
alter table public.webhook_events force row level security;
create index webhook_events_by_token on public.webhook_events (processing_token) where processing_token is not null;
create index webhook_events_unroutable on public.webhook_events (received_at) where status = 'unroutable';
