//! The smtp client's side of TLS: Postfix's `smtp_tls_*` parameters and
//! security levels.
//!
//! The handshake itself takes any certificate the server can prove it holds;
//! the chain and names are judged afterwards, as Postfix does, so the log
//! line can say `Untrusted`, `Trusted` or `Verified` at every level and the
//! `verify` and `secure` levels can refuse what is not verified.

use std::sync::Arc;

use pfx_config::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::certs;
use crate::describe::{self, Negotiated};
use crate::Error;

/// `smtp_tls_security_level` (and the `smtp_tls_policy_maps` levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
    Secure,
}

impl Level {
    /// Postfix's names; `dane`, `dane-only` and `fingerprint` are not
    /// implemented and are refused rather than weakened.
    pub fn parse(value: &str) -> Result<Self, Error> {
        Ok(match value.to_ascii_lowercase().as_str() {
            "" | "none" => Self::None,
            "may" => Self::May,
            "encrypt" => Self::Encrypt,
            "verify" => Self::Verify,
            "secure" => Self::Secure,
            other => {
                return Err(Error::Config(format!(
                    "TLS security level \"{other}\": not implemented by postfix-rs"
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::May => "may",
            Self::Encrypt => "encrypt",
            Self::Verify => "verify",
            Self::Secure => "secure",
        }
    }

    /// Whether mail may not go without TLS.
    pub fn mandatory(self) -> bool {
        self >= Self::Encrypt
    }
}

/// How far the server's certificate was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trust {
    /// Not signed by a trusted CA (or no CA is configured).
    Untrusted,
    /// Signed by a trusted CA, but for another name.
    Trusted,
    /// Signed by a trusted CA for a name that was expected.
    Verified,
}

impl Trust {
    /// The word that starts Postfix's `… TLS connection established to …` line.
    pub fn word(self) -> &'static str {
        match self {
            Self::Untrusted => "Untrusted",
            Self::Trusted => "Trusted",
            Self::Verified => "Verified",
        }
    }
}

/// A TLS client set up from main.cf.
#[derive(Debug)]
pub struct Client {
    /// `smtp_tls_protocols`, for `may`.
    opportunistic: Arc<ClientConfig>,
    /// `smtp_tls_mandatory_protocols`, for `encrypt` and above.
    mandatory: Arc<ClientConfig>,
    /// The trust anchors of `smtp_tls_CAfile` and `smtp_tls_CApath`; none configured: `None`.
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Client {
    pub fn from_config(cfg: &Config) -> Result<Self, Error> {
        let get = |n: &str| cfg.get(n).map_err(|e| Error::Config(e.to_string()));
        let provider = crate::provider();
        let roots = certs::roots(
            "smtp_tls_CAfile",
            &get("smtp_tls_CAfile")?,
            &get("smtp_tls_CApath")?,
        )?;
        let verifier = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::Config(format!("smtp_tls_CAfile: {e}")))?,
            )
        };
        let cert = get("smtp_tls_cert_file")?;
        let identity = if cert.is_empty() {
            None
        } else {
            let mut key = get("smtp_tls_key_file")?;
            if key.is_empty() {
                key.clone_from(&cert);
            }
            Some(certs::cert_and_key(
                "smtp_tls_cert_file",
                &cert,
                "smtp_tls_key_file",
                &key,
            )?)
        };
        let build = |parameter: &str| -> Result<Arc<ClientConfig>, Error> {
            let versions = crate::protocols::parse(parameter, &get(parameter)?)?;
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(crate::Signatures(
                    provider.clone(),
                ))));
            let mut config = match &identity {
                Some(i) => {
                    builder.with_client_auth_cert(i.key.cert.clone(), i.key_der.clone_key())?
                }
                None => builder.with_no_client_auth(),
            };
            // smtp_tls_servername is empty by default: Postfix sends no SNI.
            config.enable_sni = false;
            Ok(Arc::new(config))
        };
        Ok(Self {
            opportunistic: build("smtp_tls_protocols")?,
            mandatory: build("smtp_tls_mandatory_protocols")?,
            verifier,
        })
    }

    /// Performs the client side of a handshake on `io` with the server
    /// `host`, and judges its certificate against `names` (the MX host name
    /// for `verify`, the next-hop domain for `secure`).
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        level: Level,
        host: &str,
        names: &[String],
    ) -> std::io::Result<(tokio_rustls::client::TlsStream<S>, Negotiated, Trust)> {
        let config = if level.mandatory() {
            self.mandatory.clone()
        } else {
            self.opportunistic.clone()
        };
        let server_name = ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
            ServerName::try_from("invalid.invalid")
                .expect("valid name")
                .to_owned()
        });
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, io)
            .await?;
        let conn = stream.get_ref().1;
        let (cipher, bits) = describe::cipher(conn.negotiated_cipher_suite().map(|s| s.suite()));
        let chain = conn.peer_certificates().unwrap_or_default();
        let trust = self.judge(chain, names);
        let negotiated = Negotiated {
            protocol: describe::protocol(conn.protocol_version()),
            cipher,
            bits,
            key_exchange: describe::key_exchange(
                conn.negotiated_key_exchange_group().map(|g| g.name()),
            ),
            signature: None,
            peer: chain.first().map(|c| describe::PeerCert::new(c)),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        Ok((stream, negotiated, trust))
    }

    fn judge(&self, chain: &[CertificateDer<'static>], names: &[String]) -> Trust {
        let (Some(verifier), Some((end, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return Trust::Untrusted;
        };
        let now = UnixTime::now();
        let mut trust = Trust::Untrusted;
        for name in names {
            let Ok(server_name) = ServerName::try_from(name.as_str()) else {
                continue;
            };
            match verifier.verify_server_cert(end, intermediates, &server_name, &[], now) {
                Ok(_) => return Trust::Verified,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => trust = Trust::Trusted,
                Err(_) => {}
            }
        }
        trust
    }
}

/// Accepts the server's certificate during the handshake (its signatures
/// are still checked); [`Client::judge`] decides what it is worth.
#[derive(Debug)]
struct AnyServerCert(crate::Signatures);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}
