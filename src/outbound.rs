//! Requests to addresses that tenants choose (a provider's endpoint, a webhook endpoint), hardened
//! against SSRF: https only, the host resolved once and every address public (no loopback,
//! private, link-local, ...), the connection pinned to those addresses (no DNS rebinding), no
//! redirects, and a timeout. Tests may allow plain http to private addresses; production refuses
//! that setting.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundError {
    /// The target is not allowed (a private address, plain http, ...).
    #[error("refused: {0}")]
    Refused(&'static str),
    /// No usable answer: timeout, connection failure, DNS.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// Checks an endpoint URL a tenant gives us, before it is stored: https (http only with
/// `allow_private`), a host, no credentials or fragment, and an IP literal only if public. Names
/// are resolved (and their addresses checked) when they are used, as DNS answers change.
pub fn check_url(text: &str, allow_private: bool) -> Result<url::Url, &'static str> {
    if text.len() > 2000 {
        return Err("is longer than 2000 characters");
    }
    let url = url::Url::parse(text).map_err(|_| "is not a URL")?;
    if url.scheme() != "https" && !(allow_private && url.scheme() == "http") {
        return Err("must be an https URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials");
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    let ip = match url.host() {
        None => return Err("must have a host"),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            if !allow_private && (name == "localhost" || name.ends_with(".localhost") || !name.contains('.'))
            {
                return Err("must name a public host");
            }
            None
        }
    };
    if let Some(ip) = ip
        && !allow_private
        && !is_public(ip)
    {
        return Err("must not be a private or local address");
    }
    Ok(url)
}

/// Is this address on the public internet? Everything else is refused for live checks.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)) // NAT64 (maps to IPv4)
        }
    }
}

/// A client that can reach only `url`'s host, at addresses checked once and pinned, with no
/// redirects and the configured timeout.
pub async fn pinned_client(
    allow_private: bool,
    target: &str,
    timeout: Duration,
) -> Result<(reqwest::Client, url::Url), OutboundError> {
    let url = url::Url::parse(target).map_err(|_| OutboundError::Refused("not a URL"))?;
    if url.scheme() != "https" && !(allow_private && url.scheme() == "http") {
        return Err(OutboundError::Refused("https is required"));
    }
    let host = url.host_str().ok_or(OutboundError::Refused("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().ok_or(OutboundError::Refused("no port"))?;
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| OutboundError::Unreachable("DNS lookup timed out".into()))?
            .map_err(|_| OutboundError::Unreachable("the host name does not resolve".into()))?
            .collect();
    if addrs.is_empty() {
        return Err(OutboundError::Unreachable("the host name does not resolve".into()));
    }
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(OutboundError::Refused("the host resolves to a private or local address"));
    }
    // Connect only to the addresses just checked: a second lookup could answer differently.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .resolve_to_addrs(&host, &addrs)
        .build()
        .map_err(|_| OutboundError::Unreachable("cannot build an HTTP client".into()))?;
    Ok((client, url))
}
