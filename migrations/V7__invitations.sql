-- Invitations: a single-use token (only its SHA-256 stored) that makes a signed-in user a
-- member with the invited role. Accepted through app.accept_invitation().

create table public.invitations (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  email           text not null check (char_length(email) between 3 and 320),
  role            text not null check (role in ('owner', 'admin', 'editor', 'approver', 'viewer', 'auditor',
                                                'billing_admin', 'integration_admin', 'custom')),
  custom_role_id  uuid,
  token_hash      bytea not null check (octet_length(token_hash) = 32),
  invited_by      uuid references public.users (id) on delete set null,
  created_at      timestamptz not null default now(),
  expires_at      timestamptz not null,
  accepted_at     timestamptz,
  accepted_by     uuid references public.users (id) on delete set null,
  revoked_at      timestamptz,
  primary key (organization_id, id),
  foreign key (organization_id, custom_role_id) references public.roles (organization_id, id) on delete cascade,
  check ((role = 'custom') = (custom_role_id is not null))
);
-- A presented token names only its id (not unique on purpose, as for API keys).
create index invitations_id_idx on public.invitations (id);
create index invitations_email_idx on public.invitations (organization_id, email);
alter table public.invitations enable row level security;
alter table public.invitations force row level security;
