//! smtp-tls-source: a load client for scripts/bench, like Postfix's
//! smtp-source but with STARTTLS: each session connects, says EHLO, starts
//! TLS (a full handshake, no resumption), says EHLO again and sends its
//! messages one after another. The server's certificate is not checked.
//!
//! Usage: smtp-tls-source -s SESSIONS_AT_ONCE -m MESSAGES -l SIZE
//!        -n MESSAGES_PER_SESSION -f FROM -t TO HOST:PORT

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    concurrency: usize,
    messages: usize,
    size: usize,
    per_session: usize,
    from: String,
    to: String,
    server: String,
}

fn args() -> Args {
    let mut a = Args {
        concurrency: 20,
        messages: 1000,
        size: 1024,
        per_session: 10,
        from: "bench@example.org".into(),
        to: "bench@example.org".into(),
        server: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-s" => a.concurrency = value().parse().unwrap_or_else(|_| usage("-s")),
            "-m" => a.messages = value().parse().unwrap_or_else(|_| usage("-m")),
            "-l" => a.size = value().parse().unwrap_or_else(|_| usage("-l")),
            "-n" => a.per_session = value().parse().unwrap_or_else(|_| usage("-n")),
            "-f" => a.from = value(),
            "-t" => a.to = value(),
            s if !s.starts_with('-') => a.server = s.to_owned(),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if a.server.is_empty() || a.per_session == 0 || a.concurrency == 0 {
        usage("HOST:PORT, -n and -s are needed");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("smtp-tls-source: {why}\nusage: smtp-tls-source -s N -m N -l SIZE -n PER_SESSION -f FROM -t TO HOST:PORT");
    std::process::exit(2)
}

/// Takes the server's certificate as it is: the bench measures the
/// servers, not certificate checking.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, want: u16) -> Result<(), Error> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err("connection closed".into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code != want {
                return Err(format!("expected {want}, got: {}", line.trim_end()).into());
            }
            return Ok(());
        }
    }
}

async fn session(
    a: &Args,
    connector: &tokio_rustls::TlsConnector,
    n: usize,
    body: &[u8],
) -> Result<(), Error> {
    let tcp = TcpStream::connect(&a.server).await?;
    tcp.set_nodelay(true)?;
    let mut plain = BufReader::new(tcp);
    reply(&mut plain, 220).await?;
    plain.get_mut().write_all(b"EHLO bench.example\r\n").await?;
    reply(&mut plain, 250).await?;
    plain.get_mut().write_all(b"STARTTLS\r\n").await?;
    reply(&mut plain, 220).await?;
    let name = rustls::pki_types::ServerName::try_from("mail.ywnds.com")?;
    let tls = connector.connect(name, plain.into_inner()).await?;
    let mut s = BufReader::new(tls);
    s.get_mut().write_all(b"EHLO bench.example\r\n").await?;
    s.get_mut().flush().await?;
    reply(&mut s, 250).await?;
    for _ in 0..n {
        for (cmd, want) in [
            (format!("MAIL FROM:<{}>\r\n", a.from), 250),
            (format!("RCPT TO:<{}>\r\n", a.to), 250),
            ("DATA\r\n".to_owned(), 354),
        ] {
            s.get_mut().write_all(cmd.as_bytes()).await?;
            s.get_mut().flush().await?;
            reply(&mut s, want).await?;
        }
        s.get_mut().write_all(body).await?;
        s.get_mut().flush().await?;
        reply(&mut s, 250).await?;
    }
    s.get_mut().write_all(b"QUIT\r\n").await?;
    s.get_mut().flush().await?;
    reply(&mut s, 221).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Arc::new(args());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    // Every session a full handshake: no resumption from an earlier one.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut body = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: smtp-tls-source\r\n\r\n",
        a.from, a.to
    )
    .into_bytes();
    while body.len() < a.size {
        body.extend_from_slice(
            b"La de da de da 1 2 3 4 5 6 7 8 9 0 La de da de da 1 2 3 4 5 6 7\r\n",
        );
    }
    body.extend_from_slice(b".\r\n");
    let body = Arc::new(body);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (a, connector, body, next) = (a.clone(), connector.clone(), body.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(a.per_session, Ordering::Relaxed);
                if start >= a.messages {
                    return Ok::<(), Error>(());
                }
                let n = a.per_session.min(a.messages - start);
                session(&a, &connector, n, &body).await?;
            }
        }));
    }
    for w in workers {
        if let Err(e) = w.await.expect("worker") {
            eprintln!("smtp-tls-source: {e}");
            std::process::exit(1);
        }
    }
}
