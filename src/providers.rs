//! LLM providers whose keys tenants bring: the key formats we accept and the optional live check
//! against the provider. The live check is an outbound request to a URL partly chosen by a tenant
//! (Azure's endpoint), so it is hardened against SSRF: https only, the host is resolved once and
//! every address must be public (no loopback, private, link-local, ...), the connection is pinned
//! to those addresses (no DNS rebinding), redirects are not followed, and it times out. Neither
//! the key nor the provider's answer ever appears in an error or a log line.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::ProviderKeySettings;
use crate::domain::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Openai,
    AzureOpenai,
    Anthropic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::AzureOpenai => "azure_openai",
            Provider::Anthropic => "anthropic",
        }
    }

    pub fn from_db(text: &str) -> Option<Provider> {
        match text {
            "openai" => Some(Provider::Openai),
            "azure_openai" => Some(Provider::AzureOpenai),
            "anthropic" => Some(Provider::Anthropic),
            _ => None,
        }
    }

    /// Checks the key's shape. Messages describe the expected format, never the value.
    pub fn validate_key(self, key: &str) -> Result<(), FieldError> {
        let token_chars = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let ok = match self {
            Provider::Openai => {
                key.starts_with("sk-")
                    && !key.starts_with("sk-ant-")
                    && (20..=256).contains(&key.len())
                    && token_chars(key)
            }
            Provider::Anthropic => {
                key.starts_with("sk-ant-") && (30..=256).contains(&key.len()) && token_chars(key)
            }
            Provider::AzureOpenai => {
                (32..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric())
            }
        };
        if ok {
            return Ok(());
        }
        let expected = match self {
            Provider::Openai => "an OpenAI key: sk-... (20 to 256 letters, digits, - or _)",
            Provider::Anthropic => "an Anthropic key: sk-ant-... (30 to 256 letters, digits, - or _)",
            Provider::AzureOpenai => "an Azure OpenAI key: 32 to 128 letters and digits",
        };
        Err(FieldError::new("api_key", format!("is not {expected}")))
    }

    /// Azure needs its resource endpoint (https://NAME.openai.azure.com); the others take none.
    pub fn validate_endpoint(self, endpoint: Option<&str>) -> Result<Option<String>, FieldError> {
        match (self, endpoint) {
            (Provider::AzureOpenai, None) => Err(FieldError::new("endpoint", "is required for azure_openai")),
            (Provider::AzureOpenai, Some(text)) => {
                let url = url::Url::parse(text).map_err(|_| FieldError::new("endpoint", "is not a URL"))?;
                let plain = url.scheme() == "https"
                    && url.host_str().is_some()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && matches!(url.path(), "" | "/")
                    && text.len() <= 500;
                if !plain {
                    return Err(FieldError::new(
                        "endpoint",
                        "must be https://HOST[:PORT] with no path or query",
                    ));
                }
                Ok(Some(url.as_str().trim_end_matches('/').to_owned()))
            }
            (_, Some(_)) => Err(FieldError::new("endpoint", "is only for azure_openai")),
            (_, None) => Ok(None),
        }
    }
}

