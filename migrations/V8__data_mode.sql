-- Data mode, enforced by the database: a table holding content attaches
--   create trigger ... before insert or update on <table> for each row
--     execute function app.enforce_data_mode('<content column>', ...);
-- and no content is ever stored for an organization in `metadata_only` mode, whatever the
-- handler does (SQLSTATE TY020). Workflow runs (a later issue) are its first user.

-- The organization's mode, whatever the caller may read (the trigger runs for any principal).
create or replace function app.organization_data_mode(p_org uuid) returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select o.data_mode from public.organizations o where o.id = p_org $$;
alter function app.organization_data_mode(uuid) owner to tenantry_definer;
revoke all on function app.organization_data_mode(uuid) from public;

create or replace function app.enforce_data_mode() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row jsonb := to_jsonb(new);
  v_column text;
begin
  if coalesce(app.organization_data_mode(new.organization_id), 'metadata_only') = 'full' then
    return new;
  end if;
  foreach v_column in array tg_argv loop
    if v_row -> v_column is not null and v_row -> v_column <> 'null'::jsonb then
      raise exception 'content column %.% cannot be stored in metadata_only mode', tg_table_name, v_column
        using errcode = 'TY020', column = v_column;
    end if;
  end loop;
  return new;
end
$$;
