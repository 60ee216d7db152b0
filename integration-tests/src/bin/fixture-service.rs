//! A stand-in daemon for supervision tests, built on the real daemon skeleton.
//!
//! On a stream endpoint each client gets `service=NAME pid=PID` and the session
//! lasts until the client closes (so tests can hold a maxproc slot); bytes the
//! client sends are logged as triggers, which is what master's wakeup sends.
//! On a FIFO it logs each trigger byte it reads.
//! On start and after each configuration reload it logs `fixture: NAME
//! myhostname=VALUE`, so tests can see which services re-read main.cf.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

fn main() {
    pfx_server::run("fixture-service", |ctx, endpoint| async move {
        let name = ctx.service.clone();
        let mut config = ctx.config.clone();
        let watch_name = name.clone();
        tokio::spawn(async move {
            loop {
                let host = config
                    .borrow_and_update()
                    .get("myhostname")
                    .unwrap_or_default();
                info!("fixture: {watch_name} myhostname={host}");
                if config.changed().await.is_err() {
                    break;
                }
            }
        });
        if let pfx_server::Endpoint::Fifo(_) = endpoint {
            return pfx_server::serve_triggers(&ctx, endpoint, move |bytes, _| {
                for &b in bytes {
                    info!("fixture: {name} trigger {}", char::from(b))
                }
                bytes.len()
            })
            .await;
        }
        let banner = format!("service={name} pid={}\n", std::process::id());
        pfx_server::serve_stream(&ctx, endpoint, move |stream| {
            let banner = banner.clone();
            let name = name.clone();
            async move {
                let (mut r, mut w): (
                    Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ) = match stream {
                    pfx_server::Stream::Tcp(s, _) => {
                        let (r, w) = s.into_split();
                        (Box::new(r), Box::new(w))
                    }
                    pfx_server::Stream::Unix(s) => {
                        let (r, w) = s.into_split();
                        (Box::new(r), Box::new(w))
                    }
                };
                let _ = w.write_all(banner.as_bytes()).await;
                let mut buf = [0u8; 256];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    for b in &buf[..n] {
                        info!("fixture: {name} trigger {}", char::from(*b));
                    }
                }
            }
        })
        .await
    })
}
