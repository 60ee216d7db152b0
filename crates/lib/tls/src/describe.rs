//! What a handshake agreed on, in the words Postfix's log lines and
//! Received: headers use (OpenSSL's names for protocols, ciphers and curves).

use rustls::{CipherSuite, NamedGroup, ProtocolVersion, SignatureScheme};

/// One TLS session's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.3`.
    pub protocol: &'static str,
    /// `TLS_AES_256_GCM_SHA384`, `ECDHE-RSA-AES256-GCM-SHA384`.
    pub cipher: String,
    /// Secret bits of the cipher (used and algorithm bits are the same for
    /// every cipher rustls has).
    pub bits: u16,
    /// `X25519`, `ECDHE (prime256v1)`.
    pub key_exchange: Option<String>,
    /// `RSA-PSS (2048 bits) server-digest SHA256`, when known.
    pub signature: Option<String>,
    /// The peer's certificate, when it showed one.
    pub peer: Option<PeerCert>,
    /// The handshake resumed an earlier session (no new key exchange with
    /// the certificate's key).
    pub resumed: bool,
}

/// What Postfix shows of a peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's common name (empty when it has none).
    pub subject_cn: String,
    /// The issuer's common name.
    pub issuer_cn: String,
    /// SHA-256 of the certificate, `AB:CD:…` (`smtpd_tls_fingerprint_digest = sha256`).
    pub fingerprint: String,
    /// SHA-256 of its public key (the SubjectPublicKeyInfo).
    pub pkey_fingerprint: String,
}

impl PeerCert {
    pub(crate) fn new(der: &[u8]) -> Self {
        let (subject_cn, issuer_cn, pkey) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => {
                let cn = |name: &x509_parser::x509::X509Name<'_>| {
                    let text = name
                        .iter_common_name()
                        .next()
                        .and_then(|a| a.as_str().ok())
                        .unwrap_or("");
                    printable(text)
                };
                let spki = fingerprint(cert.public_key().raw);
                (cn(cert.subject()), cn(cert.issuer()), spki)
            }
            Err(_) => (String::new(), String::new(), String::new()),
        };
        Self {
            subject_cn,
            issuer_cn,
            fingerprint: fingerprint(der),
            pkey_fingerprint: pkey,
        }
    }
}

