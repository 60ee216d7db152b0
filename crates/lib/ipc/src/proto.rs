//! The messages of each conversation between daemons, and where each
//! service listens. One enum per direction per conversation; all of them
//! travel as [`crate::Channel`] frames after the handshake.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pfx_maillog::delivery::{Outcome, Times};
use pfx_queue::QueueName;
use serde::{Deserialize, Serialize};

/// Conversation names for the handshake.
pub mod conversation {
    pub const CLEANUP: &str = "cleanup";
    pub const DELIVER: &str = "deliver";
    pub const BOUNCE: &str = "bounce";
    pub const SHOWQ: &str = "showq";
    pub const FLUSH: &str = "flush";
    pub const PROXYMAP: &str = "proxymap";
    pub const ANVIL: &str = "anvil";
}

/// Service endpoints, relative to `queue_directory`, as in Postfix.
pub mod endpoint {
    pub const CLEANUP: &str = "public/cleanup";
    pub const QMGR: &str = "public/qmgr";
    pub const BOUNCE: &str = "private/bounce";
    pub const SHOWQ: &str = "public/showq";
    pub const FLUSH: &str = "public/flush";
    pub const PICKUP: &str = "public/pickup";
    pub const PROXYMAP: &str = "private/proxymap";
    pub const ANVIL: &str = "private/anvil";
}

/// The socket of a transport (delivery agent) such as `local` or `smtp`.
pub fn transport_socket(queue_dir: &Path, transport: &str) -> PathBuf {
    queue_dir.join("private").join(transport)
}

/// Trigger bytes understood by qmgr (Postfix's).
pub mod trigger {
    /// New mail in incoming/.
    pub const INCOMING: u8 = b'I';
    /// Scan deferred/ now, ignoring retry times (postqueue -f).
    pub const FLUSH: u8 = b'F';
    /// Scan deferred/ (respecting retry times).
    pub const DEFERRED: u8 = b'D';
    /// master's periodic wakeup.
    pub const WAKEUP: u8 = b'W';
    /// One new message in incoming/: followed by its queue ID and a newline
    /// (cleanup to qmgr, see [`new_message`]).
    pub const NEW: u8 = b'N';

    /// The request that names a message cleanup just committed.
    pub fn new_message(queue_id: &str) -> Vec<u8> {
        let mut req = Vec::with_capacity(queue_id.len() + 2);
        req.push(NEW);
        req.extend_from_slice(queue_id.as_bytes());
        req.push(b'\n');
        req
    }
}

/// Size of the content chunks streamed to cleanup.
pub const CHUNK: usize = 64 * 1024;

/// How a message entered the system, which decides cleanup's header work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// SMTP from a remote client: headers are left alone.
    Smtp,
    /// SMTP from a client Postfix treats as local (`local_header_rewrite_clients`),
    /// or a local submission: missing From/Date/Message-ID are added.
    Local,
    /// A local submission (sendmail -> postdrop -> pickup): also gets
    /// Postfix's `Received: by HOST (Postfix, from userid N)` header, and
    /// the From header it adds carries the sender's full name (attributes
    /// `uid` and `sender_fullname`).
    Pickup,
    /// A notification made by postfix-rs itself (bounce).
    Internal,
    /// Mail forwarded by local delivery (aliases, .forward).
    Forward,
}

/// What the daemon that received a message asks of cleanup for it, from
/// its own main.cf or master.cf `-o` settings: `content_filter` and
/// `receive_override_options` (Postfix's cleanup flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receive {
    /// `transport:nexthop` every recipient goes to first (qmgr's `L`
    /// record); none for notices and forwarded mail.
    pub filter: Option<String>,
    /// `no_address_mappings`: no canonical, masquerading, virtual alias or
    /// automatic BCC mapping.
    pub no_address_mappings: bool,
    /// `no_header_body_checks`.
    pub no_header_body_checks: bool,
    /// `no_milters`: no `non_smtpd_milters` in cleanup.
    pub no_milters: bool,
}

