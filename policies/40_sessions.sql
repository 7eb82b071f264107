-- Sessions and refresh tokens. Apply as the owner, after migrations.
-- Sessions are created, rotated and ended for timeouts or token reuse only through the definer
-- functions in sql/03; the app role may list its user's sessions and end them (logout, revoke).
-- Refresh tokens are never visible to the app role.
begin;
set local role tenantry_owner;

revoke all on public.sessions, public.refresh_tokens from tenantry_app;
grant select on public.sessions to tenantry_app;
grant update (revoked_at, revoked_reason) on public.sessions to tenantry_app;
grant select, insert, update on public.sessions, public.refresh_tokens to tenantry_definer;

drop policy if exists sessions_select on public.sessions;
create policy sessions_select on public.sessions for select to tenantry_app
  using (user_id = app.current_user_id());

drop policy if exists sessions_update on public.sessions;
create policy sessions_update on public.sessions for update to tenantry_app
  using (user_id = app.current_user_id())
  with check (user_id = app.current_user_id());

commit;

-- Login attempts: only the definer functions touch them (no app-role access at all).
begin;
set local role tenantry_owner;
revoke all on public.login_attempts from tenantry_app;
grant select, insert, update, delete on public.login_attempts to tenantry_definer;
commit;
