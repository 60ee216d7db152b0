//! The anvil client: each smtpd process keeps one connection to anvil(8)
//! and sends the events of all its sessions over it, one request at a time
//! (anvil answers from memory).
//!
//! anvil counts per stream too: when this connection closes (the smtpd
//! exits, or the connection is dropped here), anvil takes back the
//! connections registered over it. A connection that fails is replaced once
//! per request (anvil restarts on reload); when that fails too, the event
//! gets [`Unavailable`] and smtpd applies no limit, as Postfix's smtpd does
//! when anvil cannot be reached. Only the first failure of an outage says
//! so ([`Unavailable::first`]), and for [`RETRY_AFTER`] after a failure no
//! new connection is tried, so a missing anvil costs sessions nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::proto::{conversation, endpoint, AnvilEvent, AnvilReply, AnvilRequest, AnvilStatus};
use crate::{client, Channel, Error};

/// anvil answers from memory: one that takes this long is stuck.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// After a failed attempt, how long events go without asking.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// anvil could not be asked; no limit applies to this event.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Unavailable {
    pub error: Error,
    /// The first failure since anvil last answered (or since the start):
    /// the one the caller logs.
    pub first: bool,
}

/// One smtpd process's connection to anvil.
#[derive(Debug)]
pub struct Anvil {
    /// The socket, for the log line (`private/anvil`) and to connect.
    name: String,
    path: PathBuf,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    conn: Option<Channel<crate::Socket>>,
    /// A request went out and its answer was not read (the asker was
    /// cancelled): the connection is out of step and is replaced.
    pending: bool,
    /// When the last attempt failed, while anvil is unavailable.
    down_since: Option<Instant>,
}

