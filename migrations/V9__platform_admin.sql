-- Platform administration. Platform admins are users listed here by the owner
-- (`tenantry admin grant`); the app role can read nothing here and act only through the
-- audited app.admin_* functions, which check the caller against this table themselves.

create table public.platform_admins (
  user_id    uuid primary key references public.users (id) on delete cascade,
  granted_at timestamptz not null default now(),
  note       text check (char_length(note) <= 200)
);
alter table public.platform_admins enable row level security;
alter table public.platform_admins force row level security;

-- A suspended organization refuses every request (app.current_principal reports it).
alter table public.organizations add column suspended_at timestamptz;