impl Receive {
    /// `content_filter` and `receive_override_options` as a daemon's main.cf
    /// has them (`no_unknown_recipient_checks` is smtpd's own business).
    pub fn from_config(cfg: &pfx_config::Config) -> Result<Self, pfx_config::BuildError> {
        let o = ReceiveOverride::from_config(cfg)?;
        let filter = cfg.get("content_filter")?;
        Ok(Self {
            filter: Some(filter).filter(|f| !f.trim().is_empty()),
            no_address_mappings: o.no_address_mappings,
            no_header_body_checks: o.no_header_body_checks,
            no_milters: o.no_milters,
        })
    }
}

/// `receive_override_options`, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveOverride {
    pub no_unknown_recipient_checks: bool,
    pub no_address_mappings: bool,
    pub no_header_body_checks: bool,
    pub no_milters: bool,
}

impl ReceiveOverride {
    /// An unknown option is an error naming the parameter, as Postfix's
    /// name_mask is fatal on it.
    pub fn from_config(cfg: &pfx_config::Config) -> Result<Self, pfx_config::BuildError> {
        let mut o = Self::default();
        for word in cfg.list("receive_override_options")? {
            // As Postfix's name_mask: exact, lower-case names.
            match word.as_str() {
                "no_unknown_recipient_checks" => o.no_unknown_recipient_checks = true,
                "no_address_mappings" => o.no_address_mappings = true,
                "no_header_body_checks" => o.no_header_body_checks = true,
                "no_milters" => o.no_milters = true,
                _ => {
                    let why = format!("unknown receive_override_options value \"{word}\"");
                    return Err(cfg.value_error("receive_override_options", why).into());
                }
            }
        }
        Ok(o)
    }
}

/// An access table's or policy service's FILTER, REDIRECT and BCC, for
/// the extracted segment of the queue file (as Postfix's smtpd writes
/// those it met at the end of the message).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actions {
    pub filter: Option<String>,
    pub redirect: Option<String>,
    pub bcc: Vec<String>,
}

/// smtpd, pickup, bounce and local -> cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupRequest {
    /// Opens a queue file; cleanup answers [`CleanupReply::Started`], or
    /// [`CleanupReply::Failed`] when it cannot (then no content follows).
    Begin {
        sender: String,
        recipients: Vec<pfx_queue::file::NewRecipient>,
        attrs: Vec<(String, String)>,
        origin: Origin,
        receive: Receive,
        /// When the message first arrived, for mail that was queued
        /// before (`postsuper -r` through pickup); cleanup's own clock
        /// otherwise.
        arrival: Option<std::time::SystemTime>,
    },
    /// Message content (LF line ends), in order, at most [`CHUNK`] bytes each.
    Content(Vec<u8>),
    /// The message goes to the hold queue, not to delivery (an access
    /// table's or policy service's HOLD); sent before End.
    Hold,
    /// What `smtpd_end_of_data_restrictions` asked for after the envelope
    /// went to cleanup; sent before End.
    Actions(Actions),
    /// Milters will look at the message: at End, cleanup answers with
    /// the content as it would queue it ([`CleanupReply::Content`] pieces,
    /// then [`CleanupReply::ContentEnd`]) and waits for the milters'
    /// changes, up to [`Self::EditsDone`] (or Abort). Sent before any
    /// Content.
    Inspect,
    /// A change the milters made, in order.
    Edit(ContentEdit),
    /// More of the new body of the last [`ContentEdit::Body`] (a body is
    /// sent in pieces of at most [`CHUNK`] bytes).
    BodyMore(Vec<u8>),
    ChangeEnvelope(EnvelopeEdit),
    /// The milters' changes are all there; `hold`: quarantined. cleanup
    /// makes the changes, then answers as to End.
    EditsDone {
        hold: bool,
    },
    /// Finishes: cleanup makes the file durable, then answers Committed.
    End,
    /// Drops the message (the client gave up or broke a limit).
    Abort,
    /// Recipients of the message the next [`Self::Begin`] opens, sent
    /// before it: a long list goes in frames of about [`CHUNK`] bytes
    /// (Begin carries the last of them), so that ten thousand recipients
    /// need no frame larger than a content chunk.
    Recipients(Vec<pfx_queue::file::NewRecipient>),
}

/// Recipients cleanup takes for one message, at most.
pub const MAX_RECIPIENTS: usize = 1_000_000;

