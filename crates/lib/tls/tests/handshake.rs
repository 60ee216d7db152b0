//! Server and client of this crate shake hands over an in-memory pipe, with
//! certificates made for the test: what each side reports, and how the
//! client judges the server's certificate.

use std::path::Path;

use pfx_config::Config;
use pfx_tls::client::{Client, Level, Trust};
use pfx_tls::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server certificate for `names`, signed with `alg`.
fn pki(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> Pki {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = if alg == &rcgen::PKCS_RSA_SHA256 {
        // ring signs with RSA keys but does not make them: openssl does.
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl");
        let pem = String::from_utf8(out.stdout).unwrap();
        rcgen::KeyPair::from_pem_and_sign_algo(&pem, alg).unwrap()
    } else {
        rcgen::KeyPair::generate_for(alg).unwrap()
    };
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn config(dir: &Path, text: &str) -> Config {
    Config::from_text(dir, text).unwrap()
}

async fn handshake(
    server: &Server,
    client: &Client,
    level: Level,
    names: &[String],
) -> (pfx_tls::Negotiated, pfx_tls::Negotiated, Trust) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (s, c) = tokio::join!(
        server.accept(a),
        client.connect(b, level, "mx.example.com", names)
    );
    let (mut s, sn) = s.unwrap();
    let (mut c, cn, trust) = c.unwrap();
    c.write_all(b"EHLO x\r\n").await.unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"EHLO x\r\n");
    (sn, cn, trust)
}

#[tokio::test]
async fn rsa_server_names_what_it_agreed_as_postfix_does() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(&["mx.example.com"], &rcgen::PKCS_RSA_SHA256);
    std::fs::write(dir.path().join("cert.pem"), &p.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &p.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!("smtpd_tls_cert_file = {d}/cert.pem\nsmtpd_tls_key_file = {d}/key.pem\nsmtp_tls_CAfile = {d}/ca.pem\n"),
    );
    let server = Server::from_config(&cfg, false).unwrap();
    let client = Client::from_config(&cfg).unwrap();
    let (sn, cn, trust) =
        handshake(&server, &client, Level::Verify, &["mx.example.com".into()]).await;
    assert_eq!(sn.protocol, "TLSv1.3");
    assert_eq!(sn.cipher, cn.cipher);
    assert!(
        sn.summary().starts_with("TLSv1.3 with cipher TLS_"),
        "{}",
        sn.summary()
    );
    assert!(
        sn.summary()
            .contains("server-signature RSA-PSS (2048 bits) server-digest SHA"),
        "{}",
        sn.summary()
    );
    assert_eq!(trust, Trust::Verified);
    // The same CA, another name: trusted, not verified.
    let (_, _, trust) = handshake(&server, &client, Level::May, &["other.example".into()]).await;
    assert_eq!(trust, Trust::Trusted);
}

#[tokio::test]
async fn without_trust_anchors_the_server_is_untrusted_and_tls12_is_named_as_openssl_does() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(&["mx.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    // One file holding key and chain, as smtpd_tls_chain_files reads it.
    std::fs::write(
        dir.path().join("chain.pem"),
        format!("{}{}", p.key_pem, p.cert_pem),
    )
    .unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!("smtpd_tls_chain_files = {d}/chain.pem\nsmtp_tls_protocols = TLSv1.2\n"),
    );
    let server = Server::from_config(&cfg, false).unwrap();
    let client = Client::from_config(&cfg).unwrap();
    let (sn, _, trust) = handshake(&server, &client, Level::May, &["mx.example.com".into()]).await;
    assert_eq!(trust, Trust::Untrusted);
    assert_eq!(sn.protocol, "TLSv1.2");
    assert!(sn.cipher.starts_with("ECDHE-ECDSA-"), "{}", sn.cipher);
    // As Postfix (OpenSSL) says it: key exchange and signature only for TLS 1.3.
    assert_eq!(
        sn.summary(),
        format!("TLSv1.2 with cipher {} (256/256 bits)", sn.cipher)
    );
    assert!(
        sn.signature
            .as_deref()
            .unwrap_or("")
            .starts_with("ECDSA (prime256v1) server-digest SHA"),
        "{:?}",
        sn.signature
    );
}

#[test]
fn a_key_that_does_not_match_or_a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(&["a.example"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let b = pki(&["b.example"], &rcgen::PKCS_ECDSA_P256_SHA256);
    std::fs::write(dir.path().join("cert.pem"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &b.key_pem).unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!("smtpd_tls_cert_file = {d}/cert.pem\nsmtpd_tls_key_file = {d}/key.pem\n"),
    );
    let e = Server::from_config(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("does not match the certificate"), "{e}");
    let cfg = config(dir.path(), &format!("smtpd_tls_cert_file = {d}/none.pem\n"));
    let e = Server::from_config(&cfg, false).unwrap_err().to_string();
    assert!(
        e.starts_with("smtpd_tls_cert_file: cannot load a certificate from"),
        "{e}"
    );
    let cfg = config(dir.path(), "");
    let e = Server::from_config(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("No server certs available"), "{e}");
    let cfg = config(dir.path(), &format!("smtpd_tls_cert_file = {d}/cert.pem\n"));
    let e = Server::from_config(&cfg, true).unwrap_err().to_string();
    assert!(
        e.starts_with("smtpd_tls_key_file: cannot load a private key"),
        "{e}"
    );
    std::fs::write(dir.path().join("a.key"), &a.key_pem).unwrap();
    let cfg = config(
        dir.path(),
        &format!("smtpd_tls_cert_file = {d}/cert.pem\nsmtpd_tls_key_file = {d}/a.key\nsmtpd_tls_mandatory_protocols = TLSv1.1\n"),
    );
    assert!(Server::from_config(&cfg, false).is_ok());
    let e = Server::from_config(&cfg, true).unwrap_err().to_string();
    assert!(e.contains("allows no protocol"), "{e}");
}
