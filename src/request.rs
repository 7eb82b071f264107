//! What one request carries to every layer beneath the HTTP edge: its id (a task-local, so every
//! problem document, audit entry and log line can name it), the organization its caller was
//! admitted to (for usage metering and the rate limits) and the client's address. It sits
//! below `api`, `db` and `http` alike, so none of them reaches up into another for it.

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served on this task ("-" outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

/// Runs `request` with `id` as its request id.
pub async fn with_request_id<F: std::future::Future>(id: String, request: F) -> F::Output {
    REQUEST_ID.scope(id, request).await
}

tokio::task_local! {
    static ADMITTED: std::cell::Cell<Option<(crate::domain::OrgId, uuid::Uuid)>>;
}

/// Runs a request with a slot in which the tenant transaction can note who it admitted.
pub async fn with_admission<F: std::future::Future>(
    request: F,
) -> (F::Output, Option<(crate::domain::OrgId, uuid::Uuid)>) {
    ADMITTED
        .scope(std::cell::Cell::new(None), async {
            let output = request.await;
            (output, ADMITTED.with(std::cell::Cell::get))
        })
        .await
}

/// The request's caller was admitted to `org` (as the API key `api_key`, or as a member). A no-op
/// outside a request (workers, webhooks, tests).
pub fn note_admitted(org: crate::domain::OrgId, api_key: Option<uuid::Uuid>) {
    let _ = ADMITTED.try_with(|slot| slot.set(Some((org, api_key.unwrap_or_default()))));
}

/// Who the current request's caller was admitted to so far (inside `with_admission`).
pub fn admitted() -> Option<(crate::domain::OrgId, uuid::Uuid)> {
    ADMITTED.try_with(std::cell::Cell::get).ok().flatten()
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address in `X-Forwarded-For` (or `Forwarded: for=`) that is not a trusted proxy itself. The
/// headers are read right to left (each proxy appends), at most 20 hops; unparsable entries end
/// the walk at the last trusted address's client.
pub fn client_addr(req: &actix_web::HttpRequest, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    let mut hops: Vec<std::net::IpAddr> = Vec::new();
    for value in req.headers().get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else { break };
        hops.extend(text.split(',').filter_map(|h| h.trim().parse::<std::net::IpAddr>().ok()));
    }
    if hops.is_empty() {
        for value in req.headers().get_all("forwarded") {
            let Ok(text) = value.to_str() else { break };
            hops.extend(text.split([',', ';']).filter_map(forwarded_for));
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev().take(20) {
        client = *hop;
        if !trusted.iter().any(|net| net.contains(hop)) {
            break;
        }
    }
    Some(client)
}

/// The address of one `for=` element of RFC 7239 `Forwarded` (`for=192.0.2.1`, `for="[2001:db8::1]:443"`).
fn forwarded_for(element: &str) -> Option<std::net::IpAddr> {
    let (key, value) = element.trim().split_once('=')?;
    if !key.trim().eq_ignore_ascii_case("for") {
        return None;
    }
    let value = value.trim().trim_matches('"');
    if let Some(v6) = value.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    value.split(':').next()?.parse().ok().or_else(|| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, headers: &[(&str, &str)]) -> actix_web::HttpRequest {
        let mut req = actix_web::test::TestRequest::default().peer_addr(peer.parse().unwrap());
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        req.to_http_request()
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        // Straight from a client: its headers are ignored.
        let direct = request("203.0.113.9:5000", &[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(client_addr(&direct, &trusted), ip("203.0.113.9"));
        // Through the balancer: the nearest untrusted hop, not a spoofed leftmost one.
        let proxied = request("10.0.0.5:5000", &[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.9")]);
        assert_eq!(client_addr(&proxied, &trusted), ip("198.51.100.7"));
        let rfc = request(
            "10.0.0.5:5000",
            &[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8::17]:4711\"")],
        );
        assert_eq!(client_addr(&rfc, &trusted), ip("2001:db8::17"));
        let none = request("10.0.0.5:5000", &[]);
        assert_eq!(client_addr(&none, &trusted), ip("10.0.0.5"));
        assert_eq!(client_addr(&proxied, &[]), ip("10.0.0.5"), "no trusted proxies: the peer");
    }
}
