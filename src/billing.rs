//! Billing operations shared by the API and the payment webhooks, each inside the caller's
//! `TenantTx` (so under the organization's RLS context, in the caller's transaction): issuing and
//! voiding invoices, recording payments, and posting the journal transactions they imply.
//!
//! Posting, in integer minor units (debits positive, credits negative):
//! - invoice issued:  receivable +total, revenue -total
//! - invoice voided:  revenue +total, receivable -total
//! - payment:         cash +amount, receivable -amount
//!
//! The database refuses an unbalanced transaction at commit and any change to a posted one; the
//! `source` of each transaction is unique per organization, so nothing posts twice.

use uuid::Uuid;

use crate::db::{DbError, TenantTx};
use crate::domain::OrgId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    Receivable,
    Revenue,
    Cash,
}

impl Account {
    pub fn code(self) -> &'static str {
        match self {
            Account::Receivable => "receivable",
            Account::Revenue => "revenue",
            Account::Cash => "cash",
        }
    }
}

/// The organization's account for `code` in `currency`, opened on first use.
async fn account(tx: &mut TenantTx, org: OrgId, account: Account, currency: &str) -> Result<Uuid, DbError> {
    tx.execute(
        "insert into ledger_accounts (organization_id, id, code, currency) values ($1, $2, $3, $4) \
         on conflict (organization_id, code, currency) do nothing",
        &[org.as_uuid(), &Uuid::now_v7(), &account.code(), &currency],
    )
    .await?;
    Ok(tx
        .query_found(
            "select id from ledger_accounts where organization_id = $1 and code = $2 and currency = $3",
            &[org.as_uuid(), &account.code(), &currency],
        )
        .await?
        .get(0))
}

/// Posts one balanced journal transaction. `false` when `source` was already posted (nothing is
/// written then).
pub async fn post(
    tx: &mut TenantTx,
    org: OrgId,
    source: &str,
    description: &str,
    currency: &str,
    entries: &[(Account, i64)],
) -> Result<bool, DbError> {
    let id = Uuid::now_v7();
    let inserted = tx
        .query_opt(
            "insert into journal_transactions (organization_id, id, description, source) values ($1, $2, $3, $4) \
             on conflict (organization_id, source) do nothing returning id",
            &[org.as_uuid(), &id, &description, &source],
        )
        .await?;
    if inserted.is_none() {
        return Ok(false);
    }
    for (line, (acct, amount)) in entries.iter().enumerate() {
        let account_id = account(tx, org, *acct, currency).await?;
        let line_no = i32::try_from(line + 1).unwrap_or(i32::MAX);
        tx.execute(
            "insert into journal_entries (organization_id, transaction_id, line_no, account_id, amount_minor, currency) \
             values ($1, $2, $3, $4, $5, $6)",
            &[org.as_uuid(), &id, &line_no, &account_id, amount, &currency],
        )
        .await?;
    }
    Ok(true)
}

/// Serializes billing changes of one organization (invoice numbers, subscription moves) for the
/// rest of the transaction.
pub async fn lock(tx: &mut TenantTx, org: OrgId) -> Result<(), DbError> {
    tx.execute(
        "select pg_advisory_xact_lock(hashtextextended('tenantry.billing:' || $1::uuid::text, 0))",
        &[org.as_uuid()],
    )
    .await?;
    Ok(())
}

pub struct NewInvoice<'a> {
    pub subscription_id: Uuid,
    pub currency: &'a str,
    pub description: &'a str,
    pub amount_minor: i64,
    pub period_start: chrono::DateTime<chrono::Utc>,
    pub period_end: chrono::DateTime<chrono::Utc>,
}

