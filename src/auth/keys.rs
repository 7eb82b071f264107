//! Our own signing key: Ed25519, PKCS#8 PEM on disk (mode 0600), generated in development when
//! missing. Its public half is what validates the tokens we mint.

use std::path::Path;

use anyhow::Context as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The raw public key, base64url (the JWK `x`).
    pub public_x: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The current signing key plus retired ones that still verify (and are still published) until
/// the tokens they signed have expired.
pub struct SigningKeys {
    pub current: SigningKey,
    pub previous: Vec<SigningKey>,
}

impl SigningKeys {
    pub fn load(settings: &crate::config::AuthSettings, may_generate: bool) -> anyhow::Result<SigningKeys> {
        let current = SigningKey::load_or_generate(&settings.signing_key_file, may_generate)?;
        let previous = settings
            .previous_signing_key_files
            .iter()
            .map(|path| SigningKey::load_or_generate(path, false))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(SigningKeys { current, previous })
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.current).chain(&self.previous).find(|k| k.kid == kid)
    }

    /// The JWKS document served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> =
            std::iter::once(&self.current).chain(&self.previous).map(SigningKey::jwk).collect();
        serde_json::json!({ "keys": keys })
    }
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    /// The session an access token belongs to (our session tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<uuid::Uuid>,
}

impl SigningKey {
    pub fn from_pkcs8_der(der: &[u8]) -> anyhow::Result<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| anyhow::anyhow!("not an Ed25519 PKCS#8 private key"))?;
        let public = pair.public_key().as_ref().to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
        Ok(SigningKey {
            kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]),
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(&public),
            public_x: URL_SAFE_NO_PAD.encode(&public),
        })
    }

    /// Loads the key at `path`; when it does not exist and `may_generate`, creates one.
    pub fn load_or_generate(path: &Path, may_generate: bool) -> anyhow::Result<SigningKey> {
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let der =
                    pem_to_der(&pem).with_context(|| format!("reading signing key {}", path.display()))?;
                Self::from_pkcs8_der(&der).with_context(|| format!("loading signing key {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_generate => {
                let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?;
                write_private(path, &der_to_pem(der.as_ref()))?;
                tracing::info!(path = %path.display(), "generated a development signing key");
                Self::from_pkcs8_der(der.as_ref())
            }
            Err(e) => Err(e).with_context(|| {
                format!("reading signing key {} (see TENANTRY_AUTH__SIGNING_KEY_FILE)", path.display())
            }),
        }
    }

    /// Signs a development access token for `subject` (no session).
    pub fn mint(
        &self,
        issuer: &str,
        audience: &str,
        subject: &str,
        email: Option<&str>,
        ttl: std::time::Duration,
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(ttl.as_secs()).context("ttl too large")?;
        self.sign(MintedClaims {
            iss: issuer,
            sub: subject,
            aud: audience,
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            email,
            sid: None,
        })
    }

    /// Signs a session's access token: `sub` is the user id, `sid` the session.
    pub fn mint_session_token(
        &self,
        issuer: &str,
        audience: &str,
        user: crate::domain::UserId,
        session: uuid::Uuid,
        issued_at: i64,
        expires_at: i64,
    ) -> anyhow::Result<String> {
        let subject = user.to_string();
        self.sign(MintedClaims {
            iss: issuer,
            sub: &subject,
            aud: audience,
            exp: expires_at,
            nbf: issued_at,
            iat: issued_at,
            jti: uuid::Uuid::new_v4().to_string(),
            email: None,
            sid: Some(session),
        })
    }

    /// A signed statement of an audit chain's head: anyone with our JWKS can check, later, that
    /// the log they are shown still extends this exact head.
    pub fn sign_checkpoint(
        &self,
        issuer: &str,
        org: crate::domain::OrgId,
        seq: i64,
        hash: &str,
    ) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("audit-checkpoint+jwt".into());
        let claims = serde_json::json!({
            "iss": issuer,
            "sub": org.to_string(),
            "seq": seq,
            "hash": hash,
            "iat": chrono::Utc::now().timestamp(),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    fn sign(&self, claims: MintedClaims<'_>) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The public key as a JWK (for a JWKS document).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": self.public_x})
    }
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String =
        pem.lines().map(str::trim).filter(|l| !l.starts_with("-----") && !l.is_empty()).collect();
    anyhow::ensure!(pem.contains("BEGIN PRIVATE KEY"), "expected a PKCS#8 'PRIVATE KEY' PEM");
    STANDARD.decode(body).map_err(|_| anyhow::anyhow!("invalid base64 in PEM"))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    use std::io::Write as _;
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_kid_is_stable() {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let a = SigningKey::from_pkcs8_der(der.as_ref()).unwrap();
        let b = SigningKey::from_pkcs8_der(&pem_to_der(&der_to_pem(der.as_ref())).unwrap()).unwrap();
        assert_eq!(a.kid, b.kid);
        assert_eq!(a.public_x, b.public_x);
        assert!(!format!("{a:?}").contains(&a.public_x));
    }
}
