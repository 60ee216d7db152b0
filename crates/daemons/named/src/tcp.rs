//! TCP: each connection's queries (a two-byte length, then the message,
//! RFC 1035 §4.2.2) answered in order through the same path as UDP's, its
//! cache of encoded answers included, so a client that retries over TCP
//! after a truncated answer costs no more than over UDP. A connection
//! silent for `TCP_IDLE`, or one that breaks the framing, is closed.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::serve::Handler;
use crate::udp;

/// How long a TCP client may stay silent before named closes the connection.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Accepts on each listener (inside the runtime).
pub(crate) fn spawn(listeners: Vec<std::net::TcpListener>, handler: Handler) -> Result<(), String> {
    for l in listeners {
        let l = TcpListener::from_std(l).map_err(|e| e.to_string())?;
        let handler = handler.clone();
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((stream, src)) => {
                        if handler.dropped(src.ip()) {
                            continue;
                        }
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            let _ = serve(stream, src, handler).await;
                        });
                    }
                    Err(e) => {
                        warn!("TCP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    Ok(())
}

async fn serve(stream: TcpStream, src: SocketAddr, handler: Handler) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?.ip();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, rd.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, rd.read_exact(&mut q)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        if !answer_into(&mut out, &handler, q, src, local).await {
            wr.write_all(&out).await?;
            return Ok(());
        }
        // Queries the client pipelined and that already arrived are
        // answered before writing, so their answers go in one write.
        while let Some(q) = buffered_query(rd.buffer()) {
            rd.consume(q.len() + 2);
            if !answer_into(&mut out, &handler, q, src, local).await {
                wr.write_all(&out).await?;
                return Ok(());
            }
        }
        wr.write_all(&out).await?;
        out.clear();
    }
}

/// A whole query (without its length) at the start of `buf`, if there is one.
fn buffered_query(buf: &[u8]) -> Option<Vec<u8>> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    buf.get(2..2 + len).map(<[u8]>::to_vec)
}

/// Appends the framed answer to `q` (a zone transfer's many messages);
/// false when the connection is to go
/// (a query without even a header gets no answer, as BIND closes it).
async fn answer_into(
    out: &mut Vec<u8>,
    handler: &Handler,
    q: Vec<u8>,
    src: SocketAddr,
    local: std::net::IpAddr,
) -> bool {
    let replies = match udp::from_cache(handler, &q, src, local) {
        udp::Fast::Answer(a) => vec![a],
        udp::Fast::Drop => Vec::new(),
        udp::Fast::Miss => {
            let all = udp::answer(handler.clone(), q.clone(), src, local, Protocol::Tcp).await;
            if all.is_empty() {
                udp::format_error(&q).into_iter().collect()
            } else {
                all
            }
        }
    };
    if replies.is_empty() {
        return false;
    }
    for a in replies {
        let Ok(n) = u16::try_from(a.len()) else {
            return false;
        };
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&a);
    }
    true
}