/// A change to the content a milter asks for at the end of a message;
/// headers are whole (`Name: value`, folded lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentEdit {
    /// After the last header.
    Add(Vec<u8>),
    /// At this position among all headers (0: above the first).
    Insert { index: u32, header: Vec<u8> },
    /// The `index`-th header called `name` (0 means 1, the first header
    /// of the message not counted): replaced, or deleted (`None`).
    Change {
        index: u32,
        name: String,
        header: Option<Vec<u8>>,
    },
    /// A new body, as the milter sent it (CRLF line ends).
    Body(Vec<u8>),
}

/// A change to the envelope a milter asks for at the end of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvelopeEdit {
    /// The sender, without angle brackets, and its ESMTP parameters.
    ChangeFrom {
        sender: String,
        args: Option<String>,
    },
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    /// Recipients given as this address (before any rewriting) go.
    DelRcpt(String),
}

/// cleanup -> its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupReply {
    Started {
        queue_id: String,
    },
    /// The queue file is complete and on disk.
    Committed {
        queue_id: String,
    },
    /// The content passed `message_size_limit`; nothing was queued.
    TooBig,
    Failed {
        temporary: bool,
        reason: String,
    },
    /// `hopcount_limit` `Received:` headers: a mail loop; nothing was queued.
    TooManyHops,
    /// Content inspection refused the message: status and text
    /// (`5.7.1 message content rejected`; a `4.x.x` status is temporary).
    Rejected {
        reason: String,
        /// A milter's own SMTP reply (`554 5.7.1 text`), for smtpd to
        /// send as it is.
        reply: Option<String>,
    },
    /// After [`CleanupRequest::Inspect`]: a piece of the content as it
    /// would be queued (LF line ends), for the milters.
    Content(Vec<u8>),
    ContentEnd,
}

/// One recipient of a delivery request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecipient {
    pub address: String,
    pub original: Option<String>,
    /// RFC 3461 NOTIFY bits and ORCPT, for the next hop and for the
    /// notices this delivery may cause.
    pub notify: u32,
    pub orcpt: Option<String>,
}

/// qmgr -> delivery agent: deliver these recipients of this queue file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    /// The queue the file is in (`active`) and its ID.
    pub queue: QueueName,
    pub queue_id: String,
    pub sender: String,
    /// The next hop qmgr resolved (for local: `$myhostname`).
    pub nexthop: String,
    pub recipients: Vec<DeliveryRecipient>,
    /// Microseconds since the epoch: arrival, and when qmgr took the message.
    pub arrival_us: u64,
    pub activated_us: u64,
}

impl DeliveryRequest {
    /// When the message arrived.
    pub fn arrival(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.arrival_us)
    }

    /// The points in the delivery's life for its log line: arrival and
    /// activation from qmgr, the agent's start and connection, done now.
    pub fn times(&self, agent_start: SystemTime, connected: SystemTime) -> Times {
        Times {
            arrival: self.arrival(),
            activated: UNIX_EPOCH + Duration::from_micros(self.activated_us),
            agent_start,
            connected,
            done: SystemTime::now(),
        }
    }
}

/// delivery agent -> qmgr: one outcome per recipient, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReply {
    pub statuses: Vec<Outcome>,
}

/// qmgr -> bounce: send the non-delivery notice for a message whose
/// `bounce/ID` log holds the failed recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceRequest {
    pub queue: QueueName,
    pub queue_id: String,
    pub kind: Notice,
}

/// Which notice bounce sends, from which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// Non-delivery, from `bounce/ID`.
    Failure,
    /// Successful delivery (NOTIFY=SUCCESS recipients), from `trace/ID`.
    Success,
    /// Delay warning (`delay_warning_time`), from `defer/X/ID`.
    Delay,
}

/// bounce -> qmgr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BounceReply {
    /// Done; the notice's queue ID, if one was sent (none for a double bounce that is dropped).
    Sent {
        notice_id: Option<String>,
    },
    Failed {
        reason: String,
    },
}

