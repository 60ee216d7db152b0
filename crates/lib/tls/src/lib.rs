//! TLS for postfix-rs, with rustls, configured from Postfix's parameters.
//!
//! - [`server::Server`]: smtpd's side (`smtpd_tls_*`): certificates, the
//!   protocols, an optional request for a client certificate.
//! - [`client::Client`]: the smtp client's side (`smtp_tls_*`): the trust
//!   anchors and the security levels, from `may` to `secure`.
//! - [`Io`]: a stream that starts in plain text and may become TLS (STARTTLS).
//! - [`Negotiated`]: what a handshake agreed on, named as Postfix (and
//!   OpenSSL) name it in log lines and Received: headers.
//!
//! Only TLS 1.2 and 1.3 exist here: rustls implements nothing older, so a
//! protocol list that allows only older versions is refused.

mod certs;
pub mod client;
mod describe;
pub mod protocols;
pub mod server;
mod stream;

pub use describe::{Negotiated, PeerCert};
pub use stream::Io;

/// Why TLS could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{parameter}: cannot load {what} from {path}: {reason}")]
    Load {
        parameter: String,
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("TLS library problem: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto every configuration here uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The handshake signatures that the verifiers taking any certificate
/// (client.rs, server.rs) still check, with the provider's algorithms.
#[derive(Debug)]
struct Signatures(std::sync::Arc<rustls::crypto::CryptoProvider>);

type Checked = Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>;

impl Signatures {
    fn tls12(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Checked {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Checked {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
