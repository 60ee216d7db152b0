//! What smtpd's milters see and change: the content as cleanup would
//! queue it goes to smtpd and their changes come back, made here after
//! cleanup's own processing; the envelope changes are carried out as
//! Postfix's cleanup does: a new sender (with its RET= and ENVID=), added
//! recipients through the usual rewriting (NOTIFY= and ORCPT= kept),
//! deleted recipients matched on the address they were given as.
//!
//! `non_smtpd_milters` are asked here, by cleanup itself, for mail whose
//! receiving daemon ran no milters (local submissions from sendmail): as
//! Postfix's cleanup, it plays the SMTP events a milter expects (a connect
//! from `localhost[127.0.0.1]`, EHLO, MAIL, each RCPT, DATA) before the
//! message.

use pfx_ipc::proto::{CleanupReply, CleanupRequest, ContentEdit, EnvelopeEdit, CHUNK};
use pfx_ipc::Channel;
use pfx_ipc::Socket;
use pfx_milter::Message;
use pfx_queue::file::{Envelope, NewRecipient};
use pfx_smtp_proto::dsn;
use tracing::warn;

use crate::{Flags, Settings};

pub(crate) fn envelope(
    st: &Settings,
    id: &str,
    env: &mut Envelope,
    edits: Vec<EnvelopeEdit>,
    flags: Flags,
) {
    for e in edits {
        match e {
            EnvelopeEdit::ChangeFrom { sender, args } => {
                match st.rewriter.sender(&sender, flags.map) {
                    Ok(s) => env.sender = s,
                    Err(_) => {
                        warn!("{id}: milter request to change sender to \"{sender}\" refused");
                        continue;
                    }
                }
                for arg in args.iter().flat_map(|a| a.split_whitespace()) {
                    let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
                    let set = |env: &mut Envelope, k: &str, v: String| {
                        env.attrs.retain(|(n, _)| n != k);
                        env.attrs.push((k.to_owned(), v));
                    };
                    match (key.to_ascii_uppercase().as_str(), value) {
                        ("RET", v) if dsn::ret_code(v).is_some() => {
                            set(env, "ret_flags", dsn::ret_code(v).unwrap_or(0).to_string());
                        }
                        ("ENVID", v) if dsn::xtext_decode(v).is_some() => {
                            set(env, "envelope_id", dsn::xtext_decode(v).unwrap_or_default());
                        }
                        _ => {
                            warn!("Ignoring bad ESMTP parameter \"{arg}\" in SMFI_CHGFROM request")
                        }
                    }
                }
            }
            EnvelopeEdit::AddRcpt { rcpt, args } => {
                if rcpt.is_empty() {
                    warn!("{id}: ignoring attempt from Milter to add null recipient");
                    continue;
                }
                let mut given = NewRecipient::new(rcpt.clone(), None);
                for arg in args.iter().flat_map(|a| a.split_whitespace()) {
                    let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
                    match key.to_ascii_uppercase().as_str() {
                        "NOTIFY" if dsn::notify_mask(value).is_some() => {
                            given.notify = dsn::notify_mask(value).unwrap_or(0);
                        }
                        "ORCPT" if dsn::orcpt_decode(value).is_some() => {
                            given.orcpt = dsn::orcpt_decode(value);
                        }
                        _ => warn!(
                            "{id}: ignoring ESMTP argument from Milter or header/body_checks: \"{arg}\""
                        ),
                    }
                }
                match crate::envelope(st, &env.sender, vec![given], flags) {
                    Ok((_, added, _)) => {
                        for r in added {
                            let known = env.recipients.iter().any(|o| {
                                o.address.eq_ignore_ascii_case(&r.address)
                                    && o.original == r.original
                            });
                            if !known {
                                env.recipients.push(r);
                            }
                        }
                    }
                    Err(_) => warn!("{id}: milter request to add recipient \"{rcpt}\" refused"),
                }
            }
            EnvelopeEdit::DelRcpt(addr) => {
                env.recipients
                    .retain(|r| r.original.as_deref().unwrap_or(&r.address) != addr);
            }
        }
    }
}

