//! TLS to PostgreSQL with rustls, configured as libpq is: `sslmode` (disable, prefer, require,
//! verify-ca, verify-full), `sslrootcert`, `sslcert` and `sslkey`, in the URL or as settings
//! (`database_tls`). tokio-postgres knows only disable/prefer/require and refuses the other
//! parameters, so they are taken out of the URL here and become the rustls configuration.
//! Every connection (the pool, LISTEN, admin, cancel requests) goes through a `Connector`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseTls, Environment, SslMode};

/// The TLS half tokio-postgres connects with (also for cancel requests).
pub type Tls = MakeRustlsConnect;
/// A connection's stream, TLS or not.
pub type TlsStream = <Tls as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// One database URL, parsed, with the TLS it connects with.
#[derive(Clone)]
pub struct Connector {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
    pub mode: SslMode,
    /// Which setting the URL came from, for error messages (never the URL: it holds a password).
    pub what: &'static str,
}

const TLS_PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl Connector {
    /// Parses `url` (URI or `key=value` form). Its TLS parameters override `defaults`.
    pub fn new(url: &str, defaults: &DatabaseTls, what: &'static str) -> anyhow::Result<Connector> {
        let (rest, params) = split_tls_parameters(url)
            .ok_or_else(|| anyhow::anyhow!("{what} is not a valid PostgreSQL URL"))?;
        let mut tls = defaults.clone();
        for (key, value) in params {
            match key.as_str() {
                "sslmode" => {
                    tls.sslmode = Some(SslMode::parse(&value).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{what}: sslmode must be disable, prefer, require, verify-ca or verify-full"
                        )
                    })?)
                }
                "sslrootcert" => tls.sslrootcert = Some(value.into()),
                "sslcert" => tls.sslcert = Some(value.into()),
                _ => tls.sslkey = Some(value.into()),
            }
        }
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|_| anyhow::anyhow!("{what} is not a valid PostgreSQL URL"))?;
        // libpq: with a CA bundle given, `require` verifies the chain (as verify-ca).
        let mode = match tls.sslmode.unwrap_or_default() {
            SslMode::Require if tls.sslrootcert.is_some() => SslMode::VerifyCa,
            mode => mode,
        };
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let client = client_config(mode, &tls).with_context(|| format!("{what}: TLS settings"))?;
        Ok(Connector { config, tls: MakeRustlsConnect::new(client), mode, what })
    }

    /// `url` with only its own TLS parameters (tests, tools).
    pub fn from_url(url: &str) -> anyhow::Result<Connector> {
        Connector::new(url, &DatabaseTls::default(), "the database URL")
    }

    /// In production, a connection that may be plaintext is refused unless explicitly allowed.
    pub fn refuse_plaintext(self, environment: Environment, tls: &DatabaseTls) -> anyhow::Result<Connector> {
        anyhow::ensure!(
            !(environment == Environment::Production && self.mode.allows_plaintext() && !tls.allow_plaintext),
            "{}: sslmode={} may send every tenant's data in plaintext, which production refuses; \
             use sslmode=verify-full with sslrootcert=<your provider's CA bundle> (or set \
             database_tls.allow_plaintext = true for a database only reachable privately)",
            self.what,
            mode_name(self.mode),
        );
        Ok(self)
    }

    /// Connects once; a failure says what to fix.
    pub async fn connect(
        &self,
    ) -> anyhow::Result<(tokio_postgres::Client, tokio_postgres::Connection<tokio_postgres::Socket, TlsStream>)>
    {
        self.config.connect(self.tls.clone()).await.map_err(|e| explain(self.what, self.mode, &e))
    }
}

fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// A connection error, with what to change when it is about TLS.
pub fn explain(what: &str, mode: SslMode, err: &tokio_postgres::Error) -> anyhow::Error {
    let mut hint = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|i| i as _);
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(cert)) = candidate.downcast_ref::<rustls::Error>() {
                hint = Some(match cert {
                    CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                        "the server's certificate is not signed by a CA you trust: set sslrootcert to \
                         your provider's CA bundle (PEM)"
                    }
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                        "the server's certificate is not issued for the host you connect to: use the \
                         host name in the certificate (your provider's endpoint), not an IP address or alias"
                    }
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "the server's certificate has expired"
                    }
                    _ => "the server's certificate was refused",
                });
            }
        }
        source = e.source();
    }
    // The server's own message, or the error with its innermost cause (e.g. rustls's reason).
    let message = match err.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut cause = std::error::Error::source(err);
            let mut innermost = None;
            while let Some(e) = cause {
                innermost = Some(e.to_string());
                cause = e.source();
            }
            match innermost {
                Some(inner) if !err.to_string().contains(&inner) => format!("{err}: {inner}"),
                _ => err.to_string(),
            }
        }
    };
    if hint.is_none() && message.contains("no encryption") {
        hint = Some("the server accepts only TLS connections: set sslmode=verify-full and sslrootcert");
    }
    if hint.is_none() && message.contains("server does not support TLS") {
        hint = Some("the server does not offer TLS: enable ssl on it, or use sslmode=disable locally");
    }
    match hint {
        Some(hint) => {
            anyhow::anyhow!("connecting with {what} (sslmode={}): {message}: {hint}", mode_name(mode))
        }
        None => anyhow::anyhow!("connecting with {what}: {message}"),
    }
}