/// anvil's name for a client of a service: `service:address`, with
/// anything unprintable made `?`, as Postfix's anvil client makes it.
pub fn ident(service: &str, addr: &str) -> String {
    format!("{service}:{addr}")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Anvil {
    /// The anvil service of the instance whose queue is `queue_dir`.
    pub fn under(queue_dir: &Path) -> Self {
        Self::new(endpoint::ANVIL, queue_dir.join(endpoint::ANVIL))
    }

    /// anvil at `path`; `name` is how warnings call it.
    pub fn new(name: &str, path: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            path,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// How Postfix names the service in its warnings: `private/anvil`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers a connection: `(connections open, connections this time unit)`.
    pub async fn connect(&self, ident: &str) -> Result<(u32, u32), Unavailable> {
        match self.request(AnvilEvent::Connect, ident).await? {
            AnvilReply::Connected { count, rate } => Ok((count, rate)),
            _ => unreachable!("checked by answers()"),
        }
    }

    /// Ends a connection registered with [`Anvil::connect`].
    pub async fn disconnect(&self, ident: &str) -> Result<(), Unavailable> {
        self.request(AnvilEvent::Disconnect, ident).await.map(drop)
    }

    /// Reports `event` (Message, Recipient, NewTls, Auth), or asks for its
    /// rate (NewTlsStatus): the rate this time unit.
    pub async fn rate(&self, event: AnvilEvent, ident: &str) -> Result<u32, Unavailable> {
        match self.request(event, ident).await? {
            AnvilReply::Rate(n) => Ok(n),
            _ => unreachable!("checked by answers()"),
        }
    }

    /// Every counter of `ident`, counting nothing.
    pub async fn lookup(&self, ident: &str) -> Result<AnvilStatus, Unavailable> {
        match self.request(AnvilEvent::Lookup, ident).await? {
            AnvilReply::Status(s) => Ok(s),
            _ => unreachable!("checked by answers()"),
        }
    }

    async fn request(&self, event: AnvilEvent, ident: &str) -> Result<AnvilReply, Unavailable> {
        let req = AnvilRequest {
            event,
            ident: ident.to_owned(),
        };
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        if std::mem::take(&mut st.pending) {
            st.conn = None;
        }
        if let Some(ch) = st.conn.as_mut() {
            st.pending = true;
            let answer = ask(ch, &req).await;
            st.pending = false;
            match answer {
                Ok(r) => return Ok(r),
                // anvil restarted, or went away: one new connection.
                Err(_) => st.conn = None,
            }
        } else if st
            .down_since
            .is_some_and(|since| since.elapsed() < RETRY_AFTER)
        {
            return Err(Unavailable {
                error: Error::Io(std::io::Error::other("not retried yet")),
                first: false,
            });
        }
        let fresh = async {
            let mut ch = client::connect(&self.path, conversation::ANVIL).await?;
            let r = ask(&mut ch, &req).await?;
            Ok::<_, Error>((ch, r))
        };
        let fresh = tokio::time::timeout(ANSWER_WITHIN, fresh)
            .await
            .unwrap_or_else(|_| Err(Error::Io(std::io::ErrorKind::TimedOut.into())));
        match fresh {
            Ok((ch, r)) => {
                st.conn = Some(ch);
                st.down_since = None;
                Ok(r)
            }
            Err(error) => {
                let first = st.down_since.is_none();
                st.down_since = Some(Instant::now());
                Err(Unavailable { error, first })
            }
        }
    }
}

/// Sends one request and reads its answer, which must be the kind the
/// request asks for.
async fn ask(ch: &mut Channel<crate::Socket>, req: &AnvilRequest) -> Result<AnvilReply, Error> {
    let exchange = async {
        ch.send(req).await?;
        ch.expect::<AnvilReply>().await
    };
    let reply = tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    if answers(req.event, &reply) {
        Ok(reply)
    } else {
        Err(Error::Decode(format!(
            "anvil answered {reply:?} to {:?}",
            req.event
        )))
    }
}

/// Whether `reply` is the answer to `event`.
fn answers(event: AnvilEvent, reply: &AnvilReply) -> bool {
    use AnvilEvent as E;
    match reply {
        AnvilReply::Connected { .. } => event == E::Connect,
        AnvilReply::Done => event == E::Disconnect,
        AnvilReply::Status(_) => event == E::Lookup,
        AnvilReply::Rate(_) => matches!(
            event,
            E::Message | E::Recipient | E::NewTls | E::NewTlsStatus | E::Auth
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anvil stand-in that answers every request with a rate that
    /// grows by one, and closes each connection after `per_conn` answers.
    fn stand_in(dir: &Path, per_conn: usize) -> PathBuf {
        let path = dir.join("anvil");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((s, _)) = listener.accept().await {
                let mut ch = Channel::new(s);
                ch.handshake(conversation::ANVIL).await.unwrap();
                for _ in 0..per_conn {
                    let Ok(Some(req)) = ch.recv::<AnvilRequest>().await else {
                        break;
                    };
                    n += 1;
                    let reply = match req.event {
                        AnvilEvent::Connect => AnvilReply::Connected { count: n, rate: n },
                        AnvilEvent::Disconnect => AnvilReply::Done,
                        AnvilEvent::Lookup => AnvilReply::Status(AnvilStatus::default()),
                        _ => AnvilReply::Rate(n),
                    };
                    ch.send(&reply).await.unwrap();
                }
            }
        });
        path
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced_within_the_same_request() {
        let dir = tempfile::tempdir().unwrap();
        let anvil = Anvil::new("private/anvil", stand_in(dir.path(), 2));
        assert_eq!(anvil.connect("smtp:192.0.2.1").await.unwrap(), (1, 1));
        assert_eq!(
            anvil
                .rate(AnvilEvent::Message, "smtp:192.0.2.1")
                .await
                .unwrap(),
            2
        );
        // The stand-in closed that connection: the next request goes out
        // on a new one and still gets its answer.
        assert_eq!(
            anvil
                .rate(AnvilEvent::Recipient, "smtp:192.0.2.1")
                .await
                .unwrap(),
            3
        );
        anvil.disconnect("smtp:192.0.2.1").await.unwrap();
    }

    #[tokio::test]
    async fn an_absent_anvil_is_reported_once_and_not_asked_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let anvil = Anvil::new("private/anvil", dir.path().join("anvil"));
        let e = anvil.connect("smtp:192.0.2.1").await.unwrap_err();
        assert!(e.first, "{e}");
        assert!(e.to_string().contains("anvil"), "names the socket: {e}");
        // anvil appears, but within RETRY_AFTER nothing is tried, and
        // nothing is reported again.
        stand_in(dir.path(), 10);
        let e = anvil.rate(AnvilEvent::Message, "smtp:x").await.unwrap_err();
        assert!(!e.first);
        anvil.state.lock().await.down_since = Some(Instant::now() - RETRY_AFTER);
        assert_eq!(anvil.connect("smtp:192.0.2.1").await.unwrap(), (1, 1));
    }

    #[test]
    fn idents_are_service_colon_address_and_printable() {
        assert_eq!(ident("smtp", "192.0.2.1"), "smtp:192.0.2.1");
        assert_eq!(ident("127.0.0.1:2525", "::1"), "127.0.0.1:2525:::1");
        assert_eq!(ident("sm\ttp", "x\n"), "sm?tp:x?");
    }

    #[test]
    fn only_the_matching_reply_answers_a_request() {
        assert!(answers(
            AnvilEvent::Connect,
            &AnvilReply::Connected { count: 1, rate: 1 }
        ));
        assert!(!answers(AnvilEvent::Connect, &AnvilReply::Rate(1)));
        assert!(answers(AnvilEvent::NewTlsStatus, &AnvilReply::Rate(0)));
        assert!(!answers(AnvilEvent::Disconnect, &AnvilReply::Rate(0)));
        assert!(answers(AnvilEvent::Disconnect, &AnvilReply::Done));
    }
}
