//! cleanup(8): receives a message (envelope, then content in chunks) from
//! smtpd, pickup, bounce or local, and writes it to `incoming/` as a queue
//! file. It adds the headers a local submission lacks (Message-Id, Date,
//! From, as Postfix does for local clients), drops duplicate recipients,
//! qualifies bare addresses with `$myorigin`, enforces
//! `message_size_limit`, and answers `Committed` only after the file is
//! complete and fsynced. Then it wakes qmgr. Memory per message is bounded:
//! only the header section (up to `header_size_limit`) is held.
//!
//! Log: `QUEUEID: message-id=<...>`.

mod checks;
mod headers;
mod milter;
mod mime;
mod rewrite;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use headers::Fed;
use pfx_config::Config;
use pfx_ipc::proto::{
    conversation, endpoint, trigger, CleanupReply, CleanupRequest, Origin, Receive,
};
use pfx_ipc::Channel;
use pfx_ipc::Socket;
use pfx_queue::file::{Envelope, NewRecipient, Writer};
use pfx_queue::reserve::Reserve;
use pfx_queue::statuslog::{self, Log, Status};
use pfx_queue::Queue;
use tracing::{info, warn};

fn main() {
    // One thread for the protocol (a chain of small steps); a commit runs
    // there when it is the only one, else on the blocking pool.
    pfx_server::run_with(
        "cleanup",
        pfx_server::Threads::One,
        |ctx, endpoint| async move {
            let queue_dir = ctx
                .config()
                .get("queue_directory")
                .map_err(|e| e.to_string())?;
            let qmgr = pfx_ipc::client::Triggers::new(Path::new(&queue_dir).join(endpoint::QMGR));
            let shared = Arc::new(Shared {
                reserve: Arc::new(Reserve::new(Queue::new(queue_dir))),
                committing: AtomicUsize::new(0),
                qmgr: Arc::new(qmgr),
                rewriter: std::sync::Mutex::new(None),
                checks: std::sync::Mutex::new(None),
            });
            refill(&shared.reserve);
            let reserve = shared.reserve.clone();
            let served = pfx_server::serve_channels(
                &ctx,
                endpoint,
                conversation::CLEANUP,
                move |cfg, ch| {
                    let shared = shared.clone();
                    async move {
                        if let Err(e) = session(cfg, shared, ch).await {
                            warn!("{e}");
                        }
                    }
                },
            )
            .await;
            // Stopping: unused reserved files go back to recycle/.
            reserve.release();
            served
        },
    )
}

/// What all sessions share.
struct Shared {
    reserve: Arc<Reserve>,
    /// Commits in progress.
    committing: AtomicUsize,
    /// Tells qmgr about each new message.
    qmgr: Arc<pfx_ipc::client::Triggers>,
    /// The address rewriting of the newest configuration, built once for all
    /// connections (its tables may hold database connections).
    rewriter: PerConfig<rewrite::Rewriter>,
    /// The content inspection tables, likewise.
    checks: PerConfig<checks::Tables>,
}

/// What one configuration builds once for every session.
type PerConfig<T> = std::sync::Mutex<Option<(Arc<Config>, Arc<T>)>>;

fn cached<T>(
    slot: &PerConfig<T>,
    cfg: &Arc<Config>,
    build: impl FnOnce() -> Result<T, String>,
) -> Result<Arc<T>, String> {
    let mut cached = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((c, r)) = cached.as_ref() {
        if Arc::ptr_eq(c, cfg) {
            return Ok(r.clone());
        }
    }
    let r = Arc::new(build()?);
    *cached = Some((cfg.clone(), r.clone()));
    Ok(r)
}

impl Shared {
    fn rewriter(&self, cfg: &Arc<Config>) -> Result<Arc<rewrite::Rewriter>, String> {
        cached(&self.rewriter, cfg, || {
            rewrite::Rewriter::new(cfg).map_err(|e| e.to_string())
        })
    }

    /// The content inspection tables; `None` when none is set.
    fn checks(&self, cfg: &Arc<Config>) -> Result<Option<Arc<checks::Tables>>, String> {
        let t = cached(&self.checks, cfg, || {
            let table = |n: &str| -> Result<pfx_maps::MapList, String> {
                let specs = cfg.list(n).map_err(|e| e.to_string())?;
                pfx_maps::MapList::parse(&specs, &pfx_maps::passwd::Passwd::default())
                    .map_err(|e| e.to_string())
            };
            Ok(checks::Tables {
                header: table("header_checks")?,
                mime: table("mime_header_checks")?,
                nested: table("nested_header_checks")?,
                body: table("body_checks")?,
                body_limit: u64::try_from(
                    cfg.int("body_checks_size_limit")
                        .map_err(|e| e.to_string())?,
                )
                .unwrap_or(0),
            })
        })?;
        Ok(t.any().then_some(t))
    }
}

/// Names the next batch of queue files, in the background, when the
/// reserve runs low.
fn refill(reserve: &Arc<Reserve>) {
    if reserve.begin_refill() {
        let reserve = reserve.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = reserve.refill() {
                warn!("reserve queue files: {e}");
            }
        });
    }
}

