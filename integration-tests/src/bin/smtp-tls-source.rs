//! smtp-tls-source: a load client for scripts/bench, like Postfix's
//! smtp-source but with STARTTLS: each session connects, says EHLO, starts
//! TLS (a full handshake, no resumption), says EHLO again and sends its
//! messages one after another. The server's certificate is not checked.
//! For the bench's curves it also runs without TLS (`-P`), sends each
//! message to several recipients (`-r N`: LOCAL+1@DOMAIN ... from `-t`),
//! and writes each message's latency to a file (`-L FILE`, microseconds
//! from the connect, or from MAIL for a session's later messages, to the
//! `250` after DATA; with `-w DIR` a second column, to the message's file
//! appearing in DIR, a Maildir's new/, for one session at a time).
//!
//! Usage: smtp-tls-source -s SESSIONS_AT_ONCE -m MESSAGES -l SIZE
//!        -n MESSAGES_PER_SESSION [-P] [-r RECIPIENTS] [-L FILE [-w DIR]]
//!        -f FROM -t TO HOST:PORT

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    plain: bool,
    recipients: usize,
    latency: Option<String>,
    watch: Option<std::path::PathBuf>,
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
        plain: false,
        recipients: 1,
        latency: None,
        watch: None,
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
            "-P" => a.plain = true,
            "-r" => a.recipients = value().parse().unwrap_or_else(|_| usage("-r")),
            "-L" => a.latency = Some(value()),
            "-w" => a.watch = Some(value().into()),
            s if !s.starts_with('-') => a.server = s.to_owned(),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if a.server.is_empty() || a.per_session == 0 || a.concurrency == 0 || a.recipients == 0 {
        usage("HOST:PORT, -n, -r and -s are needed");
    }
    if a.watch.is_some() && (a.concurrency != 1 || a.latency.is_none()) {
        usage("-w needs -s 1 and -L");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "smtp-tls-source: {why}\nusage: smtp-tls-source -s N -m N -l SIZE -n PER_SESSION [-P] [-r N] [-L FILE [-w DIR]] -f FROM -t TO HOST:PORT"
    );
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

/// The recipients of each message: `-t` itself, or LOCAL+i@DOMAIN.
fn recipients(a: &Args) -> Vec<String> {
    if a.recipients == 1 {
        return vec![a.to.clone()];
    }
    let (local, domain) = a.to.split_once('@').unwrap_or((&a.to, "localhost"));
    (1..=a.recipients)
        .map(|i| format!("{local}+{i}@{domain}"))
        .collect()
}

/// How many entries `dir` has.
fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Latencies in microseconds: to the `250`, and to the file in `-w DIR`.
type Latencies = Mutex<Vec<(u128, Option<u128>)>>;

async fn session(
    a: &Args,
    connector: &tokio_rustls::TlsConnector,
    n: usize,
    body: &[u8],
    latencies: &Latencies,
) -> Result<(), Error> {
    let mut start = Instant::now();
    let before = a.watch.as_deref().map(entries);
    let tcp = TcpStream::connect(&a.server).await?;
    tcp.set_nodelay(true)?;
    let mut plain = BufReader::new(tcp);
    reply(&mut plain, 220).await?;
    plain.get_mut().write_all(b"EHLO bench.example\r\n").await?;
    reply(&mut plain, 250).await?;
    let mut s: BufReader<Box<dyn Stream>> = if a.plain {
        BufReader::new(Box::new(plain.into_inner()))
    } else {
        plain.get_mut().write_all(b"STARTTLS\r\n").await?;
        reply(&mut plain, 220).await?;
        let name = rustls::pki_types::ServerName::try_from("mail.ywnds.com")?;
        let tls = connector.connect(name, plain.into_inner()).await?;
        let mut s = BufReader::new(Box::new(tls) as Box<dyn Stream>);
        s.get_mut().write_all(b"EHLO bench.example\r\n").await?;
        s.get_mut().flush().await?;
        reply(&mut s, 250).await?;
        s
    };
    let rcpts = recipients(a);
    for i in 0..n {
        if i > 0 {
            start = Instant::now();
        }
        let mut commands = vec![(format!("MAIL FROM:<{}>\r\n", a.from), 250)];
        commands.extend(rcpts.iter().map(|r| (format!("RCPT TO:<{r}>\r\n"), 250)));
        commands.push(("DATA\r\n".to_owned(), 354));
        for (cmd, want) in commands {
            s.get_mut().write_all(cmd.as_bytes()).await?;
            s.get_mut().flush().await?;
            reply(&mut s, want).await?;
        }
        s.get_mut().write_all(body).await?;
        s.get_mut().flush().await?;
        reply(&mut s, 250).await?;
        let acked = start.elapsed().as_micros();
        let filed = match (&a.watch, before) {
            (Some(dir), Some(n0)) => {
                // One session at a time: the next file in DIR is this one.
                while entries(dir) < n0 + i + 1 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                Some(start.elapsed().as_micros())
            }
            _ => None,
        };
        if a.latency.is_some() {
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((acked, filed));
        }
    }
    s.get_mut().write_all(b"QUIT\r\n").await?;
    s.get_mut().flush().await?;
    reply(&mut s, 221).await?;
    Ok(())
}

/// A connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

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
    let latencies = Arc::new(Latencies::default());
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (a, connector, body, next, latencies) = (
            a.clone(),
            connector.clone(),
            body.clone(),
            next.clone(),
            latencies.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(a.per_session, Ordering::Relaxed);
                if start >= a.messages {
                    return Ok::<(), Error>(());
                }
                let n = a.per_session.min(a.messages - start);
                session(&a, &connector, n, &body, &latencies).await?;
            }
        }));
    }
    for w in workers {
        if let Err(e) = w.await.expect("worker") {
            eprintln!("smtp-tls-source: {e}");
            std::process::exit(1);
        }
    }
    if let Some(path) = &a.latency {
        let lines: String = latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(acked, filed)| match filed {
                Some(f) => format!("{acked} {f}\n"),
                None => format!("{acked}\n"),
            })
            .collect();
        if let Err(e) = std::fs::write(path, lines) {
            eprintln!("smtp-tls-source: {path}: {e}");
            std::process::exit(1);
        }
    }
}