/// Issues an invoice with one line and posts it (receivable / revenue). Call under `lock`.
pub async fn issue_invoice(tx: &mut TenantTx, org: OrgId, invoice: &NewInvoice<'_>) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let number: i32 = tx
        .query_found(
            "select coalesce(max(number), 0) + 1 from invoices where organization_id = $1",
            &[org.as_uuid()],
        )
        .await?
        .get(0);
    tx.execute(
        "insert into invoices (organization_id, id, number, subscription_id, currency, total_minor, period_start, period_end) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            org.as_uuid(),
            &id,
            &number,
            &invoice.subscription_id,
            &invoice.currency,
            &invoice.amount_minor,
            &invoice.period_start,
            &invoice.period_end,
        ],
    )
    .await?;
    tx.execute(
        "insert into invoice_lines (organization_id, invoice_id, line_no, description, quantity, unit_amount_minor, amount_minor) \
         values ($1, $2, 1, $3, 1, $4, $4)",
        &[org.as_uuid(), &id, &invoice.description, &invoice.amount_minor],
    )
    .await?;
    post(
        tx,
        org,
        &format!("invoice:{id}"),
        &format!("Invoice {number} issued"),
        invoice.currency,
        &[(Account::Receivable, invoice.amount_minor), (Account::Revenue, -invoice.amount_minor)],
    )
    .await?;
    Ok(id)
}

/// Voids every open, unpaid invoice of a subscription and reverses its posting.
pub async fn void_open_invoices(
    tx: &mut TenantTx,
    org: OrgId,
    subscription_id: Uuid,
) -> Result<u64, DbError> {
    let rows = tx
        .query(
            "update invoices set status = 'void', voided_at = now() \
             where organization_id = $1 and subscription_id = $2 and status = 'open' and amount_paid_minor = 0 \
             returning id, number, currency, total_minor",
            &[org.as_uuid(), &subscription_id],
        )
        .await?;
    for row in &rows {
        let (id, number, currency, total): (Uuid, i32, String, i64) =
            (row.get("id"), row.get("number"), row.get("currency"), row.get("total_minor"));
        post(
            tx,
            org,
            &format!("invoice:{id}:void"),
            &format!("Invoice {number} voided"),
            &currency,
            &[(Account::Revenue, total), (Account::Receivable, -total)],
        )
        .await?;
    }
    Ok(rows.len() as u64)
}

/// What a payment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Posted; the invoice is now fully paid (and the subscription active) or partly paid.
    Applied { invoice_paid: bool },
    /// This payment (`source`) was already posted.
    Duplicate,
    /// No such invoice in this organization, or a different currency: nothing posted.
    NoInvoice,
}

/// Records a payment of `amount_minor` against an invoice: posts cash / receivable, marks the
/// invoice paid when covered and activates its subscription, all in the caller's transaction.
pub async fn record_payment(
    tx: &mut TenantTx,
    org: OrgId,
    invoice_id: Uuid,
    amount_minor: i64,
    currency: &str,
    source: &str,
) -> Result<PaymentOutcome, DbError> {
    let Some(invoice) = tx
        .query_opt(
            "select number, subscription_id, total_minor, amount_paid_minor, status from invoices \
             where organization_id = $1 and id = $2 and currency = $3 for update",
            &[org.as_uuid(), &invoice_id, &currency],
        )
        .await?
    else {
        return Ok(PaymentOutcome::NoInvoice);
    };
    let number: i32 = invoice.get("number");
    let description = format!("Payment for invoice {number}");
    let amount =
        amount_minor.min(invoice.get::<_, i64>("total_minor") - invoice.get::<_, i64>("amount_paid_minor"));
    if amount <= 0 {
        // Already covered: post nothing, but remember the payment so it is not applied later.
        return Ok(PaymentOutcome::Duplicate);
    }
    if !post(
        tx,
        org,
        source,
        &description,
        currency,
        &[(Account::Cash, amount), (Account::Receivable, -amount)],
    )
    .await?
    {
        return Ok(PaymentOutcome::Duplicate);
    }
    let paid: bool = tx
        .query_found(
            "update invoices set amount_paid_minor = amount_paid_minor + $3, \
               status = case when amount_paid_minor + $3 >= total_minor then 'paid' else status end, \
               paid_at = case when amount_paid_minor + $3 >= total_minor then now() else paid_at end \
             where organization_id = $1 and id = $2 returning status = 'paid'",
            &[org.as_uuid(), &invoice_id, &amount],
        )
        .await?
        .get(0);
    if paid {
        tx.execute(
            "update subscriptions set status = 'active' \
             where organization_id = $1 and id = $2 and status in ('incomplete', 'trialing', 'past_due', 'unpaid')",
            &[org.as_uuid(), &invoice.get::<_, Option<Uuid>>("subscription_id")],
        )
        .await?;
    }
    Ok(PaymentOutcome::Applied { invoice_paid: paid })
}