/// Serves one connection: any number of messages, one after another.
async fn session(cfg: Arc<Config>, shared: Arc<Shared>, ch: Channel<Socket>) -> Result<(), String> {
    let mut ch = ch.with_max_frame(2 * pfx_ipc::proto::CHUNK);
    let settings = Settings::from(&cfg, shared)?;
    // Recipients sent ahead of their Begin (a long list).
    let mut ahead = Vec::new();
    loop {
        let req: Option<CleanupRequest> =
            ch.recv().await.map_err(|e| format!("read request: {e}"))?;
        let (sender, mut recipients, attrs, origin, receive, arrival) = match req {
            Some(CleanupRequest::Recipients(more)) => {
                if ahead.len() + more.len() > pfx_ipc::proto::MAX_RECIPIENTS {
                    return Err("read request: too many recipients".into());
                }
                ahead.extend(more);
                continue;
            }
            Some(CleanupRequest::Begin {
                sender,
                recipients,
                attrs,
                origin,
                receive,
                arrival,
            }) => (sender, recipients, attrs, origin, receive, arrival),
            _ => return Ok(()),
        };
        if !ahead.is_empty() {
            ahead.append(&mut recipients);
            recipients = std::mem::take(&mut ahead);
        }
        let given = Given {
            sender,
            recipients,
            attrs,
            origin,
            receive,
            arrival,
        };
        let reply = message(&settings, &mut ch, given).await?;
        ch.send(&reply).await.map_err(|e| e.to_string())?;
    }
}

/// What cleanup needs from main.cf, resolved once per connection.
struct Settings {
    queue: Queue,
    shared: Arc<Shared>,
    myhostname: String,
    myorigin: String,
    rewriter: Arc<rewrite::Rewriter>,
    size_limit: u64,
    header_limit: usize,
    hopcount_limit: usize,
    /// `cleanup_replace_stray_cr_lf`.
    replace_stray_cr: bool,
    /// `delay_warning_time` (0: no warnings).
    delay_warning: std::time::Duration,
    /// header_checks and the others, and what the inspection's parser
    /// needs: `line_length_limit`, `mime_nesting_limit`,
    /// `mime_boundary_length_limit`.
    checks: Option<Arc<checks::Tables>>,
    line_length_limit: usize,
    mime_nesting_limit: usize,
    mime_boundary_limit: usize,
    /// `detect_8bit_encoding_header`, and the empty tables its parse uses.
    detect_8bit: bool,
    no_checks: checks::Tables,
    /// `non_smtpd_milters` (none: no milter is asked).
    non_smtpd_milters: Option<pfx_milter::Milters>,
}

impl Settings {
    /// `cleanup_replace_stray_cr_lf`: a CR inside a line (content arrives
    /// with LF line ends, so every CR is stray) becomes a space, as
    /// Postfix does against SMTP smuggling and so that a later signature
    /// does not depend on how the next system reads it.
    fn mask_stray_cr(&self, piece: &mut [u8]) {
        if self.replace_stray_cr {
            for b in piece.iter_mut().filter(|b| **b == b'\r') {
                *b = b' ';
            }
        }
    }

    fn from(cfg: &Arc<Config>, shared: Arc<Shared>) -> Result<Self, String> {
        let s = |n: &str| cfg.get(n).map_err(|e| e.to_string());
        let n = |n: &str| cfg.int(n).map_err(|e| e.to_string());
        Ok(Self {
            queue: Queue::new(s("queue_directory")?),
            rewriter: shared.rewriter(cfg)?,
            checks: shared.checks(cfg)?,
            shared,
            myhostname: s("myhostname")?,
            myorigin: s("myorigin")?,
            size_limit: u64::try_from(n("message_size_limit")?).unwrap_or(0),
            header_limit: usize::try_from(n("header_size_limit")?).unwrap_or(102_400),
            hopcount_limit: usize::try_from(n("hopcount_limit")?).unwrap_or(50),
            replace_stray_cr: cfg
                .bool("cleanup_replace_stray_cr_lf")
                .map_err(|e| e.to_string())?,
            delay_warning: cfg.time("delay_warning_time").map_err(|e| e.to_string())?,
            line_length_limit: usize::try_from(n("line_length_limit")?).unwrap_or(2048),
            mime_nesting_limit: usize::try_from(n("mime_nesting_limit")?).unwrap_or(100),
            mime_boundary_limit: usize::try_from(n("mime_boundary_length_limit")?).unwrap_or(2048),
            detect_8bit: cfg
                .bool("detect_8bit_encoding_header")
                .map_err(|e| e.to_string())?,
            no_checks: checks::Tables::default(),
            non_smtpd_milters: pfx_milter::Milters::from_main_cf(
                cfg,
                "non_smtpd_milters",
                std::path::Path::new(&s("queue_directory")?),
            )
            .map_err(|e| e.to_string())?,
        })
    }
}

/// A message as its submitter opened it.
struct Given {
    sender: String,
    recipients: Vec<NewRecipient>,
    attrs: Vec<(String, String)>,
    origin: Origin,
    receive: Receive,
    arrival: Option<SystemTime>,
}

/// What cleanup does to one message (Postfix's cleanup flags): by where
/// it comes from, less what the receiving daemon's
/// `receive_override_options` turn off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    /// Canonical and virtual alias maps, masquerading.
    pub(crate) map: bool,
    /// `sender_bcc_maps`, `recipient_bcc_maps`, `always_bcc`.
    pub(crate) bcc: bool,
    /// header_checks and body_checks.
    pub(crate) checks: bool,
    /// `non_smtpd_milters`: for local submissions (smtpd runs its own,
    /// `smtpd_milters`, and none of these even when it has none).
    pub(crate) milters: bool,
}

