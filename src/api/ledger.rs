//! The organization's double-entry ledger, read-only: balances derived from the entries, and the
//! journal. Postings come from billing operations (`crate::billing`); the database keeps every
//! transaction balanced and append-only.

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::authz::authorize;
use super::extract::RequestMeta;
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::tenant;
use crate::domain::{OrgId, Permission};
use crate::{keyset, sorts};

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

/// The journal's statements: `$1` organization, `$2` limit, `$3`/`$4` the time range, then the
/// cursor's key. The primary key `(organization_id, id)` orders them (UUIDv7 ids: the order they
/// were posted); each transaction's entries come with it, by `journal_entries`' primary key.
macro_rules! journal {
    () => {
        "select t.id, t.occurred_at, t.description, t.source, \
           (select coalesce(json_agg(json_build_object('account', a.code, 'currency', e.currency, \
                                                       'amount_minor', e.amount_minor) order by e.line_no), '[]'::json) \
            from journal_entries e \
            join ledger_accounts a on a.organization_id = e.organization_id and a.id = e.account_id \
            where e.organization_id = t.organization_id and e.transaction_id = t.id)::text as entries \
         from journal_transactions t where t.organization_id = $1 \
           and ($3::timestamptz is null or t.occurred_at >= $3) and ($4::timestamptz is null or t.occurred_at < $4)"
    };
}
macro_rules! journal_plain {
    () => {
        "select t.id, t.occurred_at, t.description, t.source, \
           (select coalesce(json_agg(json_build_object('account', a.code, 'currency', e.currency, \
                                                       'amount_minor', e.amount_minor) order by e.line_no), '[]'::json) \
            from journal_entries e \
            join ledger_accounts a on a.organization_id = e.organization_id and a.id = e.account_id \
            where e.organization_id = t.organization_id and e.transaction_id = t.id)::text as entries \
         from journal_transactions t where t.organization_id = $1 \
           and $3::timestamptz is null and $4::timestamptz is null"
    };
}
static BY_CREATED: Keyset =
    keyset!(1, Id, asc, journal, journal_plain, "", "t.id", "$5", "t.id", "t.id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, journal, journal_plain, "", "t.id", "$5", "t.id", "t.id desc", "$2");
const COUNT_JOURNAL: &str = "select count(*) from (select 1 from journal_transactions t where t.organization_id = $1 \
     and ($3::timestamptz is null or t.occurred_at >= $3) and ($4::timestamptz is null or t.occurred_at < $4) \
     limit $2) c";

sorts! {
    /// The order of the journal.
    JournalSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JournalFilter {
    /// Only transactions at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only transactions before this time.
    pub until: Option<DateTime<Utc>>,
    /// `created_at` (default, oldest first) or `-created_at`.
    #[param(inline)]
    pub sort: Option<JournalSort>,
}

/// The journal (permission `billing:read`), filtered by time.
#[utoipa::path(
    tag = "billing",
    params(OrgPath, JournalFilter, PageQuery),
    responses(
        (status = 200, description = "Journal transactions with their entries", body = Page<JournalTransaction>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
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
    filter: web::Query<JournalFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<JournalTransaction>>, ApiError> {
    let page = query
        .parse(filter.sort.unwrap_or_default().keyset())?
        .filtered(filter.since.is_some() || filter.until.is_some());
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![org.as_uuid(), page.fetch(), &filter.since, &filter.until]),
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
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [org.as_uuid(), &COUNT_FETCH, &filter.since, &filter.until];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_JOURNAL, &count_params).await?;
    Ok(web::Json(page.page(items, total, |t| Key::Id(t.id))))
}
