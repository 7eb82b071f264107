-- Users: global rows, visible to themselves and to the members of the organization in context.
-- Created only through app.provision_user() (sql/03_definer_functions.sql). Apply as the owner.
begin;
set local role tenantry_owner;

revoke all on public.users from tenantry_app;
grant select on public.users to tenantry_app;
grant update (display_name) on public.users to tenantry_app;
grant select, insert, update, delete on public.users to tenantry_definer;

drop policy if exists users_select on public.users;
create policy users_select on public.users for select to tenantry_app
  using (
    id = app.current_user_id()
    or id in (select m.user_id from public.memberships m
              where m.organization_id = app.current_org_id())
  );

drop policy if exists users_update on public.users;
create policy users_update on public.users for update to tenantry_app
  using (id = app.current_user_id())
  with check (id = app.current_user_id());

commit;