impl Flags {
    fn new(origin: Origin, receive: &Receive) -> Self {
        // Mail from clients and users; not notices or forwarded mail.
        let external = matches!(origin, Origin::Smtp | Origin::Local | Origin::Pickup);
        Self {
            map: !receive.no_address_mappings,
            bcc: external && !receive.no_address_mappings,
            checks: external && !receive.no_header_body_checks,
            milters: origin == Origin::Pickup && !receive.no_milters,
        }
    }
}

async fn message<'s>(
    st: &'s Settings,
    ch: &mut Channel<Socket>,
    given: Given,
) -> Result<CleanupReply, String> {
    let Given {
        sender,
        recipients,
        attrs,
        origin,
        receive,
        arrival: first,
    } = given;
    let flags = Flags::new(origin, &receive);
    let now = SystemTime::now();
    // Requeued mail keeps its first arrival (its lifetime and the delays
    // logged count from it, as Postfix's pickup passes the T record on);
    // the headers cleanup adds are dated now.
    let arrival = first.filter(|a| *a <= now).unwrap_or(now);
    let created = Writer::create(&st.queue, arrival, Some(&st.shared.reserve));
    refill(&st.shared.reserve);
    let mut writer = match created {
        Ok(w) => w,
        Err(e) => return begin_error(format!("create queue file: {e}")),
    };
    let id = writer.id().to_owned();
    // The last recipient as given and rewritten (not expanded), for the
    // content inspection's log lines, as Postfix's.
    let last_rcpt = recipients
        .last()
        .and_then(|r| st.rewriter.recipient(&r.address, flags.map).ok());
    // The recipients as given, rewritten but not expanded and without the
    // automatic copies: what non_smtpd_milters are told of, as Postfix's
    // cleanup tells them.
    let given_rcpts: Vec<String> = recipients
        .iter()
        .filter_map(|r| st.rewriter.recipient(&r.address, flags.map).ok())
        .collect();
    let (sender, recipients, expanded, refused) = match envelope(st, &sender, recipients, flags) {
        Ok((s, r, e)) => (s, r, e, None),
        Err(refusal) => (String::new(), Vec::new(), Vec::new(), Some(refusal)),
    };
    let mut env = Envelope {
        sender: sender.clone(),
        recipients,
        attrs,
        filter: receive.filter,
    };
    // As Postfix's cleanup: when to warn the sender, in the file; requeued
    // mail past that time has had its warning.
    if !st.delay_warning.is_zero() && arrival + st.delay_warning > now {
        let at = arrival + st.delay_warning;
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        writer.delay_warning(secs);
    }
    ch.send(&CleanupReply::Started {
        queue_id: id.clone(),
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(refusal) = refused {
        // As Postfix: the client learns at the end of the data.
        let reply = refused_reply(&id, refusal);
        return drain(ch, &id, reply).await;
    }

    // The envelope is written with the first content: milters' changes
    // to it come before.
    let mut envelope_written = false;
    // Inspect: the content waits here for smtpd's milters and their changes.
    let local_milters = st.non_smtpd_milters.as_ref().filter(|_| flags.milters);
    let mut for_milters: Option<Vec<u8>> = local_milters.map(|_| Vec::new());
    let given_attrs = env.attrs.clone();
    let attr = |name: &str| {
        given_attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let meta = Meta {
        st,
        id: &id,
        sender: &sender,
        arrival: now,
        origin,
        map: flags.map,
        uid: attr("uid"),
        full_name: attr("sender_fullname").filter(|_| origin == Origin::Pickup),
    };
    let mut hdr = headers::HeaderScanner::new(st.header_limit);
    // Content inspection, for mail from clients and users (not notices or
    // forwarded mail, as Postfix's defaults have it).
    let tables = st.checks.as_deref().filter(|t| t.any() && flags.checks);
    let inspect = |t: &'s checks::Tables| -> checks::Inspector<'s> {
        let who = checks::Who {
            queue_id: id.clone(),
            // The original client when the message came through XFORWARD.
            origin: attr("log_message_origin").unwrap_or_else(|| {
                match (attr("client_name"), attr("client_address")) {
                    (Some(n), Some(a)) => format!("{n}[{a}]"),
                    _ => "local".into(),
                }
            }),
            sender: sender.clone(),
            recipient: last_rcpt.clone(),
            proto: attr("log_protocol_name").or_else(|| attr("protocol")),
            helo: if attr("log_message_origin").is_some() {
                attr("log_helo_name")
            } else {
                attr("helo_name")
            }
            .filter(|h| !h.is_empty()),
        };
        let limits = mime::Limits {
            header: st.header_limit,
            nesting: st.mime_nesting_limit,
            boundary: st.mime_boundary_limit,
        };
        checks::Inspector::new(t, who, limits, st.line_length_limit)
    };
    let mut inspector = tables.map(inspect);
    // `detect_8bit_encoding_header`: a message with parts is parsed, with
    // no tables, to find the parts' Content-Transfer-Encoding headers.
    let watch = |h: &headers::Headers, ins: &mut Option<checks::Inspector<'s>>| {
        if ins.is_none() && st.detect_8bit && h.has_parts && !h.eight_bit {
            *ins = Some(inspect(&st.no_checks));
        }
    };
    let mut primary_8bit = false;
    let mut failure: Option<CleanupReply> = None;
    let mut hold = false;
    let mut late = pfx_ipc::proto::Actions::default();
    loop {
        let req: CleanupRequest = ch
            .expect()
            .await
            .map_err(|e| format!("{id}: read content: {e}"))?;
        match req {
            CleanupRequest::Content(chunk) => {
                if failure.is_some() {
                    continue;
                }
                if for_milters.is_none() && !std::mem::replace(&mut envelope_written, true) {
                    if let Err(e) = writer.envelope(&env) {
                        warn!("{id}: write queue file: {e}");
                        failure = Some(write_error());
                        continue;
                    }
                }
                let out = hdr.feed(&chunk);
                if out
                    .finished_headers
                    .as_ref()
                    .is_some_and(|h| meta.too_many_hops(h))
                {
                    failure = Some(CleanupReply::TooManyHops);
                    continue;
                }
                let finished = out.finished_headers;
                if let Some(h) = &finished {
                    watch(h, &mut inspector);
                    primary_8bit = h.eight_bit;
                }
                let mut piece = match finished.map(|h| meta.head(inspector.as_mut(), &h)) {
                    Some(Ok(block)) => block,
                    Some(Err(refusal)) => {
                        failure = Some(refused_reply(&id, refusal));
                        continue;
                    }
                    None => Vec::new(),
                };
                match inspector.as_mut() {
                    Some(ins) => piece.extend(ins.feed(&out.body)),
                    None => piece.extend_from_slice(&out.body),
                }
                st.mask_stray_cr(&mut piece);
                failure = put(&mut writer, for_milters.as_mut(), &id, &piece).err();
                let size =
                    writer.content_len() + for_milters.as_ref().map_or(0, |b| b.len() as u64);
                if failure.is_none() && st.size_limit > 0 && size > st.size_limit {
                    failure = Some(CleanupReply::TooBig);
                }
            }
            CleanupRequest::Hold => hold = true,
            CleanupRequest::Actions(a) => late = a,
            CleanupRequest::Inspect if !envelope_written => for_milters = Some(Vec::new()),
            CleanupRequest::Inspect
            | CleanupRequest::Edit(_)
            | CleanupRequest::BodyMore(_)
            | CleanupRequest::ChangeEnvelope(_)
            | CleanupRequest::EditsDone { .. } => {
                return Err(format!("{id}: protocol error: milter request out of place"));
            }
            CleanupRequest::End => break,
            CleanupRequest::Abort => {
                return Ok(CleanupReply::Failed {
                    temporary: true,
                    reason: "aborted".into(),
                })
            }
            CleanupRequest::Begin { .. } | CleanupRequest::Recipients(_) => {
                return Err(format!("{id}: protocol error: Begin inside a message"))
            }
        }
    }
    if let Some(f) = failure {
        return Ok(f);
    }
    if !envelope_written && for_milters.is_none() {
        if let Err(e) = writer.envelope(&env) {
            warn!("{id}: write queue file: {e}");
            return Ok(write_error());
        }
    }
    // The headers did not end before the content did.
    if let Some(Fed {
        finished_headers: Some(h),
        body,
    }) = hdr.finish()
    {
        if meta.too_many_hops(&h) {
            return Ok(CleanupReply::TooManyHops);
        }
        watch(&h, &mut inspector);
        primary_8bit = h.eight_bit;
        let mut piece = match meta.head(inspector.as_mut(), &h) {
            Ok(block) => block,
            Err(refusal) => return Ok(refused_reply(&id, refusal)),
        };
        match inspector.as_mut() {
            Some(ins) => piece.extend(ins.feed(&body)),
            None => piece.extend_from_slice(&body),
        }
        st.mask_stray_cr(&mut piece);
        if let Err(f) = put(&mut writer, for_milters.as_mut(), &id, &piece) {
            return Ok(f);
        }
    }
    let eight_bit = primary_8bit || inspector.as_ref().is_some_and(|i| i.eight_bit);
    if st.detect_8bit && eight_bit && attr("encoding").as_deref() != Some("8bit") {
        writer.extracted_attr("encoding", "8bit");
    }
    // smtpd's end-of-data FILTER, REDIRECT and BCC, before the checks'
    // own (a later record wins), as Postfix's extracted segment has them.
    if extracted_actions(st, &mut writer, &env, &late, flags).is_err() {
        return Ok(CleanupReply::Failed {
            temporary: true,
            reason: "queue file write error".into(),
        });
    }
    // A PASS or REDIRECT of the checks: no milter either.
    let mut milters_off = false;
    if let Some(mut ins) = inspector.take() {
        let mut piece = ins.finish();
        st.mask_stray_cr(&mut piece);
        if let Err(f) = put(&mut writer, for_milters.as_mut(), &id, &piece) {
            return Ok(f);
        }
        let v = ins.verdict;
        if v.lookup_failed {
            return Ok(CleanupReply::Failed {
                temporary: true,
                reason: "queue file write error".into(),
            });
        }
        if let Some(reason) = v.reject {
            // A 4.x.x refusal cannot be bounced: pickup tries again later,
            // as Postfix's cleanup defers.
            if origin == Origin::Pickup && reason.starts_with('5') {
                // Content kept for milters is not in the file yet.
                if let Some(content) = for_milters.take() {
                    if let Err(f) = write_whole(&mut writer, &env, &content, &id) {
                        return Ok(f);
                    }
                }
                return Ok(return_to_sender(st, writer, &env, arrival, &reason).await);
            }
            return Ok(CleanupReply::Rejected {
                reason,
                reply: None,
            });
        }
        if v.discard {
            // Accepted and dropped: the file goes with the writer.
            return Ok(CleanupReply::Committed { queue_id: id });
        }
        hold |= v.hold;
        milters_off = v.no_milters;
        let actions = pfx_ipc::proto::Actions {
            filter: v.filter,
            redirect: v.redirect,
            bcc: v.bcc,
        };
        if extracted_actions(st, &mut writer, &env, &actions, flags).is_err() {
            return Ok(CleanupReply::Failed {
                temporary: true,
                reason: "queue file write error".into(),
            });
        }
    }
    if milters_off {
        // The checks said PASS or REDIRECT: the content goes in as it is.
        if let Some(content) = for_milters.take() {
            if let Err(f) = write_whole(&mut writer, &env, &content, &id) {
                return Ok(f);
            }
        }
    }
    if let (Some(content), Some(milters)) = (for_milters.as_ref(), local_milters) {
        let asked = milter::Asked {
            milters,
            id: &id,
            attrs: &given_attrs,
            recipients: &given_rcpts,
            flags,
        };
        match asked.run(st, &mut env, content).await {
            milter::Outcome::Accept {
                content,
                hold: held,
            } => {
                hold |= held;
                for_milters = Some(content);
            }
            milter::Outcome::Discard => return Ok(CleanupReply::Committed { queue_id: id }),
            milter::Outcome::Reject { reason, reply } => {
                if origin == Origin::Pickup && reason.starts_with('5') {
                    // Returned as it came, before the milters' changes.
                    if let Err(f) = write_whole(&mut writer, &env, content, &id) {
                        return Ok(f);
                    }
                    return Ok(return_to_sender(st, writer, &env, arrival, &reason).await);
                }
                return Ok(CleanupReply::Rejected { reason, reply });
            }
        }
        let bytes = for_milters.take().unwrap_or_default();
        if let Err(f) = write_whole(&mut writer, &env, &bytes, &id) {
            return Ok(f);
        }
    }
    if let Some(content) = for_milters.take() {
        match milter::inspect(st, ch, &id, &mut env, content, flags).await? {
            Ok((bytes, held)) => {
                hold |= held;
                if let Err(f) = write_whole(&mut writer, &env, &bytes, &id) {
                    return Ok(f);
                }
            }
            Err(reply) => return Ok(reply),
        }
    }
    if hold {
        if let Err(e) = writer.relocate(&st.queue, pfx_queue::QueueName::Hold) {
            warn!("{id}: move queue file to hold: {e}");
            return Ok(CleanupReply::Failed {
                temporary: true,
                reason: "queue file write error".into(),
            });
        }
    }
    // The success notices of expanded aliases, on disk before the file
    // is: qmgr finds them when it takes the message.
    let queue_dir = st.queue.root().to_owned();
    if !expanded.is_empty() {
        if let Err(e) = statuslog::append(&queue_dir, Log::Trace, &id, &expanded, true) {
            warn!("{id}: trace logfile update error: {e}");
            statuslog::remove(&queue_dir, Log::Trace, &id);
            return Ok(CleanupReply::Failed {
                temporary: true,
                reason: "queue file write error".into(),
            });
        }
    }
    let committed = commit(st, writer).await?;
    if committed.is_err() && !expanded.is_empty() {
        statuslog::remove(&queue_dir, Log::Trace, &id);
    }
    match committed {
        // Held: qmgr is not told; `postsuper -H` releases it.
        Ok(id) if hold => Ok(CleanupReply::Committed { queue_id: id }),
        Ok(id) => {
            let qmgr = st.shared.qmgr.clone();
            let request = trigger::new_message(&id);
            tokio::spawn(async move {
                let _ = qmgr.send(&request).await;
            });
            Ok(CleanupReply::Committed { queue_id: id })
        }
        Err(e) => {
            warn!("{id}: commit queue file: {e}");
            Ok(CleanupReply::Failed {
                temporary: true,
                reason: "queue file write error".into(),
            })
        }
    }
}

/// The envelope as it goes into the queue file (`rewrite.rs`): the
/// sender rewritten; each recipient rewritten and expanded by
/// `virtual_alias_maps`, with its original address (the one given, as
/// Postfix keeps it for X-Original-To: and orig_to=); the automatic copies
/// (`sender_bcc_maps`, `recipient_bcc_maps`, `always_bcc`) for mail from
/// clients and users, not for notices or forwarded mail; duplicates
/// (same address, same original) dropped. With them, the `expanded`
/// success entries of aliases whose sender asked for NOTIFY=SUCCESS.
fn envelope(
    st: &Settings,
    sender: &str,
    given: Vec<NewRecipient>,
    flags: Flags,
) -> Result<(String, Vec<NewRecipient>, Vec<Status>), rewrite::Refusal> {
    let rw = &*st.rewriter;
    let map = flags.map;
    let sender = rw.sender(sender, map)?;
    let bcc_ok = flags.bcc;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(given.len());
    let mut expanded = Vec::new();
    // Each address an alias expands to keeps the DSN requests of the one
    // given, but SUCCESS: that is reported once, for the alias, as
    // Postfix's cleanup does. Duplicates go, as Postfix's (same address,
    // original, NOTIFY and ORCPT).
    let mut add = |given: NewRecipient| -> Result<(), rewrite::Refusal> {
        let addr = &given.address;
        let rewritten = rw.recipient(addr, map)?;
        let targets = if map {
            rw.expand(&rewritten)?
        } else {
            vec![rewritten.clone()]
        };
        let mut notify = given.notify;
        if notify & pfx_queue::file::notify::SUCCESS != 0 && targets != [rewritten.as_str()] {
            expanded.push(Status {
                recipient: rewritten.clone(),
                original: Some(given.original.clone().unwrap_or_else(|| addr.clone())),
                notify,
                dsn_orcpt: given.orcpt.clone(),
                dsn: "2.0.0".into(),
                relay: "none".into(),
                reason: "alias expanded".into(),
                action: Some("expanded".into()),
            });
            notify = pfx_queue::file::notify::inherited(notify);
        }
        for r in targets {
            let o = given
                .original
                .clone()
                .or_else(|| (r != *addr).then(|| addr.clone()));
            let key = (
                r.to_ascii_lowercase(),
                o.clone(),
                notify,
                given.orcpt.clone(),
            );
            if seen.insert(key) {
                out.push(NewRecipient {
                    address: r,
                    original: o,
                    notify,
                    orcpt: given.orcpt.clone(),
                });
            }
        }
        Ok(())
    };
    let mut copies = Vec::new();
    if bcc_ok {
        copies.extend(rw.sender_bcc(&sender)?);
    }
    for r in given {
        if bcc_ok {
            copies.extend(rw.recipient_bcc(&rw.recipient(&r.address, map)?)?);
        }
        add(r)?;
    }
    if bcc_ok {
        copies.extend(rw.always_bcc().map(str::to_owned));
    }
    // As Postfix: a copy's sender is never told about it (NOTIFY=NEVER).
    for c in copies {
        add(NewRecipient {
            address: rw.qualify(&c),
            original: None,
            notify: pfx_queue::file::notify::NEVER,
            orcpt: None,
        })?;
    }
    Ok((sender, out, expanded))
}

/// The envelope and the whole content at once, for content that waited
/// for milters; `Err` is the answer when the file cannot be written.
fn write_whole(
    writer: &mut Writer,
    env: &Envelope,
    content: &[u8],
    id: &str,
) -> Result<(), CleanupReply> {
    let written = writer.envelope(env).and_then(|()| writer.content(content));
    written.map_err(|e| {
        warn!("{id}: write queue file: {e}");
        write_error()
    })
}

/// FILTER, REDIRECT and BCC (of smtpd's restrictions or the content
/// inspection) into the queue file's extracted segment.
/// `Err`: a table could not map a BCC address; the message waits, as
/// Postfix's cleanup defers it, rather than go without the copy.
fn extracted_actions(
    st: &Settings,
    writer: &mut Writer,
    env: &Envelope,
    a: &pfx_ipc::proto::Actions,
    flags: Flags,
) -> Result<(), ()> {
    if let Some(f) = &a.filter {
        writer.extracted_filter(f);
    }
    if let Some(to) = &a.redirect {
        writer.extracted_redirect(to);
    }
    for copy in &a.bcc {
        for r in blind_copies(st, env, copy, flags)? {
            writer.extracted_recipient(r);
        }
    }
    Ok(())
}

/// The recipients a BCC action of the content inspection adds: rewritten
/// and expanded as any recipient, never told to the sender (NOTIFY=NEVER),
/// none that the message already has. `Err` when the tables cannot map
/// the address now.
fn blind_copies(
    st: &Settings,
    env: &Envelope,
    copy: &str,
    flags: Flags,
) -> Result<Vec<NewRecipient>, ()> {
    let given = NewRecipient {
        address: st.rewriter.qualify(copy),
        original: None,
        notify: pfx_queue::file::notify::NEVER,
        orcpt: None,
    };
    let once = Flags {
        bcc: false,
        ..flags
    };
    match envelope(st, &env.sender, vec![given], once) {
        Ok((_, added, _)) => Ok(added
            .into_iter()
            .filter(|r| {
                !env.recipients
                    .iter()
                    .any(|o| o.address.eq_ignore_ascii_case(&r.address) && o.original == r.original)
            })
            .collect()),
        Err(_) => {
            warn!("BCC to \"{copy}\": address mapping failed -- message not accepted, try again later");
            Err(())
        }
    }
}

/// A local submission that the content inspection refuses goes back to
/// its sender, as Postfix's cleanup does for pickup: each recipient is
/// logged as bounced (`relay=none`), bounce sends the notice from the
/// file (kept in `hold/` meanwhile, out of qmgr's sight), and pickup is
/// done with the message. If no notice can be sent, pickup tries again.
async fn return_to_sender(
    st: &Settings,
    mut writer: Writer,
    env: &Envelope,
    arrival: SystemTime,
    reason: &str,
) -> CleanupReply {
    use pfx_ipc::proto::{BounceReply, BounceRequest, Notice};
    let id = writer.id().to_owned();
    let failed = || CleanupReply::Failed {
        temporary: true,
        reason: "queue file write error".into(),
    };
    // The refused content is not sent back, only its headers, as
    // Postfix's cleanup_bounce (RET=HDRS).
    writer.extracted_attr("ret_flags", &pfx_smtp_proto::dsn::RET_HDRS.to_string());
    if let Err(e) = writer.relocate(&st.queue, pfx_queue::QueueName::Hold) {
        warn!("{id}: move queue file to hold: {e}");
        return failed();
    }
    if let Err(e) = commit(st, writer)
        .await
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        warn!("{id}: commit queue file: {e}");
        return failed();
    }
    let root = st.queue.root();
    let held = st.queue.path(pfx_queue::QueueName::Hold, &id);
    // The checks' reason is `status text` (`5.7.1 message content rejected`).
    let (dsn, text) = reason
        .split_once(' ')
        .map_or(("5.7.1".to_owned(), reason.to_owned()), |(d, t)| {
            (d.to_owned(), t.to_owned())
        });
    let outcome = pfx_maillog::delivery::Outcome::failed(false, &dsn, "none", text.clone());
    let records: Vec<Status> = env
        .recipients
        .iter()
        .map(|r| Status {
            recipient: r.address.clone(),
            original: r.original.clone(),
            notify: r.notify,
            dsn_orcpt: r.orcpt.clone(),
            dsn: dsn.clone(),
            relay: "none".into(),
            reason: text.clone(),
            action: None,
        })
        .collect();
    if let Err(e) = statuslog::append(root, Log::Bounce, &id, &records, true) {
        warn!("{id}: write bounce log: {e}");
        let _ = std::fs::remove_file(&held);
        return failed();
    }
    let now = SystemTime::now();
    let times = pfx_maillog::delivery::Times {
        arrival,
        activated: now,
        agent_start: now,
        connected: now,
        done: now,
    };
    for r in &env.recipients {
        info!(
            "{id}: {}",
            outcome.line(&r.address, r.original.as_deref(), times)
        );
    }
    let asked = async {
        let socket = root.join(pfx_ipc::proto::endpoint::BOUNCE);
        let mut ch = pfx_ipc::client::connect(&socket, conversation::BOUNCE).await?;
        ch.send(&BounceRequest {
            queue: pfx_queue::QueueName::Hold,
            queue_id: id.clone(),
            kind: Notice::Failure,
        })
        .await?;
        ch.expect::<BounceReply>().await
    };
    let sent = matches!(asked.await, Ok(BounceReply::Sent { .. }));
    let _ = std::fs::remove_file(&held);
    if sent {
        CleanupReply::Committed { queue_id: id }
    } else {
        warn!("{id}: non-delivery notification failed -- the submission is tried again later");
        statuslog::remove(root, Log::Bounce, &id);
        failed()
    }
}

/// Logs why a message is not accepted; the answer for its client.
fn refused_reply(id: &str, refusal: rewrite::Refusal) -> CleanupReply {
    let reason = match refusal {
        rewrite::Refusal::Unreasonable(why) => {
            warn!("{id}: {why} -- message not accepted, try again later");
            "4.6.0 Alias expansion error"
        }
        rewrite::Refusal::Lookup(why) => {
            warn!("{id}: {why} -- message not accepted, try again later");
            "queue file write error"
        }
    };
    CleanupReply::Failed {
        temporary: true,
        reason: reason.to_owned(),
    }
}

/// Reads a refused message's content to its end and answers the client.
async fn drain(
    ch: &mut Channel<Socket>,
    id: &str,
    reply: CleanupReply,
) -> Result<CleanupReply, String> {
    loop {
        let req: CleanupRequest = ch
            .expect()
            .await
            .map_err(|e| format!("{id}: read content: {e}"))?;
        match req {
            CleanupRequest::Content(_)
            | CleanupRequest::Hold
            | CleanupRequest::Actions(_)
            | CleanupRequest::Inspect
            | CleanupRequest::Edit(_)
            | CleanupRequest::BodyMore(_)
            | CleanupRequest::ChangeEnvelope(_)
            | CleanupRequest::EditsDone { .. } => {}
            CleanupRequest::End | CleanupRequest::Abort => return Ok(reply),
            CleanupRequest::Begin { .. } | CleanupRequest::Recipients(_) => {
                return Err(format!("{id}: protocol error: Begin inside a message"))
            }
        }
    }
}

/// Commits a queue file. Alone, on this thread: a hand-off to another
/// thread and back costs two wake-ups, a good part of a commit. When other
/// commits are running, on the blocking pool, so that they overlap and the
/// other sessions are served meanwhile.
async fn commit(st: &Settings, writer: Writer) -> Result<Result<String, pfx_queue::Error>, String> {
    let running = st.shared.committing.fetch_add(1, Ordering::AcqRel);
    let result = if running == 0 {
        Ok(writer.finish())
    } else {
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| e.to_string())
    };
    st.shared.committing.fetch_sub(1, Ordering::AcqRel);
    result
}

