//! The organization's double-entry ledger, read-only: balances derived from the entries, and the
//! journal. Postings come from billing operations (`crate::billing`); the database keeps every
//! transaction balanced and append-only.

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::authz::authorize;
use super::extract::RequestMeta;
use super::orgs::OrgPath;
use super::pagination::{Page, PageQuery};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::tenant;
use crate::domain::{OrgId, Permission};

#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    /// `receivable`, `revenue`, `cash`, ...
    pub account: String,
    pub currency: String,
    /// The sum of the account's entries in minor units: debits positive, credits negative.
    pub balance_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JournalEntry {
    pub account: String,
    pub currency: String,
    /// Debit positive, credit negative.
    pub amount_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JournalTransaction {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub description: String,
    /// What caused it, e.g. `invoice:<id>` or `stripe:<event id>`.
    pub source: String,
    pub entries: Vec<JournalEntry>,
}

/// Balances of every account, derived from the entries (permission `billing:read`).
#[utoipa::path(
    tag = "billing",
    params(OrgPath),
    responses(
        (status = 200, description = "Balances", body = Vec<Balance>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/ledger/balances")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_ledger_balances(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<web::Json<Vec<Balance>>, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select a.code, a.currency, coalesce(sum(e.amount_minor), 0)::bigint as balance \
         from ledger_accounts a left join journal_entries e \
           on e.organization_id = a.organization_id and e.account_id = a.id \
         where a.organization_id = $1 group by a.code, a.currency order by a.currency, a.code",
        &[&path.org_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::BillingRead, "ledger.balances").await?;
    Ok(web::Json(
        rows.iter()
            .map(|r| Balance {
                account: r.get("code"),
                currency: r.get("currency"),
                balance_minor: r.get("balance"),
            })
            .collect(),
    ))
}

/// The journal, oldest first (permission `billing:read`).
#[utoipa::path(
    tag = "billing",
    params(OrgPath, PageQuery),
    responses(
        (status = 200, description = "Journal transactions with their entries", body = Page<JournalTransaction>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/ledger/journal")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_journal(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<JournalTransaction>>, ApiError> {
    let page = query.parse()?;
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select t.id, t.occurred_at, t.description, t.source, \
           coalesce(json_agg(json_build_object('account', a.code, 'currency', e.currency, 'amount_minor', e.amount_minor) \
                             order by e.line_no), '[]'::json)::text as entries \
         from (select * from journal_transactions where organization_id = $1 and id > $2 order by id limit $3) t \
         join journal_entries e on e.organization_id = t.organization_id and e.transaction_id = t.id \
         join ledger_accounts a on a.organization_id = e.organization_id and a.id = e.account_id \
         group by t.id, t.occurred_at, t.description, t.source order by t.id",
        &[&path.org_id, &page.after, &page.fetch()],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::BillingRead, "ledger.journal").await?;
    let items = rows
        .iter()
        .map(|r| {
            let entries: Vec<serde_json::Value> = serde_json::from_str(r.get("entries")).unwrap_or_default();
            JournalTransaction {
                id: r.get("id"),
                occurred_at: r.get("occurred_at"),
                description: r.get("description"),
                source: r.get("source"),
                entries: entries
                    .iter()
                    .map(|e| JournalEntry {
                        account: e["account"].as_str().unwrap_or_default().to_owned(),
                        currency: e["currency"].as_str().unwrap_or_default().to_owned(),
                        amount_minor: e["amount_minor"].as_i64().unwrap_or_default(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(web::Json(Page::from_items(items, page, |t| t.id)))
}
