//! HTTP method semantics the routing alone does not give (RFC 9110):
//! - HEAD is served for every GET: the request is routed as GET and the connection sends the
//!   headers only (actix's codecs drop the body of a response to a HEAD request).
//! - A path that exists answered with a method it does not take is 405 with `Allow`, not 404.
//!   The routes are the OpenAPI document's, so a route and its `Allow` cannot disagree. The
//!   templates are public, so a 405 reveals nothing a 404 hid: another tenant's object and a
//!   random id still answer alike.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError as _, web};

use crate::api::ApiError;

/// Every path template of the API with the methods it answers.
pub struct Routes(Vec<(Vec<Segment>, Vec<Method>)>);

enum Segment {
    Literal(String),
    Parameter,
}

impl Routes {
    /// From the served OpenAPI document, as JSON (`paths`: template → operations).
    pub fn from_openapi(document: &str) -> Routes {
        let json: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
        let mut routes = Vec::new();
        for (template, item) in json["paths"].as_object().into_iter().flatten() {
            let segments = template
                .split('/')
                .map(|s| if s.starts_with('{') { Segment::Parameter } else { Segment::Literal(s.to_owned()) })
                .collect();
            let mut methods: Vec<Method> = ["GET", "PUT", "POST", "DELETE", "PATCH"]
                .into_iter()
                .filter(|m| item.get(m.to_ascii_lowercase()).is_some())
                .filter_map(|m| m.parse().ok())
                .collect();
            if methods.contains(&Method::GET) {
                methods.push(Method::HEAD);
            }
            routes.push((segments, methods));
        }
        Routes(routes)
    }

    /// The methods `path` answers, if it is a route at all.
    pub fn allowed(&self, path: &str) -> Option<Vec<Method>> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut found: Option<Vec<Method>> = None;
        for (segments, methods) in &self.0 {
            let matches = segments.len() == parts.len()
                && segments.iter().zip(&parts).all(|(s, p)| match s {
                    Segment::Literal(l) => l == p,
                    Segment::Parameter => !p.is_empty(),
                });
            if matches {
                let all = found.get_or_insert_with(Vec::new);
                all.extend(methods.iter().filter(|m| !all.contains(m)).cloned().collect::<Vec<_>>());
            }
        }
        found
    }
}

/// The middleware (`actix_web::middleware::from_fn(methods)`).
pub async fn methods(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    let res = next.call(req).await?.map_into_boxed_body();
    // A 404 for a method the path does not take came from no handler (a handler's 404, for an
    // object that is not there or not yours, is for a method the path takes). A CORS preflight
    // is answered before routing with 200 and stays as it is.
    if res.status() != StatusCode::NOT_FOUND {
        return Ok(res);
    }
    let Some(routes) = res.request().app_data::<web::Data<Routes>>() else { return Ok(res) };
    let Some(allowed) = routes.allowed(res.request().path()) else { return Ok(res) };
    if allowed.contains(res.request().method()) {
        return Ok(res);
    }
    let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let mut response = ApiError::MethodNotAllowed.error_response();
    if let Ok(value) = header::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments_and_collect_every_method() {
        let doc = serde_json::json!({
            "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {
                "/api/v1/orgs/{org_id}": {"get": {"responses": {}}, "patch": {"responses": {}}},
                "/api/v1/orgs/{org_id}/members": {"post": {"responses": {}}},
            }
        })
        .to_string();
        let routes = Routes::from_openapi(&doc);
        let names = |p: &str| routes.allowed(p).map(|m| m.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        assert_eq!(names("/api/v1/orgs/123"), Some(vec!["GET".into(), "PATCH".into(), "HEAD".into()]));
        assert_eq!(names("/api/v1/orgs/123/members"), Some(vec!["POST".into()]));
        assert_eq!(names("/api/v1/orgs//members"), None, "an empty parameter is no route");
        assert_eq!(names("/api/v1/orgs/123/nope"), None);
        assert_eq!(names("/api/v1/orgs"), None);
    }
}