/// The content as it would be queued goes to smtpd, whose milters look
/// at it; their changes come back and are made here, after cleanup's own
/// processing, as in Postfix. `Ok(Ok((content, hold)))`; `Ok(Err(reply))`
/// when smtpd gave the message up.
pub(crate) async fn inspect(
    st: &Settings,
    ch: &mut Channel<Socket>,
    id: &str,
    env: &mut Envelope,
    content: Vec<u8>,
    flags: Flags,
) -> Result<Result<(Vec<u8>, bool), CleanupReply>, String> {
    let io = |e: pfx_ipc::Error| format!("{id}: milter content: {e}");
    for piece in content.chunks(CHUNK) {
        ch.send(&CleanupReply::Content(piece.to_vec()))
            .await
            .map_err(io)?;
    }
    ch.send(&CleanupReply::ContentEnd).await.map_err(io)?;
    let mut edits: Vec<ContentEdit> = Vec::new();
    let mut env_edits = Vec::new();
    let hold = loop {
        match ch.expect::<CleanupRequest>().await.map_err(io)? {
            CleanupRequest::Edit(e) => edits.push(e),
            CleanupRequest::BodyMore(piece) => match edits.last_mut() {
                Some(ContentEdit::Body(b)) => b.extend_from_slice(&piece),
                _ => return Err(format!("{id}: protocol error: body piece out of place")),
            },
            CleanupRequest::ChangeEnvelope(e) => env_edits.push(e),
            CleanupRequest::EditsDone { hold } => break hold,
            CleanupRequest::Abort => {
                return Ok(Err(CleanupReply::Failed {
                    temporary: true,
                    reason: "aborted".into(),
                }))
            }
            _ => return Err(format!("{id}: protocol error: expected milter changes")),
        }
    };
    envelope(st, id, env, env_edits, flags);
    if edits.is_empty() {
        return Ok(Ok((content, hold)));
    }
    let mut msg = parsed(&content);
    for e in &edits {
        msg.apply(e);
    }
    Ok(Ok((msg.to_bytes(), hold)))
}

/// The content as milters see it: the first `Received:` (smtpd's own, or
/// the one cleanup adds to a local submission; access table PREPENDs may
/// come before it) is not shown to them, but counts for their indexes.
fn parsed(content: &[u8]) -> Message {
    let own = Message::parse(content, None)
        .headers
        .iter()
        .position(|h| h.name().eq_ignore_ascii_case(b"received"));
    Message::parse(content, own)
}

/// What `non_smtpd_milters` made of a message.
pub(crate) enum Outcome {
    /// Queued: the content with their changes; `hold`: quarantined.
    Accept {
        content: Vec<u8>,
        hold: bool,
    },
    Discard,
    /// Refused: the status and text (a 4.x.x one is temporary), and the
    /// milter's own SMTP reply for smtpd.
    Reject {
        reason: String,
        reply: Option<String>,
    },
}

/// One message's conversation with `non_smtpd_milters`.
pub(crate) struct Asked<'a> {
    pub(crate) milters: &'a pfx_milter::Milters,
    pub(crate) id: &'a str,
    /// The submitter's attributes (a client's name and address, SASL).
    pub(crate) attrs: &'a [(String, String)],
    /// The recipients as given (rewritten, not expanded, no copies).
    pub(crate) recipients: &'a [String],
    pub(crate) flags: Flags,
}

