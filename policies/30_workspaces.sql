-- Workspaces. Apply as the owner, after migrations.
begin;
set local role tenantry_owner;

revoke all on public.workspaces from tenantry_app;
grant select, insert, delete on public.workspaces to tenantry_app;
grant update (name) on public.workspaces to tenantry_app;

drop policy if exists workspaces_select on public.workspaces;
create policy workspaces_select on public.workspaces for select to tenantry_app
  using (organization_id = app.current_org_id() and app.workspace_visible(id));

drop policy if exists workspaces_insert on public.workspaces;
create policy workspaces_insert on public.workspaces for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('workspaces:write'));

drop policy if exists workspaces_update on public.workspaces;
create policy workspaces_update on public.workspaces for update to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('workspaces:write') and app.workspace_allowed(id))
  with check (organization_id = app.current_org_id()
              and app.has_permission('workspaces:write'));

drop policy if exists workspaces_delete on public.workspaces;
create policy workspaces_delete on public.workspaces for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('workspaces:delete') and app.workspace_allowed(id));

-- Workspace restrictions of members: visible to the organization, managed with members:manage,
-- for members the principal could grant its role to (no one above it). A restricted principal
-- lists and unlists only its own workspaces; lifting a restriction is an update of
-- memberships.restricted, which it cannot make (policies/20_organizations.sql).
revoke all on public.member_workspaces from tenantry_app;
grant select, insert, delete on public.member_workspaces to tenantry_app;
grant select on public.member_workspaces to tenantry_definer;

drop policy if exists member_workspaces_select on public.member_workspaces;
create policy member_workspaces_select on public.member_workspaces for select to tenantry_app
  using (organization_id = app.current_org_id());

-- The member must be one the principal could grant its role to (app.can_grant_role): that is the
-- member's row, so the trigger below checks it (a policy reads only the sealed context).
drop policy if exists member_workspaces_insert on public.member_workspaces;
create policy member_workspaces_insert on public.member_workspaces for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('members:manage')
              and app.workspace_allowed(workspace_id));

drop policy if exists member_workspaces_delete on public.member_workspaces;
create policy member_workspaces_delete on public.member_workspaces for delete to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('members:manage')
         and app.workspace_allowed(workspace_id));

create or replace function app.member_workspaces_check_member() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := case when tg_op = 'DELETE' then old.organization_id else new.organization_id end;
  v_user uuid := case when tg_op = 'DELETE' then old.user_id else new.user_id end;
begin
  if app.row_checks_apply(tg_relid)
     and not exists (select 1 from public.memberships m
                      where m.organization_id = v_org and m.user_id = v_user
                        and app.can_grant_role(m.role, m.custom_role_id)) then
    raise exception 'row-level security check: this member''s role is beyond the principal''s'
      using errcode = '42501';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$;
drop trigger if exists member_workspaces_check_member on public.member_workspaces;
create trigger member_workspaces_check_member before insert or delete on public.member_workspaces
  for each row execute function app.member_workspaces_check_member();

commit;
