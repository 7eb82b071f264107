-- Bring-your-own provider keys, encrypted by the server (AES-256-GCM) before they reach the
-- database. Envelope encryption: each organization has one data key, stored only wrapped
-- (encrypted) by a versioned master key that lives outside the database (configuration or a
-- file). The database never sees a plaintext key, a data key or a master key.
--
-- Every ciphertext is bound to where it belongs through its AEAD associated data (organization,
-- workspace, provider; organization and data key id for a wrapped key), so a ciphertext copied
-- to another row or tenant fails to decrypt: tampering fails closed.

create table public.organization_data_keys (
  organization_id    uuid not null references public.organizations (id) on delete cascade,
  id                 uuid not null,
  -- nonce (12 bytes) || AES-256-GCM ciphertext and tag of the 32-byte data key
  wrapped_key        bytea not null check (octet_length(wrapped_key) = 60),
  master_key_version integer not null check (master_key_version >= 1),
  created_at         timestamptz not null default now(),
  rewrapped_at       timestamptz,
  primary key (organization_id, id),
  -- One data key per organization.
  constraint organization_data_keys_one_per_org unique (organization_id)
);
alter table public.organization_data_keys enable row level security;
alter table public.organization_data_keys force row level security;
create index organization_data_keys_by_version on public.organization_data_keys (master_key_version);

create table public.provider_keys (
  organization_id  uuid not null,
  workspace_id     uuid not null,
  provider         text not null check (provider in ('openai', 'azure_openai', 'anthropic')),
  data_key_id      uuid not null,
  nonce            bytea not null check (octet_length(nonce) = 12),
  ciphertext       bytea not null check (octet_length(ciphertext) between 17 and 1024),
  -- The last four characters, for recognising a key (never more).
  key_suffix       text not null check (char_length(key_suffix) <= 4),
  -- Azure OpenAI's resource endpoint (not a secret).
  endpoint         text check (char_length(endpoint) <= 500),
  last_verified_at timestamptz,
  created_by       uuid references public.users (id) on delete set null,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  primary key (organization_id, workspace_id, provider),
  foreign key (organization_id, workspace_id) references public.workspaces (organization_id, id) on delete cascade,
  foreign key (organization_id, data_key_id) references public.organization_data_keys (organization_id, id)
);
alter table public.provider_keys enable row level security;
alter table public.provider_keys force row level security;
create trigger provider_keys_set_updated_at before update on public.provider_keys
  for each row execute function public.set_updated_at();
