//! Certificates and private keys from PEM files, as Postfix reads them.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::Error;

/// One certificate chain with its key, and how the key signs, for
/// `server-signature RSA-PSS (2048 bits)` in log lines.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) key: Arc<CertifiedKey>,
    /// `Some(bits)` for an RSA key.
    pub(crate) rsa_bits: Option<usize>,
    /// The key itself, for a client certificate.
    pub(crate) key_der: PrivateKeyDer<'static>,
}

fn load_error(parameter: &str, what: &'static str, path: &str, reason: impl ToString) -> Error {
    Error::Load {
        parameter: parameter.to_owned(),
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// A key that signs with the first scheme in the peer's order of
/// preference that it can use, as OpenSSL does (rustls would take its own
/// order, RSA-PSS with SHA-512 before SHA-256), so that handshakes and
/// their log lines are the ones Postfix's peers see.
#[derive(Debug)]
struct ClientOrder(Arc<dyn SigningKey>);

impl SigningKey for ClientOrder {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .iter()
            .find_map(|s| self.0.choose_scheme(std::slice::from_ref(s)))
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        self.0.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }
}

/// Every PEM section of a file, in order.
fn sections(parameter: &str, path: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, Error> {
    let data = std::fs::read(path).map_err(|e| load_error(parameter, "PEM data", path, e))?;
    let mut out = Vec::new();
    let mut rest: &[u8] = &data;
    loop {
        match pem::from_buf(&mut rest) {
            Ok(Some((kind, der))) => out.push((kind, der)),
            Ok(None) => return Ok(out),
            Err(e) => return Err(load_error(parameter, "PEM data", path, format!("{e:?}"))),
        }
    }
}

fn private_key(kind: SectionKind, der: Vec<u8>) -> Option<PrivateKeyDer<'static>> {
    match kind {
        SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
        SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
        SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
        _ => None,
    }
}

fn identity(
    parameter: &str,
    path: &str,
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<Identity, Error> {
    if chain.is_empty() {
        return Err(load_error(
            parameter,
            "a certificate",
            path,
            "no certificate found",
        ));
    }
    let signer = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| load_error(parameter, "a private key", path, e))?;
    let signer: Arc<dyn SigningKey> = Arc::new(ClientOrder(signer));
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        load_error(
            parameter,
            "a private key",
            path,
            format!("does not match the certificate: {e}"),
        )
    })?;
    let rsa_bits = match key {
        PrivateKeyDer::Pkcs8(k) => ring::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()).ok(),
        PrivateKeyDer::Pkcs1(k) => ring::rsa::KeyPair::from_der(k.secret_pkcs1_der()).ok(),
        _ => None,
    }
    .map(|k| ring::signature::KeyPair::public_key(&k).modulus_len() * 8);
    Ok(Identity {
        key: Arc::new(certified),
        rsa_bits,
        key_der: key.clone_key(),
    })
}

/// `*_tls_chain_files`: each file holds private keys, each followed (or,
/// in a file with one key, preceded) by its certificate chain.
pub(crate) fn chain_files(parameter: &str, files: &[String]) -> Result<Vec<Identity>, Error> {
    let mut out = Vec::new();
    for path in files {
        let mut key: Option<PrivateKeyDer<'static>> = None;
        let mut chain = Vec::new();
        for (kind, der) in sections(parameter, path)? {
            if kind == SectionKind::Certificate {
                chain.push(CertificateDer::from(der));
            } else if let Some(k) = private_key(kind, der) {
                if let Some(prev) = key.take() {
                    out.push(identity(
                        parameter,
                        path,
                        std::mem::take(&mut chain),
                        &prev,
                    )?);
                } else if !chain.is_empty() && out.is_empty() {
                    // Certificate first, then its key.
                    out.push(identity(parameter, path, std::mem::take(&mut chain), &k)?);
                    continue;
                }
                key = Some(k);
            }
        }
        match key {
            Some(k) => out.push(identity(parameter, path, chain, &k)?),
            None if out.is_empty() => {
                return Err(load_error(
                    parameter,
                    "a private key",
                    path,
                    "no private key found",
                ))
            }
            None => {}
        }
    }
    Ok(out)
}

/// A `*_tls_cert_file` (certificate, then any intermediates) with its
/// `*_tls_key_file` (which may be the same file).
pub(crate) fn cert_and_key(
    cert_parameter: &str,
    cert_path: &str,
    key_parameter: &str,
    key_path: &str,
) -> Result<Identity, Error> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| load_error(cert_parameter, "a certificate", cert_path, format!("{e:?}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(cert_parameter, "a certificate", cert_path, format!("{e:?}")))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| load_error(key_parameter, "a private key", key_path, format!("{e:?}")))?;
    identity(cert_parameter, cert_path, chain, &key)
}

/// Trust anchors from a `*_CAfile` and the files of a `*_CApath`.
pub(crate) fn roots(
    ca_file_parameter: &str,
    ca_file: &str,
    ca_path: &str,
) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    if !ca_file.is_empty() {
        let certs = CertificateDer::pem_file_iter(ca_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                load_error(
                    ca_file_parameter,
                    "CA certificates",
                    ca_file,
                    format!("{e:?}"),
                )
            })?;
        roots.add_parsable_certificates(certs);
    }
    if !ca_path.is_empty() {
        // As OpenSSL's hashed directory: every readable certificate counts;
        // anything else in it (a README, a broken link) is skipped.
        if let Ok(dir) = std::fs::read_dir(Path::new(ca_path)) {
            for entry in dir.flatten() {
                if let Ok(certs) = CertificateDer::pem_file_iter(entry.path())
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                {
                    roots.add_parsable_certificates(certs);
                }
            }
        }
    }
    Ok(roots)
}