/// One message as `postqueue -p`/`-j` show it (showq -> postqueue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// `maildrop`, `incoming`, `active`, `deferred` or `hold`.
    pub queue_name: String,
    pub queue_id: String,
    /// Seconds since the epoch.
    pub arrival_time: u64,
    /// Bytes of message content (headers and body).
    pub message_size: u64,
    /// The envelope sender; the null sender as `$empty_address_recipient`.
    pub sender: String,
    /// Recipients not yet done, each with the reason it waits, if any.
    pub recipients: Vec<QueueRecipient>,
    /// Marked for forced expiration (`postsuper -e`).
    pub forced_expire: bool,
}

/// A pending recipient of a [`QueueEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecipient {
    pub address: String,
    pub delay_reason: Option<String>,
}

/// A message as the queue listing found it, as it crosses to postqueue.
impl From<pfx_queue::listing::Message> for QueueEntry {
    fn from(m: pfx_queue::listing::Message) -> Self {
        Self {
            queue_name: m.queue_name.as_str().to_owned(),
            queue_id: m.queue_id,
            arrival_time: m.arrival_time,
            message_size: m.message_size,
            sender: m.sender,
            recipients: m
                .recipients
                .into_iter()
                .map(|r| QueueRecipient {
                    address: r.address,
                    delay_reason: r.delay_reason,
                })
                .collect(),
            forced_expire: m.forced_expire,
        }
    }
}

/// showq -> postqueue: the queue, one message per frame, then `End`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShowqReply {
    Message(QueueEntry),
    End,
}

/// postqueue -> flush: deliver deferred mail now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushRequest {
    /// One message (`postqueue -i ID`).
    SendFile { queue_id: String },
    /// Every message with a recipient at this destination (`postqueue -s SITE`).
    SendSite { site: String },
}

/// flush -> postqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushReply {
    Ok,
    /// The site is not in `$fast_flush_domains`.
    NotConfigured,
    Failed {
        reason: String,
    },
}

/// sendmail -> postdrop, on postdrop's standard input before the message
/// content: who sends to whom ([`crate::codec::write_frame`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropEnvelope {
    pub sender: String,
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
    /// sendmail's `-N` (NOTIFY bits for every recipient), `-R` (RET) and
    /// `-V` (ENVID); 0 and `None` when not given.
    pub dsn_notify: u32,
    pub dsn_ret: u32,
    pub dsn_envid: Option<String>,
}

/// A confined daemon -> proxymap: look `key` up in `table` (`type:name`,
/// without `proxy:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRequest {
    pub table: String,
    pub key: String,
}

/// proxymap -> the daemon that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyReply {
    Found(String),
    NotFound,
    /// The lookup failed (temporarily), or the table is not one of
    /// `proxy_read_maps`.
    Failed(String),
}

/// What an smtpd tells anvil about a remote client (Postfix's anvil
/// requests); anvil counts per ident, `service:address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnvilEvent {
    /// A client connected: counts it and its connection rate.
    Connect,
    /// A connection this smtpd registered ended.
    Disconnect,
    /// MAIL FROM.
    Message,
    /// RCPT TO or VRFY.
    Recipient,
    /// A new (not resumed) TLS session was negotiated.
    NewTls,
    /// The new-TLS-session rate, without counting anything (before STARTTLS).
    NewTlsStatus,
    /// AUTH.
    Auth,
    /// Every counter, without counting anything.
    Lookup,
}

/// smtpd -> anvil, many on one connection, each answered before the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnvilRequest {
    pub event: AnvilEvent,
    /// `service:address`, e.g. `smtp:192.0.2.1`.
    pub ident: String,
}

/// The counters anvil keeps for one ident, within the current
/// `anvil_rate_time_unit` window (the count is not a rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnvilStatus {
    /// Connections open now.
    pub count: u32,
    pub rate: u32,
    pub mail: u32,
    pub rcpt: u32,
    pub newtls: u32,
    pub auth: u32,
}

/// anvil -> smtpd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnvilReply {
    /// To Connect: connections open now, and connections in this time unit.
    Connected { count: u32, rate: u32 },
    /// To Message, Recipient, NewTls, NewTlsStatus and Auth: that event's
    /// rate in this time unit, the event just reported included.
    Rate(u32),
    /// To Disconnect.
    Done,
    /// To Lookup.
    Status(AnvilStatus),
}