/// `url` without its TLS parameters, and those parameters. `None` when it cannot be split.
fn split_tls_parameters(url: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut params = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return Some((url.to_owned(), params)) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)?;
            if TLS_PARAMETERS.contains(&key.as_str()) {
                params.push((key, percent_decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return Some((rest, params));
    }
    // key=value form: values optionally single-quoted, with backslash escapes.
    let mut kept = Vec::new();
    let mut chars = url.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' { chars.next()? } else { c });
            }
        }
        if TLS_PARAMETERS.contains(&key.as_str()) {
            params.push((key, value));
        } else {
            kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'")));
        }
    }
    Some((kept.join(" "), params))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(mode: SslMode, tls: &DatabaseTls) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    // Plaintext or unverified TLS needs nothing loaded; the verify modes need their CAs.
    let webpki = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(tls.sslrootcert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .context("building the certificate verifier")?;
            Some(webpki)
        }
    };
    let verifier = Arc::new(Verifier { provider, webpki, check_name: mode == SslMode::VerifyFull });
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    Ok(match (&tls.sslcert, &tls.sslkey) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("sslcert {}: {e}", cert.display()))?;
            anyhow::ensure!(!chain.is_empty(), "sslcert {}: no certificate in the file", cert.display());
            // The error names the file, never its contents.
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("sslkey {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("sslcert and sslkey do not match")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("sslcert and sslkey go together"),
    })
}

/// The CAs to trust: a PEM bundle, or (`system` or unset) the system's.
fn root_store(path: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match path.filter(|p| *p != Path::new("system")) {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            anyhow::ensure!(
                added > 0,
                "sslrootcert {}: no usable CA certificate in the file",
                path.display()
            );
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(
                !roots.is_empty(),
                "no system CA certificates found: set sslrootcert to your provider's CA bundle"
            );
        }
    }
    Ok(roots)
}

/// What a server's certificate must satisfy. `prefer` / `require` without a CA (libpq's
/// semantics): nothing, though the handshake's signatures are still checked. `verify-ca`: a
/// chain to a trusted CA, whatever name it was issued for (webpki checks the chain before the
/// name, so a name mismatch means the chain was good). `verify-full`: the chain and the name.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// `None`: the certificate is not checked.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else { return Ok(ServerCertVerified::assertion()) };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stays_as_written() {
        let (rest, params) = split_tls_parameters(
            "postgres://app:p%40ss@db.example.com:5432/t?sslmode=verify-full&application_name=x&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://app:p%40ss@db.example.com:5432/t?application_name=x");
        assert_eq!(
            params,
            vec![("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/ca.pem".into())]
        );
        let (rest, params) =
            split_tls_parameters("host=db user=app password='a b\\'c' sslmode=require sslrootcert = /ca.pem")
                .unwrap();
        assert_eq!(rest, "host='db' user='app' password='a b\\'c'");
        assert_eq!(
            params,
            vec![("sslmode".into(), "require".into()), ("sslrootcert".into(), "/ca.pem".into())]
        );
        assert!(split_tls_parameters("host=db password='unterminated").is_none());
        assert!(split_tls_parameters("postgres://db/t?sslmode=%zz").is_none());
    }

    #[test]
    fn modes_follow_libpq_and_production_refuses_plaintext() {
        let defaults = DatabaseTls::default();
        let c = Connector::new("postgres://app@db/t", &defaults, "TENANTRY_DATABASE_URL").unwrap();
        assert_eq!(c.mode, SslMode::Prefer);
        let err = c.refuse_plaintext(Environment::Production, &defaults).err().unwrap().to_string();
        assert!(err.contains("TENANTRY_DATABASE_URL: sslmode=prefer"), "{err}");
        let allowed = DatabaseTls { allow_plaintext: true, ..defaults.clone() };
        let c = Connector::new("postgres://app@db/t?sslmode=disable", &allowed, "x").unwrap();
        assert!(c.refuse_plaintext(Environment::Production, &allowed).is_ok());
        let c = Connector::new("postgres://app@db/t?sslmode=require", &defaults, "x").unwrap();
        assert_eq!(c.mode, SslMode::Require);
        assert!(c.refuse_plaintext(Environment::Production, &defaults).is_ok());
        let bad = Connector::new("postgres://app@db/t?sslmode=always", &defaults, "x").err().unwrap();
        assert!(bad.to_string().contains("sslmode must be"), "{bad}");
        let missing = Connector::new(
            "postgres://app@db/t?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            &defaults,
            "x",
        )
        .err()
        .unwrap();
        assert!(format!("{missing:#}").contains("sslrootcert /nonexistent.pem"), "{missing:#}");
        let half = DatabaseTls { sslcert: Some("/c.pem".into()), ..defaults };
        assert!(Connector::new("postgres://app@db/t", &half, "x").is_err());
    }
}
