//! The HTTP edge: problem+json errors and middleware (request id, security headers).
//! Nothing below `api` depends on this module's actix types except through `ApiError`.

pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod problem;
pub mod ratelimit;

pub use problem::ApiError;

/// The organization an API path is inside (`/api/v1/orgs/{org_id}/...`, the organization itself
/// included), for the middleware that scopes by organization.
pub fn org_of_path(path: &str) -> Option<crate::domain::OrgId> {
    let rest = path.strip_prefix("/api/v1/orgs/")?;
    let id = rest.split('/').next()?;
    id.parse::<uuid::Uuid>().ok().map(crate::domain::OrgId)
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
