//! smtpd's side of TLS: Postfix's `smtpd_tls_*` parameters as a rustls
//! server configuration, and the handshake that reports what it agreed on.

use std::sync::Arc;

use pfx_config::Config;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use crate::certs::{self, Identity};
use crate::describe::{self, Negotiated};
use crate::Error;

/// A TLS server set up from main.cf (and master.cf `-o` overrides).
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    identities: Arc<Identities>,
    /// `smtpd_tls_ask_ccert`: a client certificate is requested (never required).
    pub ask_ccert: bool,
}

/// The server's keys: the first that can sign with a scheme the client
/// offers is used (an ECDSA key for clients that prefer it, RSA for the rest).
#[derive(Debug)]
struct Identities(Vec<Identity>);

impl Identities {
    fn pick(&self, offered: &[SignatureScheme]) -> Option<(&Identity, SignatureScheme)> {
        self.0.iter().find_map(|i| {
            i.key
                .key
                .choose_scheme(offered)
                .map(|signer| (i, signer.scheme()))
        })
    }
}

impl ResolvesServerCert for Identities {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.signature_schemes())
            .map(|(i, _)| i.key.clone())
    }
}

impl Server {
    /// From `smtpd_tls_chain_files`, or `smtpd_tls_cert_file`/`_key_file`
    /// and `smtpd_tls_eccert_file`/`_eckey_file`; the protocols from
    /// `smtpd_tls_mandatory_protocols` when TLS is `mandatory` (level
    /// `encrypt`), else `smtpd_tls_protocols`.
    pub fn from_config(cfg: &Config, mandatory: bool) -> Result<Self, Error> {
        let get = |n: &str| cfg.get(n).map_err(|e| Error::Config(e.to_string()));
        let chain_files = cfg
            .list("smtpd_tls_chain_files")
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut identities = Vec::new();
        if !chain_files.is_empty() {
            identities = certs::chain_files("smtpd_tls_chain_files", &chain_files)?;
        } else {
            for (cert, key) in [
                ("smtpd_tls_cert_file", "smtpd_tls_key_file"),
                ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
            ] {
                let cert_path = get(cert)?;
                if cert_path.is_empty() {
                    continue;
                }
                let mut key_path = get(key)?;
                if key_path.is_empty() {
                    key_path.clone_from(&cert_path);
                }
                identities.push(certs::cert_and_key(cert, &cert_path, key, &key_path)?);
            }
            if !get("smtpd_tls_dcert_file")?.is_empty() {
                return Err(Error::Config(
                    "smtpd_tls_dcert_file: DSA certificates are not implemented by postfix-rs"
                        .into(),
                ));
            }
        }
        if identities.is_empty() {
            return Err(Error::Config(
                "No server certs available. TLS won't be enabled".into(),
            ));
        }
        let protocols_parameter = if mandatory {
            "smtpd_tls_mandatory_protocols"
        } else {
            "smtpd_tls_protocols"
        };
        let versions = crate::protocols::parse(protocols_parameter, &get(protocols_parameter)?)?;
        let ask_ccert = cfg
            .bool("smtpd_tls_ask_ccert")
            .map_err(|e| Error::Config(e.to_string()))?;
        let provider = crate::provider();
        let identities = Arc::new(Identities(identities));
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;
        let builder = if ask_ccert {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert(crate::Signatures(provider))))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(identities.clone());
        // Postfix speaks no ALPN on port 25; a session cache in memory
        // serves resumption within one smtpd process.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        Ok(Self {
            config: Arc::new(config),
            identities,
            ask_ccert,
        })
    }

    /// Performs the server side of a handshake on `io`.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<S>, Negotiated)> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        let picked = self
            .identities
            .pick(start.client_hello().signature_schemes())
            .map(|(i, scheme)| describe::signature(scheme, i.rsa_bits));
        let stream = start.into_stream(self.config.clone()).await?;
        let conn = stream.get_ref().1;
        let (cipher, bits) = describe::cipher(conn.negotiated_cipher_suite().map(|s| s.suite()));
        let negotiated = Negotiated {
            protocol: describe::protocol(conn.protocol_version()),
            cipher,
            bits,
            key_exchange: describe::key_exchange(
                conn.negotiated_key_exchange_group().map(|g| g.name()),
            ),
            signature: picked,
            peer: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| describe::PeerCert::new(c)),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        Ok((stream, negotiated))
    }
}

/// `smtpd_tls_ask_ccert` without trust anchors: any certificate the client
/// can prove it holds is taken, as "not verified"; none is required.
#[derive(Debug)]
struct AnyClientCert(crate::Signatures);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