impl Asked<'_> {
    fn attr(&self, name: &str) -> Option<&str> {
        (self.attrs.iter().rev())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The emulated session and the message, as Postfix's cleanup_milter
    /// runs them; the envelope changes are made to `env`.
    pub(crate) async fn run(&self, st: &Settings, env: &mut Envelope, content: &[u8]) -> Outcome {
        // A local submission pretends to come from localhost; mail from
        // an SMTP client (whose smtpd had no milters) names that client.
        let (name, addr) = match (self.attr("client_name"), self.attr("client_address")) {
            (Some(n), Some(a)) => (n.to_owned(), a.to_owned()),
            _ => ("localhost".to_owned(), "127.0.0.1".to_owned()),
        };
        let port: u16 = self
            .attr("client_port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let family = if addr.contains(':') {
            pfx_milter::Family::Inet6
        } else {
            pfx_milter::Family::Inet
        };
        let helo = self.attr("helo_name").unwrap_or(&name).to_owned();
        let mut values: std::collections::HashMap<&str, String> = [
            ("j", st.myhostname.clone()),
            ("_", format!("{name} [{addr}]")),
            ("daemon_name", self.milters.daemon_name.clone()),
            ("v", self.milters.v.clone()),
            ("client_addr", addr.clone()),
            ("client_name", name.clone()),
            ("client_ptr", name.clone()),
            ("client_port", port.to_string()),
            ("daemon_addr", addr.clone()),
            ("daemon_port", "0".to_owned()),
            ("i", self.id.to_owned()),
        ]
        .into_iter()
        .collect();
        for (mac, attr) in [
            ("auth_type", "sasl_method"),
            ("auth_authen", "sasl_username"),
            ("auth_author", "sasl_sender"),
        ] {
            if let Some(v) = self.attr(attr) {
                values.insert(mac, v.to_owned());
            }
        }
        let client = pfx_milter::Client {
            name: &name,
            addr: &addr,
            port,
            family,
        };
        let mut log = Log {
            id: self.id,
            client: format!("{name}[{addr}]"),
            sender: env.sender.clone(),
            recipient: self.recipients.last().cloned(),
            proto: self.attr("log_protocol_name").map(str::to_owned),
            helo: self.attr("log_helo_name").map(str::to_owned),
        };
        let lookup = |v: &std::collections::HashMap<&str, String>, n: &str| v.get(n).cloned();
        let cfg = &self.milters.config;
        let (mut session, verdict) = {
            let v = values.clone();
            pfx_milter::Session::connect(cfg, &client, &move |n: &str| lookup(&v, n)).await
        };
        let mut hold = false;
        let mut step = |event: &str, v: pfx_milter::Verdict, log: &Log<'_>| -> Option<Outcome> {
            match v {
                pfx_milter::Verdict::Continue => None,
                pfx_milter::Verdict::Hold => {
                    if !hold {
                        log.line("milter-hold", event, "milter triggers HOLD action");
                    }
                    hold = true;
                    None
                }
                pfx_milter::Verdict::Discard => {
                    log.line("milter-discard", event, "milter triggers DISCARD action");
                    Some(Outcome::Discard)
                }
                pfx_milter::Verdict::Shutdown => {
                    let reason = "5.7.1 message content rejected".to_owned();
                    log.line("milter-reject", event, &reason);
                    Some(Outcome::Reject {
                        reason,
                        reply: None,
                    })
                }
                pfx_milter::Verdict::Reply(r) => {
                    let text = r.split("\r\n").next().unwrap_or("").get(4..).unwrap_or("");
                    log.line("milter-reject", event, text);
                    Some(Outcome::Reject {
                        reason: text.to_owned(),
                        reply: Some(r),
                    })
                }
            }
        };
        let outcome = 'events: {
            if let Some(o) = step("CONNECT", verdict, &log) {
                break 'events o;
            }
            let v = {
                let v = values.clone();
                session.helo(&helo, &move |n: &str| lookup(&v, n)).await
            };
            if let Some(o) = step("EHLO", v, &log) {
                break 'events o;
            }
            values.insert("mail_addr", env.sender.clone());
            let v = {
                let v = values.clone();
                (session.mail(vec![env.sender.clone()], &move |n: &str| lookup(&v, n))).await
            };
            if let Some(o) = step("MAIL", v, &log) {
                break 'events o;
            }
            for r in self.recipients {
                values.insert("rcpt_addr", r.clone());
                log.recipient = Some(r.clone());
                let v = {
                    let v = values.clone();
                    (session.rcpt(vec![r.clone()], &move |n: &str| lookup(&v, n))).await
                };
                match step("RCPT", v, &log) {
                    Some(Outcome::Reject { .. }) => {
                        // A local submission has nobody to refuse a recipient to.
                        warn!(
                            "{}: milter configuration error: can't reject recipient in non-smtpd(8) submission",
                            self.id
                        );
                        warn!("{}: message not accepted, try again later", self.id);
                        break 'events Outcome::Reject {
                            reason: "4.3.5 Server configuration error".into(),
                            reply: None,
                        };
                    }
                    Some(o) => {
                        break 'events o;
                    }
                    None => {}
                }
            }
            let v = {
                let v = values.clone();
                session.data(&move |n: &str| lookup(&v, n)).await
            };
            if let Some(o) = step("DATA", v, &log) {
                break 'events o;
            }
            let mut msg = parsed(content);
            let (v, _, env_edits) = {
                let v = values.clone();
                session
                    .message(&mut msg, &move |n: &str| lookup(&v, n))
                    .await
            };
            envelope(st, self.id, env, env_edits, self.flags);
            match step("END-OF-MESSAGE", v, &log) {
                Some(o) => o,
                None => Outcome::Accept {
                    content: msg.to_bytes(),
                    hold: false,
                },
            }
        };
        session.quit().await;
        match outcome {
            Outcome::Accept { content, .. } => Outcome::Accept { content, hold },
            o => o,
        }
    }
}

/// Who and what a cleanup milter log line names (Postfix's
/// cleanup_milter_apply).
struct Log<'a> {
    id: &'a str,
    client: String,
    sender: String,
    recipient: Option<String>,
    proto: Option<String>,
    helo: Option<String>,
}

impl Log<'_> {
    fn line(&self, action: &str, event: &str, text: &str) {
        let mut line = format!(
            "{}: {action}: {event} from {}: {text}; from=<{}>",
            self.id, self.client, self.sender
        );
        if let Some(r) = &self.recipient {
            line.push_str(&format!(" to=<{r}>"));
        }
        if let Some(p) = &self.proto {
            line.push_str(&format!(" proto={p}"));
        }
        if let Some(h) = &self.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        tracing::info!("{line}");
    }
}
