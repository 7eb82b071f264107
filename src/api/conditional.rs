//! Conditional requests (RFC 9110 §13). A mutable resource's strong `ETag` is its row's
//! `row_version` (a per-row counter the database bumps on every change, migration V24), never a
//! hash of the JSON. Writes take `If-Match` into the statement that changes the row
//! (`row_version = any($n)`), so the check and the write are one atomic step: a stale tag is a
//! 412 and changes nothing. GETs answer 304 to an `If-None-Match` naming the current version.

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Serialize;

use crate::api::ApiError;
use crate::db::{Params, TenantTx};

/// More entity tags than this in one header is not a client but an attack on the parser.
const MAX_TAGS: usize = 32;

/// The strong entity tag of a row version: `"42"`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// `*`: any current representation.
    Any,
    /// The listed tags; `weak` ones never satisfy If-Match (strong comparison).
    Tags(Vec<Tag>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    weak: bool,
    /// The tag as one of ours, if it is one (`"<i64>"`); any other tag matches nothing.
    version: Option<i64>,
}

/// The request's `If-Match` and `If-None-Match`, parsed (a malformed one is a 400: ignoring a
/// precondition the client meant would let its write through unchecked).
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    if_match: Option<Condition>,
    if_none_match: Option<Condition>,
    safe_method: bool,
}

impl Preconditions {
    pub fn from_headers(method: &Method, headers: &HeaderMap) -> Result<Preconditions, ApiError> {
        Ok(Preconditions {
            if_match: parse_header(headers, header::IF_MATCH)?,
            if_none_match: parse_header(headers, header::IF_NONE_MATCH)?,
            safe_method: method == Method::GET || method == Method::HEAD,
        })
    }

    /// Whether the request carries `If-Match` or `If-None-Match`.
    pub fn is_conditional(&self) -> bool {
        self.if_match.is_some() || self.if_none_match.is_some()
    }

    /// For a PUT: whether it may only create (`If-None-Match: *`).
    pub fn create_only(&self) -> bool {
        self.if_none_match == Some(Condition::Any)
    }

    /// Whether the request carries `If-Match`.
    pub fn has_if_match(&self) -> bool {
        self.if_match.is_some()
    }

    /// For a guarded write, bound as `$n::bigint[]` in `($n is null or row_version = any($n))`:
    /// `None` lets any version through (no `If-Match`, or `*`); otherwise the versions the client
    /// names with strong tags (possibly none, so the write matches nothing).
    pub fn versions(&self) -> Option<Vec<i64>> {
        match &self.if_match {
            None | Some(Condition::Any) => None,
            Some(Condition::Tags(tags)) => {
                Some(tags.iter().filter(|t| !t.weak).filter_map(|t| t.version).collect())
            }
        }
    }

    /// Checks the preconditions of a write against the row's current version (`None`: no row),
    /// for a handler that has read the row under a lock in its transaction.
    pub fn check_write(&self, current: Option<i64>) -> Result<(), ApiError> {
        let Some(current) = current else {
            // RFC 9110 §13.1.1: If-Match on a missing resource fails, but a 404 says more and
            // is what any other missing resource answers.
            return Err(ApiError::NotFound);
        };
        if let Some(versions) = self.versions().filter(|_| self.if_match.is_some())
            && !versions.contains(&current)
        {
            return Err(ApiError::PreconditionFailed);
        }
        if self.if_none_match.as_ref().is_some_and(|c| matches_weakly(c, current)) {
            return Err(ApiError::PreconditionFailed);
        }
        Ok(())
    }

    /// For a PUT that creates or replaces: `If-None-Match: *` makes it create-only, and
    /// `If-Match` makes it replace-only (a 412 when there is nothing to replace).
    pub fn check_upsert(&self, current: Option<i64>) -> Result<(), ApiError> {
        match current {
            None if self.if_match.is_some() => Err(ApiError::PreconditionFailed),
            None => Ok(()),
            Some(_) => self.check_write(current),
        }
    }

