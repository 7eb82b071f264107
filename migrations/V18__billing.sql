-- Billing: the platform's plans, one subscription per organization, invoices with line items,
-- and a double-entry ledger. Money is integer minor units (cents, paise) with an ISO 4217
-- currency, never floating point.

create table public.plans (
  id          text primary key check (id ~ '^[a-z][a-z0-9_-]{0,31}$'),
  name        text not null check (char_length(name) between 1 and 100),
  price_minor bigint not null check (price_minor >= 0),
  currency    text not null check (currency ~ '^[A-Z]{3}$'),
  interval    text not null check (interval in ('month', 'year')),
  -- Limits the product enforces: seats, requests_per_minute, requests_per_day, ...
  limits      jsonb not null default '{}' check (jsonb_typeof(limits) = 'object'),
  active      boolean not null default true,
  created_at  timestamptz not null default now()
);
insert into public.plans (id, name, price_minor, currency, interval, limits) values
  ('free',       'Free',       0,      'USD', 'month', '{"seats": 3, "requests_per_minute": 600, "requests_per_day": 10000}'),
  ('pro',        'Pro',        4900,   'USD', 'month', '{"seats": 25, "requests_per_minute": 6000, "requests_per_day": 500000}'),
  ('enterprise', 'Enterprise', 250000, 'USD', 'month', '{"seats": 1000, "requests_per_minute": 60000, "requests_per_day": 10000000}');
-- Forced after seeding: the owner is subject to it from here on, like everyone.
alter table public.plans enable row level security;
alter table public.plans force row level security;

