-- Billing. Apply as the owner, after migrations. Plans are the platform's public catalogue.
-- Reading a subscription, invoices and the ledger needs billing:read; changing the subscription
-- (which issues and voids invoices and posts to the ledger) needs billing:manage. The ledger is
-- append-only for everyone (triggers), and every journal transaction must balance (a deferred
-- constraint trigger), whoever writes it.
begin;
set local role tenantry_owner;

revoke all on public.plans, public.subscriptions, public.invoices, public.invoice_lines,
  public.ledger_accounts, public.journal_transactions, public.journal_entries from tenantry_app;
grant select on public.plans to tenantry_app;
grant select, insert on public.subscriptions to tenantry_app;
grant update (id, plan_id, status, current_period_start, current_period_end, canceled_at, provider, provider_ref,
              provider_event_at) on public.subscriptions to tenantry_app;
grant select, insert on public.invoices, public.invoice_lines to tenantry_app;
grant update (status, amount_paid_minor, paid_at, voided_at) on public.invoices to tenantry_app;
grant select, insert on public.ledger_accounts, public.journal_transactions, public.journal_entries to tenantry_app;
grant select on public.journal_entries, public.ledger_accounts, public.organizations, public.subscriptions,
  public.plans, public.invoices to tenantry_definer;
-- The webhook inbox: the app role has nothing here; the definer functions above do the work.
revoke all on public.webhook_events from tenantry_app;
grant select, insert, update (status, detail, processing_token) on public.webhook_events to tenantry_definer;

drop policy if exists plans_select on public.plans;
create policy plans_select on public.plans for select to tenantry_app using (true);

do $policies$
declare
  v_table text;
begin
  foreach v_table in array array['subscriptions', 'invoices', 'invoice_lines', 'ledger_accounts',
                                 'journal_transactions', 'journal_entries'] loop
    execute format('drop policy if exists %I on public.%I', v_table || '_select', v_table);
    execute format($p$create policy %I on public.%I for select to tenantry_app
      using (organization_id = app.current_org_id() and app.has_permission('billing:read'))$p$,
      v_table || '_select', v_table);
    execute format('drop policy if exists %I on public.%I', v_table || '_insert', v_table);
    execute format($p$create policy %I on public.%I for insert to tenantry_app
      with check (organization_id = app.current_org_id() and app.has_permission('billing:manage'))$p$,
      v_table || '_insert', v_table);
  end loop;
  foreach v_table in array array['subscriptions', 'invoices'] loop
    execute format('drop policy if exists %I on public.%I', v_table || '_update', v_table);
    execute format($p$create policy %I on public.%I for update to tenantry_app
      using (organization_id = app.current_org_id() and app.has_permission('billing:manage'))
      with check (organization_id = app.current_org_id() and app.has_permission('billing:manage'))$p$,
      v_table || '_update', v_table);
  end loop;
end
$policies$;

commit;
