//! The cleanup client: the Begin → Started → Content → End → Committed
//! conversation every submitter (smtpd, pickup, bounce, local) holds with
//! cleanup, on connections kept for the next message.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::proto::{conversation, endpoint, CleanupReply, CleanupRequest, Origin, Receive, CHUNK};
use crate::{client, Channel, Error};

type Conn = Channel<crate::Socket>;

pub use pfx_queue::file::NewRecipient;

/// The envelope that opens a message.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<NewRecipient>,
    pub attrs: Vec<(String, String)>,
    pub origin: Origin,
    pub receive: Receive,
    /// The first arrival of mail queued before (`postsuper -r`).
    pub arrival: Option<std::time::SystemTime>,
}

/// Why cleanup did not start a message.
#[derive(Debug, thiserror::Error)]
pub enum NotStarted {
    /// It answered that it cannot (no queue file); its connection stays usable.
    #[error("{0}")]
    Refused(String),
    /// The connection failed.
    #[error("{0}")]
    Broken(#[from] Error),
}

/// Why [`Cleanup::submit`] queued nothing.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Ipc(#[from] Error),
    #[error("cleanup: {0}")]
    NotStarted(String),
    #[error("read message: {0}")]
    Read(std::io::Error),
    /// cleanup's reason for not committing the message.
    #[error("{0}")]
    Failed(String),
    #[error("message file too big")]
    TooBig,
    #[error("too many hops")]
    TooManyHops,
    /// The content inspection or a milter refused it for now (a 4.x.x
    /// status: it is tried again later).
    #[error("{0}")]
    Rejected(String),
    #[error("cleanup: unexpected reply {0}")]
    Unexpected(String),
}

/// Connections to one cleanup service; idle ones are reused by the next
/// message, so a busy submitter does not connect for each.
#[derive(Debug)]
pub struct Cleanup {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
}

impl Cleanup {
    /// The cleanup service of the queue at `queue_dir`.
    pub fn under(queue_dir: &Path) -> Self {
        Self::at(queue_dir.join(endpoint::CLEANUP))
    }