create table public.subscriptions (
  organization_id      uuid primary key references public.organizations (id) on delete cascade,
  id                   uuid not null,
  plan_id              text not null references public.plans (id),
  status               text not null
                       check (status in ('incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'canceled')),
  current_period_start timestamptz not null,
  current_period_end   timestamptz not null,
  canceled_at          timestamptz,
  -- Where payments come from, and the provider's id for this subscription.
  provider             text check (provider in ('stripe', 'razorpay')),
  provider_ref         text check (char_length(provider_ref) <= 200),
  -- The creation time of the newest provider event applied: older events never move the state back.
  provider_event_at    timestamptz,
  created_at           timestamptz not null default now(),
  updated_at           timestamptz not null default now(),
  constraint subscriptions_id_key unique (organization_id, id),
  constraint subscriptions_period check (current_period_end > current_period_start)
);
create trigger subscriptions_set_updated_at before update on public.subscriptions
  for each row execute function public.set_updated_at();
alter table public.subscriptions enable row level security;
alter table public.subscriptions force row level security;

-- The status machine, defined once: the trigger below enforces it, and payment webhooks ask it
-- before applying a provider's status. `canceled` is final for a subscription; subscribing again
-- starts a new one (a new id) through the same row.
create or replace function app.subscription_transition_allowed(p_from text, p_to text) returns boolean
language sql immutable parallel safe
as $$
  select p_from = p_to
      or (p_from = 'incomplete' and p_to in ('active', 'trialing', 'canceled'))
      or (p_from = 'trialing' and p_to in ('active', 'past_due', 'canceled'))
      or (p_from = 'active' and p_to in ('past_due', 'canceled'))
      or (p_from = 'past_due' and p_to in ('active', 'unpaid', 'canceled'))
      or (p_from = 'unpaid' and p_to in ('active', 'canceled'))
$$;
revoke all on function app.subscription_transition_allowed(text, text) from public;
grant execute on function app.subscription_transition_allowed(text, text) to tenantry_app, tenantry_definer;

create or replace function app.subscriptions_transition() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.id = old.id and not app.subscription_transition_allowed(old.status, new.status) then
    raise exception 'illegal subscription transition % -> %', old.status, new.status using errcode = 'TY040';
  end if;
  if new.id <> old.id and old.status <> 'canceled' then
    raise exception 'only a canceled subscription is replaced' using errcode = 'TY040';
  end if;
  if new.status = 'canceled' and old.status <> 'canceled' then
    new.canceled_at := coalesce(new.canceled_at, now());
  end if;
  return new;
end
$$;
create trigger subscriptions_transition before update on public.subscriptions
  for each row execute function app.subscriptions_transition();

create table public.invoices (
  organization_id   uuid not null references public.organizations (id) on delete cascade,
  id                uuid not null,
  number            integer not null check (number >= 1),
  subscription_id   uuid,
  status            text not null default 'open' check (status in ('open', 'paid', 'void', 'uncollectible')),
  currency          text not null check (currency ~ '^[A-Z]{3}$'),
  total_minor       bigint not null check (total_minor >= 0),
  amount_paid_minor bigint not null default 0 check (amount_paid_minor >= 0),
  period_start      timestamptz not null,
  period_end        timestamptz not null,
  issued_at         timestamptz not null default now(),
  paid_at           timestamptz,
  voided_at         timestamptz,
  primary key (organization_id, id),
  constraint invoices_number_key unique (organization_id, number),
  constraint invoices_paid check ((status = 'paid') = (paid_at is not null)),
  constraint invoices_not_overpaid check (amount_paid_minor <= total_minor)
);
alter table public.invoices enable row level security;
alter table public.invoices force row level security;

create table public.invoice_lines (
  organization_id    uuid not null,
  invoice_id         uuid not null,
  line_no            integer not null check (line_no >= 1),
  description        text not null check (char_length(description) between 1 and 500),
  quantity           integer not null check (quantity >= 1),
  unit_amount_minor  bigint not null check (unit_amount_minor >= 0),
  amount_minor       bigint not null,
  primary key (organization_id, invoice_id, line_no),
  foreign key (organization_id, invoice_id) references public.invoices (organization_id, id) on delete cascade,
  constraint invoice_lines_amount check (amount_minor = quantity * unit_amount_minor)
);
alter table public.invoice_lines enable row level security;
alter table public.invoice_lines force row level security;

-- Invoice states: open -> paid | void | uncollectible; uncollectible -> paid | void. Totals and
-- lines never change once issued; paid invoices are final.
create or replace function app.invoices_transition() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if (new.organization_id, new.id, new.number, new.subscription_id, new.currency, new.total_minor,
      new.period_start, new.period_end, new.issued_at)
     is distinct from
     (old.organization_id, old.id, old.number, old.subscription_id, old.currency, old.total_minor,
      old.period_start, old.period_end, old.issued_at) then
    raise exception 'an issued invoice cannot change' using errcode = 'TY041';
  end if;
  if new.status is distinct from old.status and not (
       (old.status = 'open' and new.status in ('paid', 'void', 'uncollectible'))
    or (old.status = 'uncollectible' and new.status in ('paid', 'void'))
  ) then
    raise exception 'illegal invoice transition % -> %', old.status, new.status using errcode = 'TY041';
  end if;
  if old.status in ('paid', 'void') then
    raise exception 'a % invoice is final', old.status using errcode = 'TY041';
  end if;
  return new;
end
$$;
create trigger invoices_transition before update on public.invoices
  for each row execute function app.invoices_transition();

-- The ledger. Accounts per organization and currency; journal transactions of two or more entries
-- summing to zero per currency (debits positive, credits negative). Entries are never changed or
-- deleted (except with their organization); a correction is a new, reversing transaction.
create table public.ledger_accounts (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  code            text not null check (code in ('receivable', 'revenue', 'cash', 'refunds', 'fees')),
  currency        text not null check (currency ~ '^[A-Z]{3}$'),
  created_at      timestamptz not null default now(),
  primary key (organization_id, id),
  constraint ledger_accounts_code_key unique (organization_id, code, currency)
);
alter table public.ledger_accounts enable row level security;
alter table public.ledger_accounts force row level security;

create table public.journal_transactions (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  occurred_at     timestamptz not null default now(),
  description     text not null check (char_length(description) between 1 and 500),
  -- What caused it, e.g. invoice:<id> or stripe:<event id>; unique, so nothing posts twice.
  source          text not null check (char_length(source) between 1 and 300),
  primary key (organization_id, id),
  constraint journal_transactions_source_key unique (organization_id, source)
);
alter table public.journal_transactions enable row level security;
alter table public.journal_transactions force row level security;

create table public.journal_entries (
  organization_id uuid not null,
  transaction_id  uuid not null,
  line_no         integer not null check (line_no >= 1),
  account_id      uuid not null,
  amount_minor    bigint not null check (amount_minor <> 0),
  currency        text not null check (currency ~ '^[A-Z]{3}$'),
  primary key (organization_id, transaction_id, line_no),
  foreign key (organization_id, transaction_id) references public.journal_transactions (organization_id, id) on delete cascade,
  foreign key (organization_id, account_id) references public.ledger_accounts (organization_id, id) on delete cascade
);
alter table public.journal_entries enable row level security;
alter table public.journal_entries force row level security;
create index journal_entries_by_account on public.journal_entries (organization_id, account_id);

-- Balanced, checked at commit (the entries of a transaction arrive one by one). SECURITY DEFINER so
-- the sums are over every entry, whatever the writer may read.
create or replace function app.journal_balanced() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := new.organization_id;
  -- Fired by either table; each names the transaction differently.
  v_txn uuid := (to_jsonb(new) ->> case when tg_table_name = 'journal_transactions' then 'id' else 'transaction_id' end)::uuid;
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
alter function app.journal_balanced() owner to tenantry_definer;
revoke all on function app.journal_balanced() from public;
create constraint trigger journal_entries_balanced after insert on public.journal_entries
  deferrable initially deferred for each row execute function app.journal_balanced();
create constraint trigger journal_transactions_balanced after insert on public.journal_transactions
  deferrable initially deferred for each row execute function app.journal_balanced();

-- Append-only: only the cascade of an organization's deletion removes ledger rows.
create or replace function app.ledger_append_only() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'DELETE' and not exists (select 1 from public.organizations o where o.id = old.organization_id) then
    return old;
  end if;
  raise exception 'the ledger is append-only: post a reversing transaction instead' using errcode = 'TY043';
end
$$;
alter function app.ledger_append_only() owner to tenantry_definer;
revoke all on function app.ledger_append_only() from public;
create trigger journal_transactions_append_only before update or delete on public.journal_transactions
  for each row execute function app.ledger_append_only();
create trigger journal_entries_append_only before update or delete on public.journal_entries
  for each row execute function app.ledger_append_only();
create trigger journal_transactions_no_truncate before truncate on public.journal_transactions
  for each statement execute function app.ledger_append_only();
create trigger journal_entries_no_truncate before truncate on public.journal_entries
  for each statement execute function app.ledger_append_only();