pub(crate) fn protocol(v: Option<ProtocolVersion>) -> &'static str {
    match v {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

/// OpenSSL's name of a cipher suite, and its bits.
pub(crate) fn cipher(s: Option<CipherSuite>) -> (String, u16) {
    let Some(s) = s else {
        return ("unknown".into(), 0);
    };
    let iana = format!("{s:?}");
    let bits = if iana.contains("AES_128") { 128 } else { 256 };
    let name = if let Some(rest) = iana.strip_prefix("TLS13_") {
        format!("TLS_{rest}")
    } else if let Some(rest) = iana.strip_prefix("TLS_ECDHE_") {
        // TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 -> ECDHE-RSA-AES256-GCM-SHA384
        let (auth, cipher) = rest.split_once("_WITH_").unwrap_or((rest, ""));
        let cipher = cipher
            .replace("AES_128", "AES128")
            .replace("AES_256", "AES256")
            .replace("CHACHA20_POLY1305_SHA256", "CHACHA20-POLY1305")
            .replace('_', "-");
        format!("ECDHE-{auth}-{cipher}")
    } else {
        iana
    };
    (name, bits)
}

pub(crate) fn key_exchange(g: Option<NamedGroup>) -> Option<String> {
    Some(match g? {
        NamedGroup::X25519 => "X25519".into(),
        NamedGroup::X448 => "X448".into(),
        NamedGroup::secp256r1 => "ECDHE (prime256v1)".into(),
        NamedGroup::secp384r1 => "ECDHE (secp384r1)".into(),
        NamedGroup::secp521r1 => "ECDHE (secp521r1)".into(),
        other => format!("{other:?}"),
    })
}

/// `RSA-PSS (2048 bits) server-digest SHA256` for a signature scheme.
pub(crate) fn signature(s: SignatureScheme, rsa_bits: Option<usize>) -> String {
    use SignatureScheme as S;
    let (name, size, digest) = match s {
        S::RSA_PSS_SHA256 => ("RSA-PSS", None, "SHA256"),
        S::RSA_PSS_SHA384 => ("RSA-PSS", None, "SHA384"),
        S::RSA_PSS_SHA512 => ("RSA-PSS", None, "SHA512"),
        S::RSA_PKCS1_SHA256 => ("RSA", None, "SHA256"),
        S::RSA_PKCS1_SHA384 => ("RSA", None, "SHA384"),
        S::RSA_PKCS1_SHA512 => ("RSA", None, "SHA512"),
        S::ECDSA_NISTP256_SHA256 => ("ECDSA", Some("prime256v1"), "SHA256"),
        S::ECDSA_NISTP384_SHA384 => ("ECDSA", Some("secp384r1"), "SHA384"),
        S::ECDSA_NISTP521_SHA512 => ("ECDSA", Some("secp521r1"), "SHA512"),
        S::ED25519 => return "ED25519".into(),
        other => return format!("{other:?}"),
    };
    let size = match (size, rsa_bits) {
        (Some(curve), _) => format!(" ({curve})"),
        (None, Some(bits)) => format!(" ({bits} bits)"),
        (None, None) => String::new(),
    };
    format!("{name}{size} server-digest {digest}")
}

/// A name from a peer's certificate as it may go into a header or a log
/// line: none when it holds a NUL (as Postfix), and every control
/// character or `"` made `?`, so a certificate cannot add lines of its own.
fn printable(text: &str) -> String {
    if text.contains('\0') {
        return String::new();
    }
    text.chars()
        .map(|c| if c.is_control() || c == '"' { '?' } else { c })
        .collect()
}

/// SHA-256 of a certificate, as Postfix prints fingerprints.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Negotiated {
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange
    /// X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256`, as
    /// in Postfix's `… TLS connection established …` line.
    pub fn summary(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits){}",
            self.protocol,
            self.cipher,
            self.bits,
            self.bits,
            self.tls13_details()
        )
    }

    /// ` key-exchange X25519 server-signature …`: what OpenSSL reports to
    /// Postfix for TLS 1.3 only; empty otherwise.
    fn tls13_details(&self) -> String {
        let mut s = String::new();
        if self.protocol != "TLSv1.3" {
            return s;
        }
        if let Some(k) = &self.key_exchange {
            s.push_str(" key-exchange ");
            s.push_str(k);
        }
        if let Some(sig) = &self.signature {
            s.push_str(" server-signature ");
            s.push_str(sig);
        }
        s
    }

    /// The TLS lines of smtpd's Received: header (`smtpd_tls_received_header`),
    /// each starting with a tab, no newline after the last.
    pub fn received_lines(&self, asked_for_certificate: bool) -> String {
        let mut s = format!(
            "\t(using {} with cipher {} ({}/{} bits)",
            self.protocol, self.cipher, self.bits, self.bits
        );
        let details = self.tls13_details();
        if !details.is_empty() {
            s.push_str("\n\t");
            s.push_str(&details);
        }
        s.push_str(")\n\t(");
        match (&self.peer, asked_for_certificate) {
            // Only requested, never checked against a CA: "not verified".
            (Some(p), _) => s.push_str(&format!(
                "Client CN \"{}\", Issuer \"{}\" (not verified)",
                p.subject_cn, p.issuer_cn
            )),
            (None, true) => s.push_str("Client did not present a certificate"),
            (None, false) => s.push_str("No client certificate requested"),
        }
        s.push(')');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_names() {
        assert_eq!(
            cipher(Some(CipherSuite::TLS13_AES_256_GCM_SHA384)),
            ("TLS_AES_256_GCM_SHA384".into(), 256)
        );
        assert_eq!(
            cipher(Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)),
            ("ECDHE-RSA-AES128-GCM-SHA256".into(), 128)
        );
        assert_eq!(
            cipher(Some(
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            )),
            ("ECDHE-ECDSA-CHACHA20-POLY1305".into(), 256)
        );
        assert_eq!(
            key_exchange(Some(NamedGroup::secp256r1)).unwrap(),
            "ECDHE (prime256v1)"
        );
        assert_eq!(
            signature(SignatureScheme::RSA_PSS_SHA256, Some(2048)),
            "RSA-PSS (2048 bits) server-digest SHA256"
        );
        assert_eq!(
            signature(SignatureScheme::ECDSA_NISTP256_SHA256, None),
            "ECDSA (prime256v1) server-digest SHA256"
        );
    }

    #[test]
    fn certificate_names_cannot_add_lines() {
        assert_eq!(printable("laptop\r\nX-Evil: yes"), "laptop??X-Evil: yes");
        assert_eq!(printable("a\"b"), "a?b");
        assert_eq!(printable("nul\0here"), "");
        assert_eq!(printable("Zoë"), "Zoë");
    }

    #[test]
    fn postfix_summary_and_received() {
        let n = Negotiated {
            protocol: "TLSv1.3",
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            key_exchange: Some("X25519".into()),
            signature: Some("RSA-PSS (2048 bits) server-digest SHA256".into()),
            peer: None,
            resumed: false,
        };
        assert_eq!(n.summary(), "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256");
        assert_eq!(n.received_lines(false), "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\t(No client certificate requested)");
    }
}