/// The last four characters, shown as `…abcd`: enough to recognise a key, never more.
pub fn key_suffix(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

pub use crate::outbound::is_public;
use crate::outbound::{OutboundError, pinned_client};

impl From<OutboundError> for LiveCheckError {
    fn from(err: OutboundError) -> LiveCheckError {
        match err {
            OutboundError::Refused(why) => LiveCheckError::Refused(why),
            OutboundError::Unreachable(why) => LiveCheckError::Unreachable(why),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveCheckError {
    /// The target is not allowed (a private address, plain http, ...).
    #[error("refused: {0}")]
    Refused(&'static str),
    /// No usable answer: timeout, connection failure, a redirect or an unexpected status.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

fn authenticate(
    provider: Provider,
    request: reqwest::RequestBuilder,
    key: &SecretString,
) -> reqwest::RequestBuilder {
    match provider {
        Provider::Openai => request.bearer_auth(key.expose_secret()),
        Provider::Anthropic => {
            request.header("x-api-key", key.expose_secret()).header("anthropic-version", "2023-06-01")
        }
        Provider::AzureOpenai => request.header("api-key", key.expose_secret()),
    }
}

fn send_error(e: &reqwest::Error, timeout: Duration) -> LiveCheckError {
    LiveCheckError::Unreachable(if e.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else {
        "the connection failed".into()
    })
}

/// Asks the provider whether it accepts `key`: `Ok(true)` accepted, `Ok(false)` rejected (401 or
/// 403).
pub async fn live_check(
    settings: &ProviderKeySettings,
    provider: Provider,
    key: &SecretString,
    endpoint: Option<&str>,
) -> Result<bool, LiveCheckError> {
    let target = match provider {
        Provider::Openai => format!("{}/v1/models", settings.openai_base_url.trim_end_matches('/')),
        Provider::Anthropic => format!("{}/v1/models", settings.anthropic_base_url.trim_end_matches('/')),
        Provider::AzureOpenai => format!(
            "{}/openai/models?api-version=2024-10-21",
            endpoint.ok_or(LiveCheckError::Refused("no endpoint"))?.trim_end_matches('/')
        ),
    };
    let timeout = Duration::from_millis(settings.live_check_timeout_ms);
    let (client, url) = pinned_client(settings.allow_private_addresses, &target, timeout)
        .await
        .map_err(LiveCheckError::from)?;
    let response = crate::telemetry::send(authenticate(provider, client.get(url), key), "llm_provider")
        .await
        .map_err(|e| send_error(&e, timeout))?;
    match response.status().as_u16() {
        200..=299 => Ok(true),
        401 | 403 => Ok(false),
        300..=399 => Err(LiveCheckError::Unreachable("the provider answered with a redirect".into())),
        other => Err(LiveCheckError::Unreachable(format!("the provider answered HTTP {other}"))),
    }
}

/// Reading an upstream's answer failed, or it was larger than we take.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// The body of an upstream's answer, at most `max` bytes: a provider (or anything answering in
/// its name) cannot fill our memory. The declared length is checked first, then every chunk.
pub async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The most a chat completion's answer may hold (a completion of 1,024 tokens is a few KiB).
pub const MAX_CHAT_ANSWER: usize = 1 << 20;

/// One chat completion: `prompt` as the user's message to `model`; returns the answer's text.
/// The worker's `llm.chat` step, with the workspace's own key.
pub async fn chat(
    settings: &ProviderKeySettings,
    provider: Provider,
    key: &SecretString,
    endpoint: Option<&str>,
    model: &str,
    prompt: &str,
) -> Result<String, LiveCheckError> {
    let messages = serde_json::json!([{"role": "user", "content": prompt}]);
    let (target, body) = match provider {
        Provider::Openai => (
            format!("{}/v1/chat/completions", settings.openai_base_url.trim_end_matches('/')),
            serde_json::json!({"model": model, "messages": messages}),
        ),
        Provider::Anthropic => (
            format!("{}/v1/messages", settings.anthropic_base_url.trim_end_matches('/')),
            serde_json::json!({"model": model, "max_tokens": 1024, "messages": messages}),
        ),
        Provider::AzureOpenai => (
            format!(
                "{}/openai/deployments/{}/chat/completions?api-version=2024-10-21",
                endpoint.ok_or(LiveCheckError::Refused("no endpoint"))?.trim_end_matches('/'),
                url::form_urlencoded::byte_serialize(model.as_bytes()).collect::<String>()
            ),
            serde_json::json!({"messages": messages}),
        ),
    };
    let timeout = Duration::from_millis(settings.chat_timeout_ms);
    let (client, url) = pinned_client(settings.allow_private_addresses, &target, timeout)
        .await
        .map_err(LiveCheckError::from)?;
    let response =
        crate::telemetry::send(authenticate(provider, client.post(url), key).json(&body), "llm_provider")
            .await
            .map_err(|e| send_error(&e, timeout))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(LiveCheckError::Unreachable(format!("the provider answered HTTP {status}")));
    }
    let bytes = read_bounded(response, MAX_CHAT_ANSWER).await.map_err(|e| match e {
        ReadError::TooLarge(_) => {
            LiveCheckError::Unreachable(format!("the answer is larger than {MAX_CHAT_ANSWER} bytes"))
        }
        ReadError::Transport(e) => send_error(&e, timeout),
    })?;
    let answer: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| LiveCheckError::Unreachable("the answer is not JSON".into()))?;
    let text = match provider {
        Provider::Anthropic => answer.pointer("/content/0/text"),
        Provider::Openai | Provider::AzureOpenai => answer.pointer("/choices/0/message/content"),
    };
    text.and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LiveCheckError::Unreachable("the answer has no text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_are_checked_without_echoing_the_key() {
        assert!(Provider::Openai.validate_key("sk-proj-abcdefghijklmnopqrstuvwxyz0123").is_ok());
        let err = Provider::Openai.validate_key("pk-not-a-key-but-quite-long-123").unwrap_err();
        assert!(!err.message.contains("pk-not"), "{err:?}");
        assert!(Provider::Openai.validate_key("sk-ant-api03-abcdefghijklmnopqrstuvwxyz").is_err());
        assert!(Provider::Openai.validate_key("sk-short").is_err());
        assert!(Provider::Openai.validate_key("sk-abcdefghijklmnopqrstuvwxyz 0123").is_err());
        assert!(Provider::Anthropic.validate_key("sk-ant-api03-abcdefghijklmnopqrstuvwxyz").is_ok());
        assert!(Provider::AzureOpenai.validate_key("0123456789abcdef0123456789abcdef").is_ok());
        assert!(Provider::AzureOpenai.validate_key("0123456789abcdef-0123456789abcdef").is_err());
        assert_eq!(key_suffix("sk-abcdefgh1234"), "1234");
    }

    #[test]
    fn endpoints_are_plain_https_hosts_for_azure_only() {
        assert_eq!(
            Provider::AzureOpenai
                .validate_endpoint(Some("https://acme.openai.azure.com/"))
                .unwrap()
                .as_deref(),
            Some("https://acme.openai.azure.com")
        );
        for bad in
            ["http://acme.openai.azure.com", "https://u:p@acme.example", "https://acme.example/x?y=1", "nope"]
        {
            assert!(Provider::AzureOpenai.validate_endpoint(Some(bad)).is_err(), "{bad}");
        }
        assert!(Provider::AzureOpenai.validate_endpoint(None).is_err());
        assert!(Provider::Openai.validate_endpoint(Some("https://api.example")).is_err());
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "104.18.6.192", "2606:4700::6810:1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
