//! Plans, the organization's subscription and its invoices. Changing the subscription issues and
//! voids invoices and posts to the ledger (`crate::billing`) in the same transaction; a payment
//! arrives later through a signed webhook. Amounts are integer minor units with a currency.

use actix_web::{HttpRequest, HttpResponse, delete, get, put, web};
use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, tagged};
use super::csv;
use super::extract::{ApiJson, RequestMeta};
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::billing::{self, NewInvoice};
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, OrgId, Permission};
use crate::{keyset, sorts};

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanResponse {
    pub id: String,
    pub name: String,
    /// In minor units (cents).
    pub price_minor: i64,
    pub currency: String,
    /// `month` or `year`.
    pub interval: String,
    /// Seats, requests_per_minute, requests_per_day, ...
    #[schema(value_type = Object)]
    pub limits: Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"plan_id": "pro", "provider": "stripe", "provider_ref": "sub_1PXyZ2"}))]
pub struct PutSubscriptionRequest {
    /// `free`, `pro` or `enterprise`.
    pub plan_id: String,
    /// Where payments will come from: `stripe` or `razorpay`.
    pub provider: Option<String>,
    /// The subscription's id at the provider (`sub_...`), if already known. The provider's
    /// subscription events are applied only when they name it; without it, the first payment of
    /// one of this subscription's invoices links it.
    pub provider_ref: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionResponse {
    pub id: Uuid,
    pub plan_id: String,
    /// `incomplete` (awaiting the first payment), `trialing`, `active`, `past_due`, `unpaid` or
    /// `canceled`.
    pub status: String,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub provider: Option<String>,
    /// The invoice this change issued, if any.
    pub invoice_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLine {
    pub line_no: i32,
    pub description: String,
    pub quantity: i32,
    pub unit_amount_minor: i64,
    pub amount_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceResponse {
    pub id: Uuid,
    /// 1, 2, 3, ... per organization.
    pub number: i32,
    pub subscription_id: Option<Uuid>,
    /// `open`, `paid`, `void` or `uncollectible`.
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub amount_paid_minor: i64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    /// The line items (in the single-invoice view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<InvoiceLine>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InvoicePath {
    /// Organization id.
    pub org_id: Uuid,
    /// Invoice id.
    pub invoice_id: Uuid,
}

fn subscription_from_row(row: &Row, invoice_id: Option<Uuid>) -> SubscriptionResponse {
    SubscriptionResponse {
        id: row.get("id"),
        plan_id: row.get("plan_id"),
        status: row.get("status"),
        current_period_start: row.get("current_period_start"),
        current_period_end: row.get("current_period_end"),
        canceled_at: row.get("canceled_at"),
        provider: row.get("provider"),
        invoice_id,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

fn invoice_from_row(row: &Row) -> InvoiceResponse {
    InvoiceResponse {
        id: row.get("id"),
        number: row.get("number"),
        subscription_id: row.get("subscription_id"),
        status: row.get("status"),
        currency: row.get("currency"),
        total_minor: row.get("total_minor"),
        amount_paid_minor: row.get("amount_paid_minor"),
        period_start: row.get("period_start"),
        period_end: row.get("period_end"),
        issued_at: row.get("issued_at"),
        paid_at: row.get("paid_at"),
        voided_at: row.get("voided_at"),
        lines: None,
    }
}

/// The plans on offer (public).
#[utoipa::path(
    tag = "billing",
    responses((status = 200, description = "Active plans, cheapest first", body = Vec<PlanResponse>)),
    security(())
)]
#[get("/plans")]
pub async fn list_plans(state: web::Data<AppState>) -> Result<web::Json<Vec<PlanResponse>>, ApiError> {
    let mut tx = TenantTx::begin_user(&state.db, crate::db::Actor::default()).await?;
    let rows = tx
        .query(
            "select id, name, price_minor, currency, interval, limits from plans where active order by price_minor, id",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(web::Json(
        rows.iter()
            .map(|r| PlanResponse {
                id: r.get("id"),
                name: r.get("name"),
                price_minor: r.get("price_minor"),
                currency: r.get("currency"),
                interval: r.get("interval"),
                limits: r.get("limits"),
            })
            .collect(),
    ))
}

/// The organization's subscription (permission `billing:read`).
#[utoipa::path(
    tag = "billing",
    params(OrgPath),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "No subscription yet (`no_subscription`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/subscription")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_subscription(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select id, plan_id, status, current_period_start, current_period_end, canceled_at, provider, created_at, \
         updated_at, row_version from subscriptions where organization_id = $1",
        &[&path.org_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::BillingRead, "subscription.get").await?;
    let row = rows.first().ok_or_else(no_subscription)?;
    Ok(preconditions.respond(row.get("row_version"), &subscription_from_row(row, None)))
}

fn no_subscription() -> ApiError {
    ApiError::Gone { code: "no_subscription", detail: "The organization has no subscription yet.".into() }
}

fn period_end(start: DateTime<Utc>, interval: &str) -> Result<DateTime<Utc>, ApiError> {
    let months = if interval == "year" { 12 } else { 1 };
    start
        .checked_add_months(Months::new(months))
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("period overflow")))
}

/// Subscribe to a plan, or change plan (permission `billing:manage`; audited). A paid plan issues
/// an invoice for the period and the subscription waits for its payment (`incomplete`) unless it is
/// already active; open invoices of a replaced plan are voided. The ledger records both.
#[utoipa::path(
    tag = "billing",
    params(OrgPath),
    request_body = PutSubscriptionRequest,
    responses(
        (status = 200, description = "Changed, or already on this plan", body = SubscriptionResponse),
        (status = 201, description = "Subscribed", body = SubscriptionResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown plan or provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[put("/orgs/{org_id}/subscription")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn put_subscription(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<PutSubscriptionRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    if body.provider.as_deref().is_some_and(|p| !["stripe", "razorpay"].contains(&p)) {
        return Err(FieldError::new("provider", "must be stripe or razorpay").into());
    }
    if let Some(reference) = &body.provider_ref
        && (body.provider.is_none()
            || !(1..=200).contains(&reference.len())
            || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        return Err(FieldError::new("provider_ref", "1-200 letters, digits, _ or -, with a provider").into());
    }
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::BillingManage, "subscription.change")
        .await?;
    billing::lock(&mut tx, org).await?;
    let plan = tx
        .query_opt(
            "select id, name, price_minor, currency, interval from plans where id = $1 and active",
            &[&body.plan_id],
        )
        .await?
        .ok_or_else(|| {
            ApiError::from(FieldError::new("plan_id", "is not a plan on offer (see GET /plans)"))
        })?;
    let (price, currency, interval, plan_name): (i64, String, String, String) =
        (plan.get("price_minor"), plan.get("currency"), plan.get("interval"), plan.get("name"));
    let current = tx
        .query_opt(
            "select id, plan_id, status, row_version from subscriptions where organization_id = $1 for update",
            &[org.as_uuid()],
        )
        .await?;
    preconditions.check_upsert(current.as_ref().map(|r| r.get("row_version")))?;
    let now: DateTime<Utc> = tx.query_found("select now()", &[]).await?.get(0);
    let end = period_end(now, &interval)?;
    let (id, created, replaced_status): (Uuid, bool, Option<String>) = match &current {
        Some(row) if row.get::<_, String>("status") != "canceled" => {
            if row.get::<_, String>("plan_id") == body.plan_id {
                // Already on this plan: nothing to do (PUT is idempotent).
                let row = tx
                    .query_found(
                        "select id, plan_id, status, current_period_start, current_period_end, canceled_at, provider, \
                         created_at, updated_at, row_version from subscriptions where organization_id = $1",
                        &[org.as_uuid()],
                    )
                    .await?;
                tx.commit().await?;
                return Ok(tagged(
                    HttpResponse::Ok(),
                    row.get("row_version"),
                    &subscription_from_row(&row, None),
                ));
            }
            let id: Uuid = row.get("id");
            billing::void_open_invoices(&mut tx, org, id).await?;
            (id, false, Some(row.get::<_, String>("status")))
        }
        _ => (Uuid::now_v7(), true, None),
    };
    // A new subscription: free is active at once, paid waits for its first payment. A plan change
    // keeps the status (the new plan's invoice is due), except that a free plan owes nothing.
    let status = match replaced_status.as_deref() {
        _ if price == 0 => "active",
        None => "incomplete",
        Some(kept) => kept,
    };
    let row = match &current {
        None => {
            tx.query_found(
                "insert into subscriptions (organization_id, id, plan_id, status, current_period_start, \
                   current_period_end, provider, provider_ref) values ($1, $2, $3, $4, $5, $6, $7, $8) \
                 returning id, plan_id, status, current_period_start, current_period_end, canceled_at, provider, \
                   created_at, updated_at, row_version",
                &[org.as_uuid(), &id, &body.plan_id, &status, &now, &end, &body.provider, &body.provider_ref],
            )
            .await?
        }
        Some(_) => {
            tx.query_found(
                "update subscriptions set id = $2, plan_id = $3, status = $4, current_period_start = $5, \
                   current_period_end = $6, provider = coalesce($7, provider), canceled_at = null, \
                   provider_ref = coalesce($8, case when id = $2 then provider_ref end), \
                   provider_event_at = case when id = $2 then provider_event_at end \
                 where organization_id = $1 \
                 returning id, plan_id, status, current_period_start, current_period_end, canceled_at, provider, \
                   created_at, updated_at, row_version",
                &[org.as_uuid(), &id, &body.plan_id, &status, &now, &end, &body.provider, &body.provider_ref],
            )
            .await?
        }
    };
    let invoice_id = if price > 0 {
        let description =
            format!("{plan_name} plan, {} to {}", now.format("%Y-%m-%d"), end.format("%Y-%m-%d"));
        let invoice = NewInvoice {
            subscription_id: id,
            currency: &currency,
            description: &description,
            amount_minor: price,
            period_start: now,
            period_end: end,
        };
        Some(billing::issue_invoice(&mut tx, org, &invoice).await?)
    } else {
        None
    };
    let entry = AuditEntry::allowed("subscription.change", "subscription", id, &meta).with_details(
        serde_json::json!({
            "plan_id": body.plan_id, "status": status, "invoice_id": invoice_id,
        }),
    );
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    let response = subscription_from_row(&row, invoice_id);
    let status = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(tagged(status, row.get("row_version"), &response))
}

/// Cancel the subscription now; its open invoices are voided (permission `billing:manage`;
/// audited).
#[utoipa::path(
    tag = "billing",
    params(OrgPath),
    responses(
        (status = 200, description = "Canceled", body = SubscriptionResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already canceled", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "No subscription", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/subscription")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_subscription(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::BillingManage, "subscription.cancel")
        .await?;
    billing::lock(&mut tx, org).await?;
    let current = tx
        .query_opt(
            "select id, status, row_version from subscriptions where organization_id = $1 for update",
            &[org.as_uuid()],
        )
        .await?
        .ok_or_else(no_subscription)?;
    preconditions.check_write(Some(current.get("row_version")))?;
    if current.get::<_, String>("status") == "canceled" {
        return Err(ApiError::Conflict {
            code: "subscription_state",
            detail: "The subscription is already canceled.".into(),
        });
    }
    let id: Uuid = current.get("id");
    billing::void_open_invoices(&mut tx, org, id).await?;
    let row = tx
        .query_found(
            "update subscriptions set status = 'canceled' where organization_id = $1 \
             returning id, plan_id, status, current_period_start, current_period_end, canceled_at, provider, \
               created_at, updated_at, row_version",
            &[org.as_uuid()],
        )
        .await?;
    record(&mut tx, &principal, AuditEntry::allowed("subscription.cancel", "subscription", id, &meta))
        .await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &subscription_from_row(&row, None)))
}

/// The invoice list's statements: `$1` organization, `$2` limit, `$3` status, `$4`/`$5` the
/// issue-date range, then the cursor's key. Indexes: the primary key `(organization_id, id)`
/// (UUIDv7: issue order), `invoices_by_status` with a status, `invoices_by_issued` for a range.
macro_rules! invoices {
    () => {
        "select id, number, subscription_id, status, currency, total_minor, amount_paid_minor, period_start, \
         period_end, issued_at, paid_at, voided_at from invoices where organization_id = $1 \
           and ($3::text is null or status = $3) \
           and ($4::timestamptz is null or issued_at >= $4) and ($5::timestamptz is null or issued_at < $5)"
    };
}
macro_rules! invoices_plain {
    () => {
        "select id, number, subscription_id, status, currency, total_minor, amount_paid_minor, period_start, \
         period_end, issued_at, paid_at, voided_at from invoices where organization_id = $1 \
           and $3::text is null and $4::timestamptz is null and $5::timestamptz is null"
    };
}
static BY_CREATED: Keyset =
    keyset!(1, Id, asc, invoices, invoices_plain, "", "id", "$6", "id", "id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, invoices, invoices_plain, "", "id", "$6", "id", "id desc", "$2");
const COUNT_INVOICES: &str = concat!("select count(*) from (", invoices!(), " limit $2) c");

/// The columns of the invoice list as CSV.
const INVOICE_CSV_COLUMNS: &[&str] = &[
    "id",
    "number",
    "subscription_id",
    "status",
    "currency",
    "total_minor",
    "amount_paid_minor",
    "period_start",
    "period_end",
    "issued_at",
    "paid_at",
    "voided_at",
];

sorts! {
    /// The order of an invoice list.
    InvoiceSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    Paid,
    Void,
    Uncollectible,
}

impl InvoiceStatus {
    fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
            InvoiceStatus::Uncollectible => "uncollectible",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceFilter {
    /// Only invoices in this status.
    #[param(inline)]
    pub status: Option<InvoiceStatus>,
    /// Only invoices issued at or after this time.
    pub issued_since: Option<DateTime<Utc>>,
    /// Only invoices issued before this time.
    pub issued_until: Option<DateTime<Utc>>,
    /// `created_at` (default, oldest first) or `-created_at`.
    #[param(inline)]
    pub sort: Option<InvoiceSort>,
}

/// The organization's invoices (permission `billing:read`), filtered by status and issue date.
#[utoipa::path(
    tag = "billing",
    params(OrgPath, InvoiceFilter, PageQuery),
    responses(
        (status = 200, description = "Invoices: JSON, or CSV with `Accept: text/csv` (up to 10,000 rows a page, the next and previous pages in `Link`)",
            content(
                (Page<InvoiceResponse> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/invoices")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_invoices(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    filter: web::Query<InvoiceFilter>,
    query: web::Query<PageQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let csv = csv::wants_csv(&req);
    let keyset = filter.sort.unwrap_or_default().keyset();
    let page = if csv { query.parse_csv(keyset) } else { query.parse(keyset) }?
        .filtered(filter.status.is_some() || filter.issued_since.is_some() || filter.issued_until.is_some());
    let status = filter.status.map(InvoiceStatus::as_str);
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![
                org.as_uuid(),
                page.fetch(),
                &status,
                &filter.issued_since,
                &filter.issued_until,
            ]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::BillingRead, "invoice.list").await?;
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [org.as_uuid(), &COUNT_FETCH, &status, &filter.issued_since, &filter.issued_until];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_INVOICES, &count_params).await?;
    let page = page.page(rows.iter().map(invoice_from_row).collect(), total, |i| Key::Id(i.id));
    if csv {
        let body = csv::render(INVOICE_CSV_COLUMNS, &page.items);
        return Ok(csv::response(&req, body, page.next_cursor.as_deref(), page.prev_cursor.as_deref()));
    }
    Ok(HttpResponse::Ok().json(page))
}

/// One invoice with its line items (permission `billing:read`).
#[utoipa::path(
    tag = "billing",
    params(InvoicePath),
    responses(
        (status = 200, description = "The invoice", body = InvoiceResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invoice", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/invoices/{invoice_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_invoice(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<InvoicePath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        // The invoice's columns on every row, with one row per line.
        "select i.id, i.number, i.subscription_id, i.status, i.currency, i.total_minor, i.amount_paid_minor, \
           i.period_start, i.period_end, i.issued_at, i.paid_at, i.voided_at, i.row_version, \
           l.line_no, l.description, l.quantity, l.unit_amount_minor, l.amount_minor \
         from invoices i left join invoice_lines l on l.organization_id = i.organization_id and l.invoice_id = i.id \
         where i.organization_id = $1 and i.id = $2 order by l.line_no",
        &[&path.org_id, &path.invoice_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::BillingRead, "invoice.get").await?;
    let first = rows.first().ok_or(ApiError::NotFound)?;
    let mut invoice = invoice_from_row(first);
    invoice.lines = Some(
        rows.iter()
            .filter(|r| r.get::<_, Option<i32>>("line_no").is_some())
            .map(|r| InvoiceLine {
                line_no: r.get("line_no"),
                description: r.get("description"),
                quantity: r.get("quantity"),
                unit_amount_minor: r.get("unit_amount_minor"),
                amount_minor: r.get("amount_minor"),
            })
            .collect(),
    );
    Ok(preconditions.respond(first.get("row_version"), &invoice))
}
