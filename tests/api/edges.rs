//! The edges: CORS from an allowlist, and TLS (1.2+, HTTP/2) when a certificate is configured.

use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};

use crate::helpers::TestApp;

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let app = TestApp::spawn_with(|s| s.cors_allowed_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, format!("{}/api/v1/orgs", app.address))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
            .send()
    };
    let res = preflight("https://app.example.com").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(res.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let res = preflight("https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none(), "no CORS for other origins");

    let res = app
        .http
        .get(format!("{}/api/v1/health", app.address))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
    let exposed = res.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    for header in ["x-request-id", "etag", "link", "ratelimit", "location"] {
        assert!(exposed.contains(header), "a browser client can read {header}: {exposed}");
    }
}

#[tokio::test]
async fn tls_serves_http2_and_refuses_old_protocols() {
    let dir = std::env::temp_dir().join(format!("tenantry-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, ca) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    // A throwaway CA and a leaf certificate for localhost signed by it (webpki refuses a CA
    // certificate as the server's own).
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is needed for this test")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=tenantry-test-ca", "-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[&["req"][..], &ec, &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr"]].concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let (cert_file, key_file) = (cert.clone(), key.clone());
    let app =
        TestApp::spawn_with(move |s| s.tls = Some(tenantry::config::TlsSettings { cert_file, key_file }))
            .await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let res = client.get(format!("https://localhost:{port}/api/v1/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-request-id"));
    assert!(
        app.http.get(format!("http://127.0.0.1:{port}/api/v1/health")).send().await.is_err(),
        "no plain HTTP"
    );

    let s_client = |extra: &[&str]| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let h2 = s_client(&["-alpn", "h2"]);
    assert!(h2.contains("ALPN protocol: h2"), "{h2}");
    let tls12 = s_client(&["-tls1_2", "-brief"]);
    assert!(
        tls12.contains("CONNECTION ESTABLISHED") && tls12.contains("TLSv1.2"),
        "TLS 1.2 is accepted: {tls12}"
    );
    let old = s_client(&["-tls1_1", "-brief"]);
    assert!(!old.contains("CONNECTION ESTABLISHED"), "TLS 1.1 must be refused: {old}");
    let _ = std::fs::remove_dir_all(dir);
}