    /// What a guarded write that changed no row means: a 412 when the row exists (the
    /// precondition refused it), otherwise the 404 it would have been anyway. `exists` is a
    /// statement that returns a row if the resource exists, in the same transaction.
    pub async fn missed(&self, tx: &mut TenantTx, exists: &'static str, params: Params<'_>) -> ApiError {
        if self.if_match.is_none() {
            return ApiError::NotFound;
        }
        match tx.query_opt(exists, params).await {
            Ok(Some(_)) => ApiError::PreconditionFailed,
            Ok(None) => ApiError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// For a read: whether the client's copy is current (If-None-Match, weak comparison).
    fn not_modified(&self, version: i64) -> bool {
        self.safe_method && self.if_none_match.as_ref().is_some_and(|c| matches_weakly(c, version))
    }

    /// A GET's answer: 304 with the ETag when the client's copy is current, otherwise 200 with
    /// the body and its ETag.
    pub fn respond<T: Serialize>(&self, version: i64, body: &T) -> HttpResponse {
        if self.not_modified(version) {
            return HttpResponse::NotModified().insert_header((header::ETAG, etag(version))).finish();
        }
        tagged(HttpResponse::Ok(), version, body)
    }
}

/// A response with a body and the ETag of the version it shows.
pub fn tagged<T: Serialize>(mut builder: HttpResponseBuilder, version: i64, body: &T) -> HttpResponse {
    builder.insert_header((header::ETAG, etag(version))).json(body)
}

fn matches_weakly(condition: &Condition, version: i64) -> bool {
    match condition {
        Condition::Any => true,
        Condition::Tags(tags) => tags.iter().any(|t| t.version == Some(version)),
    }
}

fn parse_header(headers: &HeaderMap, name: HeaderName) -> Result<Option<Condition>, ApiError> {
    let mut out: Option<Condition> = None;
    for value in headers.get_all(&name) {
        let text = value.to_str().map_err(|_| invalid(&name))?;
        let parsed = parse_condition(text).ok_or_else(|| invalid(&name))?;
        out = Some(match (out, parsed) {
            (None, c) => c,
            (Some(Condition::Tags(mut a)), Condition::Tags(b)) if a.len() + b.len() <= MAX_TAGS => {
                a.extend(b);
                Condition::Tags(a)
            }
            _ => return Err(invalid(&name)),
        });
    }
    Ok(out)
}

fn invalid(name: &HeaderName) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_precondition",
        detail: format!(
            "{name} must be * or a list of at most {MAX_TAGS} entity tags such as \"42\", as the ETag \
             response header gives them."
        ),
    }
}

/// `*` or `1#entity-tag` (RFC 9110 §8.8.3): `W/"..."` or `"..."`, comma separated.
fn parse_condition(text: &str) -> Option<Condition> {
    let text = text.trim();
    if text == "*" {
        return Some(Condition::Any);
    }
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &inner[..end];
        if !opaque.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
            return None;
        }
        tags.push(Tag { weak, version: opaque.parse().ok() });
        if tags.len() > MAX_TAGS {
            return None;
        }
        rest = inner[end + 1..].trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
    (!tags.is_empty()).then_some(Condition::Tags(tags))
}

impl FromRequest for Preconditions {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Preconditions, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Preconditions::from_headers(req.method(), req.headers()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    fn pc(
        method: Method,
        if_match: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Result<Preconditions, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = if_match {
            headers.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        Preconditions::from_headers(&method, &headers)
    }

    #[test]
    fn if_match_is_a_strong_comparison_of_row_versions() {
        let p = pc(Method::PATCH, Some(r#""7", W/"8", "x""#), None).unwrap();
        assert_eq!(p.versions(), Some(vec![7]), "weak and foreign tags match nothing");
        assert!(p.check_write(Some(7)).is_ok());
        assert!(matches!(p.check_write(Some(8)), Err(ApiError::PreconditionFailed)));
        assert!(matches!(p.check_write(None), Err(ApiError::NotFound)));
        let any = pc(Method::DELETE, Some("*"), None).unwrap();
        assert_eq!(any.versions(), None);
        assert!(any.check_write(Some(1)).is_ok());
        assert!(matches!(any.check_upsert(None), Err(ApiError::PreconditionFailed)));
        let none = pc(Method::PUT, None, Some("*")).unwrap();
        assert!(none.check_upsert(None).is_ok());
        assert!(matches!(none.check_upsert(Some(3)), Err(ApiError::PreconditionFailed)));
        assert_eq!(pc(Method::PATCH, None, None).unwrap().versions(), None);
    }

    #[test]
    fn if_none_match_is_a_weak_comparison_on_reads_only() {
        let get = pc(Method::GET, None, Some(r#"W/"5", "6""#)).unwrap();
        assert!(get.not_modified(5) && get.not_modified(6) && !get.not_modified(7));
        let response = get.respond(6, &serde_json::json!({}));
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers().get(header::ETAG).unwrap(), "\"6\"");
        assert_eq!(get.respond(7, &serde_json::json!({})).status(), StatusCode::OK);
        assert!(!pc(Method::POST, None, Some("\"5\"")).unwrap().not_modified(5));
    }

    #[test]
    fn malformed_or_oversized_preconditions_are_refused() {
        for bad in ["7", "\"7", "\"7\" \"8\"", "W/7", "**", "\"a\"b\"", ""] {
            assert!(
                matches!(
                    pc(Method::PATCH, Some(bad), None),
                    Err(ApiError::BadRequest { code: "invalid_precondition", .. })
                ),
                "{bad:?}"
            );
        }
        let many = vec!["\"1\""; MAX_TAGS + 1].join(",");
        assert!(pc(Method::PATCH, Some(&many), None).is_err());
        let max = vec!["\"1\""; MAX_TAGS].join(", ");
        assert!(pc(Method::PATCH, Some(&max), None).is_ok());
        assert!(pc(Method::PATCH, Some(r#" "1" ,, "2" "#), None).is_ok());
    }
}