/// What a message's header work needs to know.
struct Meta<'a> {
    st: &'a Settings,
    id: &'a str,
    sender: &'a str,
    arrival: SystemTime,
    origin: Origin,
    /// Address mappings apply to the headers of local mail.
    map: bool,
    /// The submitting user (pickup's `uid` attribute).
    uid: Option<String>,
    /// For the From header cleanup adds to local submissions.
    full_name: Option<String>,
}

impl Meta<'_> {
    /// The header block as queued, and the start of the body: the
    /// inspection may drop, replace and add headers first.
    fn head(
        &self,
        inspector: Option<&mut checks::Inspector<'_>>,
        h: &headers::Headers,
    ) -> Result<Vec<u8>, rewrite::Refusal> {
        match inspector {
            None => self.header_block(h),
            Some(ins) => {
                let (text, body) = ins.headers(&h.text, &h.separator);
                let mut block = self.header_block(&headers::analyse(text, Vec::new()))?;
                block.extend_from_slice(&body);
                Ok(block)
            }
        }
    }

    /// Postfix's `hopcount_limit`: a message with that many `Received:`
    /// headers (smtpd's own among them) is in a mail loop and is refused.
    /// Not mail from pickup: Postfix bounces that to the sender, and pickup
    /// has no bounce of its own yet, so a refusal would leave the file in
    /// maildrop/ to be tried again at every scan. A local loop is still
    /// stopped by local's Delivered-To check.
    fn too_many_hops(&self, h: &headers::Headers) -> bool {
        let loops = self.origin != Origin::Pickup && h.received >= self.st.hopcount_limit;
        if loops {
            warn!("{}: message rejected: hopcount exceeded", self.id);
        }
        loops
    }

    /// The header section as it goes into the queue file, with any headers
    /// cleanup adds; logs the message-id.
    fn header_block(&self, h: &headers::Headers) -> Result<Vec<u8>, rewrite::Refusal> {
        let (st, id) = (self.st, self.id);
        // Missing Message-Id, Date and From are added to local mail only.
        let add_missing = self.origin != Origin::Smtp;
        let mut block = Vec::with_capacity(h.text.len() + 256);
        if self.origin == Origin::Pickup {
            block.extend_from_slice(
                format!(
                    "Received: by {} (Postfix, from userid {})\n\tid {id}; {}\n",
                    st.myhostname,
                    self.uid.as_deref().unwrap_or("0"),
                    pfx_sys::time::rfc2822(self.arrival)
                )
                .as_bytes(),
            );
        }
        if matches!(self.origin, Origin::Local | Origin::Pickup) {
            block.extend_from_slice(&headers::rewrite_local(&h.text, &st.rewriter, self.map)?);
        } else {
            block.extend_from_slice(&h.text);
        }
        let message_id = match &h.message_id {
            Some(m) => m.clone(),
            None if add_missing => {
                let m = format!(
                    "<{}.{id}@{}>",
                    pfx_sys::time::compact(self.arrival),
                    st.myhostname
                );
                block.extend_from_slice(format!("Message-Id: {m}\n").as_bytes());
                m
            }
            None => String::new(),
        };
        if add_missing {
            if !h.has_date {
                block.extend_from_slice(
                    format!("Date: {}\n", pfx_sys::time::rfc2822(self.arrival)).as_bytes(),
                );
            }
            if !h.has_from {
                let from = match (self.sender, self.full_name.as_deref()) {
                    ("", _) => format!("MAILER-DAEMON@{}", st.myorigin),
                    (s, Some(name)) if !name.trim().is_empty() => {
                        format!("{} <{s}>", display_name(name.trim()))
                    }
                    (s, _) => s.to_owned(),
                };
                block.extend_from_slice(format!("From: {from}\n").as_bytes());
            }
        }
        block.extend_from_slice(&h.separator);
        if !message_id.is_empty() {
            info!("{id}: message-id={message_id}");
        }
        Ok(block)
    }
}