    /// The cleanup service listening on `path`.
    pub fn at(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give_back(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    /// Opens a message: cleanup has a queue file for it and has named it. A
    /// reused connection found broken (cleanup restarted) is replaced once
    /// by a new one; a refusal is not tried again.
    pub async fn begin(&self, envelope: Envelope) -> Result<Message<'_>, NotStarted> {
        // A long list in frames of about a content chunk each, all but the
        // last ahead of Begin.
        let mut batches = vec![Vec::new()];
        let mut size = 0;
        for r in envelope.recipients {
            let len = r.address.len()
                + r.original.as_ref().map_or(0, String::len)
                + r.orcpt.as_ref().map_or(0, String::len)
                + 16;
            if size + len > CHUNK && batches.last().is_some_and(|b| !b.is_empty()) {
                batches.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(b) = batches.last_mut() {
                b.push(r);
            }
        }
        let tail = batches.pop().unwrap_or_default();
        let ahead: Vec<CleanupRequest> = batches
            .into_iter()
            .map(CleanupRequest::Recipients)
            .collect();
        let begin = CleanupRequest::Begin {
            sender: envelope.sender,
            recipients: tail,
            attrs: envelope.attrs,
            origin: envelope.origin,
            receive: envelope.receive,
            arrival: envelope.arrival,
        };
        async fn send_all(
            ch: &mut Conn,
            ahead: &[CleanupRequest],
            begin: &CleanupRequest,
        ) -> Result<(), Error> {
            for r in ahead {
                ch.queue(r)?;
            }
            ch.send(begin).await
        }
        if let Some(mut ch) = self.take_idle() {
            if send_all(&mut ch, &ahead, &begin).await.is_ok() {
                match self.started(ch).await {
                    Err(NotStarted::Broken(_)) => {}
                    answered => return answered,
                }
            }
        }
        let mut ch = client::connect(&self.path, conversation::CLEANUP).await?;
        send_all(&mut ch, &ahead, &begin).await?;
        self.started(ch).await
    }

    async fn started(&self, mut ch: Conn) -> Result<Message<'_>, NotStarted> {
        match ch.expect::<CleanupReply>().await? {
            CleanupReply::Started { queue_id } => Ok(Message {
                pool: self,
                ch,
                queue_id,
                broken: false,
            }),
            CleanupReply::Failed { reason, .. } => {
                self.give_back(ch);
                Err(NotStarted::Refused(reason))
            }
            other => Err(NotStarted::Broken(Error::Decode(format!(
                "unexpected reply {other:?}"
            )))),
        }
    }

    /// Submits a whole message and returns its queue ID once it is durable.
    /// `content` yields the message in pieces (LF line ends); `started` is
    /// called with the queue ID as soon as cleanup has opened the file
    /// (pickup logs it then, before cleanup's own lines).
    pub async fn submit(
        &self,
        envelope: Envelope,
        content: impl IntoIterator<Item = std::io::Result<Vec<u8>>>,
        started: impl FnOnce(&str),
    ) -> Result<String, SubmitError> {
        let mut msg = self.begin(envelope).await.map_err(|e| match e {
            NotStarted::Refused(reason) => SubmitError::NotStarted(reason),
            NotStarted::Broken(e) => SubmitError::Ipc(e),
        })?;
        started(msg.queue_id());
        for piece in content {
            match piece {
                Ok(c) => msg.write(&c).await?,
                Err(e) => {
                    msg.abort().await;
                    return Err(SubmitError::Read(e));
                }
            }
        }
        match msg.end().await? {
            CleanupReply::Committed { queue_id } => Ok(queue_id),
            CleanupReply::Failed { reason, .. } => Err(SubmitError::Failed(reason)),
            CleanupReply::TooBig => Err(SubmitError::TooBig),
            CleanupReply::TooManyHops => Err(SubmitError::TooManyHops),
            CleanupReply::Rejected { reason, .. } => Err(SubmitError::Rejected(reason)),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// What [`Message::processed`] gives: the content for the milters, or
/// cleanup's final answer.
#[derive(Debug)]
pub enum Processed<'a> {
    Content(Vec<u8>, Message<'a>),
    Done(CleanupReply),
}

/// A message cleanup has started: content goes in, then [`Message::end`]
/// or [`Message::abort`]. Dropped without either, its connection is closed
/// and cleanup drops the message.
#[derive(Debug)]
pub struct Message<'a> {
    pool: &'a Cleanup,
    ch: Conn,
    queue_id: String,
    /// A write failed: the connection is out of step and never reused.
    broken: bool,
}

impl<'a> Message<'a> {
    /// The queue ID cleanup gave the message.
    pub fn queue_id(&self) -> &str {
        &self.queue_id
    }

    /// Sends content now, in pieces of at most [`CHUNK`] bytes.
    pub async fn write(&mut self, content: &[u8]) -> Result<(), Error> {
        for piece in content.chunks(CHUNK) {
            let sent = self.ch.send(&CleanupRequest::Content(piece.to_vec())).await;
            self.broken |= sent.is_err();
            sent?;
        }
        Ok(())
    }

    /// Adds content to what the next send writes: the last pieces go out
    /// with End, in one write.
    pub fn write_later(&mut self, content: &[u8]) -> Result<(), Error> {
        for piece in content.chunks(CHUNK) {
            let queued = self.ch.queue(&CleanupRequest::Content(piece.to_vec()));
            self.broken |= queued.is_err();
            queued?;
        }
        Ok(())
    }

    /// Asks for the message to be put on hold (sent with the next send).
    pub fn hold(&mut self) -> Result<(), Error> {
        let queued = self.ch.queue(&CleanupRequest::Hold);
        self.broken |= queued.is_err();
        queued
    }

    /// FILTER, REDIRECT and BCC met at the end of the message (sent with
    /// the next send).
    pub fn actions(&mut self, actions: crate::proto::Actions) -> Result<(), Error> {
        let queued = self.ch.queue(&CleanupRequest::Actions(actions));
        self.broken |= queued.is_err();
        queued
    }

    /// Milters will look at this message (sent with the next send): see
    /// [`Message::processed`].
    pub fn inspect(&mut self) -> Result<(), Error> {
        let queued = self.ch.queue(&CleanupRequest::Inspect);
        self.broken |= queued.is_err();
        queued
    }

    /// After [`Message::inspect`]: ends the content and returns it as
    /// cleanup would queue it, with the message, which waits for
    /// [`Message::edited`] or [`Message::abort`]; or cleanup's final answer
    /// when it refused the message already.
    pub async fn processed(mut self) -> Result<Processed<'a>, Error> {
        self.ch.send(&CleanupRequest::End).await?;
        let mut content = Vec::new();
        loop {
            match self.ch.expect::<CleanupReply>().await? {
                CleanupReply::Content(piece) => content.extend_from_slice(&piece),
                CleanupReply::ContentEnd => return Ok(Processed::Content(content, self)),
                other => {
                    self.pool.give_back(self.ch);
                    return Ok(Processed::Done(other));
                }
            }
        }
    }

    /// After [`Message::processed`]: the milters' changes; cleanup makes
    /// them and answers as to End.
    pub async fn edited(
        mut self,
        content: Vec<crate::proto::ContentEdit>,
        envelope: Vec<crate::proto::EnvelopeEdit>,
        hold: bool,
    ) -> Result<CleanupReply, Error> {
        for e in content {
            match e {
                crate::proto::ContentEdit::Body(b) if b.len() > crate::proto::CHUNK => {
                    let mut pieces = b.chunks(crate::proto::CHUNK);
                    let first = pieces.next().unwrap_or_default().to_vec();
                    self.ch
                        .queue(&CleanupRequest::Edit(crate::proto::ContentEdit::Body(
                            first,
                        )))?;
                    for p in pieces {
                        self.ch.send(&CleanupRequest::BodyMore(p.to_vec())).await?;
                    }
                }
                e => self.ch.queue(&CleanupRequest::Edit(e))?,
            }
        }
        for e in envelope {
            self.ch.queue(&CleanupRequest::ChangeEnvelope(e))?;
        }
        self.ch.send(&CleanupRequest::EditsDone { hold }).await?;
        let reply = self.ch.expect::<CleanupReply>().await?;
        self.pool.give_back(self.ch);
        Ok(reply)
    }

    /// Finishes the message and returns cleanup's verdict; the connection
    /// is kept for another message when the conversation ended in step.
    pub async fn end(mut self) -> Result<CleanupReply, Error> {
        self.ch.send(&CleanupRequest::End).await?;
        let reply = self.ch.expect::<CleanupReply>().await?;
        self.pool.give_back(self.ch);
        Ok(reply)
    }

    /// Drops the message; the connection is kept when it is in step and
    /// cleanup answers.
    pub async fn abort(mut self) {
        if !self.broken
            && self.ch.send(&CleanupRequest::Abort).await.is_ok()
            && self.ch.recv::<CleanupReply>().await.is_ok()
        {
            self.pool.give_back(self.ch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A cleanup that refuses senders named `refuse@`, and counts the
    /// connections it got. `drop_after`: close each connection after that
    /// many finished messages (a restarted cleanup).
    fn cleanup(path: &Path, drop_after: usize) -> Arc<AtomicUsize> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut ch = Channel::new(s);
                    ch.handshake(conversation::CLEANUP).await.unwrap();
                    let mut done = 0;
                    while let Ok(Some(req)) = ch.recv::<CleanupRequest>().await {
                        let reply = match req {
                            CleanupRequest::Begin { sender, .. }
                                if sender.starts_with("refuse@") =>
                            {
                                CleanupReply::Failed {
                                    temporary: true,
                                    reason: "queue file write error".into(),
                                }
                            }
                            CleanupRequest::Begin { .. } => CleanupReply::Started {
                                queue_id: format!("C{n}"),
                            },
                            CleanupRequest::Content(_)
                            | CleanupRequest::Hold
                            | CleanupRequest::Actions(_)
                            | CleanupRequest::Inspect
                            | CleanupRequest::Edit(_)
                            | CleanupRequest::BodyMore(_)
                            | CleanupRequest::ChangeEnvelope(_)
                            | CleanupRequest::Recipients(_) => continue,
                            CleanupRequest::EditsDone { .. } | CleanupRequest::End => {
                                CleanupReply::Committed {
                                    queue_id: format!("C{n}"),
                                }
                            }
                            CleanupRequest::Abort => CleanupReply::Failed {
                                temporary: true,
                                reason: "aborted".into(),
                            },
                        };
                        let finished = !matches!(reply, CleanupReply::Started { .. });
                        ch.send(&reply).await.unwrap();
                        done += usize::from(finished);
                        if done == drop_after {
                            return;
                        }
                    }
                });
            }
        });
        conns
    }

    fn envelope(sender: &str) -> Envelope {
        Envelope {
            receive: Default::default(),
            arrival: None,
            sender: sender.into(),
            recipients: vec![NewRecipient::new("u@example.com", None)],
            attrs: Vec::new(),
            origin: Origin::Smtp,
        }
    }

    #[tokio::test]
    async fn connections_are_reused_only_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cleanup");
        let conns = cleanup(&path, usize::MAX);
        let pool = Cleanup::at(path);
        let content = || std::iter::once(Ok(b"Subject: x\n\nx\n".to_vec()));
        assert_eq!(
            pool.submit(envelope("a@x"), content(), |_| {})
                .await
                .unwrap(),
            "C1"
        );
        // A refusal leaves the connection in step: the next message uses it.
        let refused = pool.submit(envelope("refuse@x"), content(), |_| {}).await;
        assert_eq!(
            refused.unwrap_err().to_string(),
            "cleanup: queue file write error"
        );
        let mut msg = pool.begin(envelope("b@x")).await.unwrap();
        msg.write(b"partial").await.unwrap();
        msg.abort().await;
        assert_eq!(
            pool.submit(envelope("c@x"), content(), |_| {})
                .await
                .unwrap(),
            "C1"
        );
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // Two messages at once need two connections; both are kept.
        let (m1, m2) = (
            pool.begin(envelope("d@x")).await.unwrap(),
            pool.begin(envelope("e@x")).await.unwrap(),
        );
        assert_eq!((m1.queue_id(), m2.queue_id()), ("C1", "C2"));
        m1.end().await.unwrap();
        m2.end().await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_cleanup_closed_is_replaced_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cleanup");
        // cleanup goes away after each message, as after a restart.
        let conns = cleanup(&path, 1);
        let pool = Cleanup::at(path);
        for n in 1..=3 {
            let content = std::iter::once(Ok(b"x\n".to_vec()));
            let id = pool.submit(envelope("a@x"), content, |_| {}).await.unwrap();
            assert_eq!(id, format!("C{n}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }
}
