//! What smtpd's milters see and change: the content as cleanup would
//! queue it goes to smtpd and their changes come back, made here after
//! cleanup's own processing; the envelope changes are carried out as
//! Postfix's cleanup does: a new sender (with its RET= and ENVID=), added
//! recipients through the usual rewriting (NOTIFY= and ORCPT= kept),
//! deleted recipients matched on the address they were given as.

use pfx_ipc::proto::{CleanupReply, CleanupRequest, ContentEdit, EnvelopeEdit, CHUNK};
use pfx_ipc::Channel;
use pfx_milter::Message;
use pfx_queue::file::{Envelope, NewRecipient};
use pfx_smtp_proto::dsn;
use tokio::net::UnixStream;
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
    ch: &mut Channel<UnixStream>,
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
    // smtpd's Received: is the first one (access table PREPENDs may come
    // before it).
    let own = Message::parse(&content, None)
        .headers
        .iter()
        .position(|h| h.name().eq_ignore_ascii_case(b"received"));
    let mut msg = Message::parse(&content, own);
    for e in &edits {
        msg.apply(e);
    }
    Ok(Ok((msg.to_bytes(), hold)))
}