/// A full name as a header display name: quoted when it holds characters
/// that would otherwise end it (RFC 5322 specials).
fn display_name(name: &str) -> String {
    if name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c)) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        name.to_owned()
    }
}

/// Appends content; a write error becomes the reply for the client.
/// Content for the queue file, or for the milters first.
fn put(
    writer: &mut Writer,
    for_milters: Option<&mut Vec<u8>>,
    id: &str,
    bytes: &[u8],
) -> Result<(), CleanupReply> {
    match for_milters {
        Some(buf) => {
            buf.extend_from_slice(bytes);
            Ok(())
        }
        None => write_content(writer, id, bytes),
    }
}

/// cleanup's temporary failure when its queue file cannot be written.
fn write_error() -> CleanupReply {
    CleanupReply::Failed {
        temporary: true,
        reason: "queue file write error".into(),
    }
}

fn write_content(writer: &mut Writer, id: &str, bytes: &[u8]) -> Result<(), CleanupReply> {
    writer.content(bytes).map_err(|e| {
        warn!("{id}: write queue file: {e}");
        CleanupReply::Failed {
            temporary: true,
            reason: "queue file write error".into(),
        }
    })
}

/// Logs why a message cannot be started and gives the client a temporary
/// failure as the answer to its Begin: no content follows it.
fn begin_error(why: String) -> Result<CleanupReply, String> {
    warn!("{why}");
    Ok(CleanupReply::Failed {
        temporary: true,
        reason: "queue file write error".into(),
    })
}
