//! Access policy: one restriction list per stage of the SMTP conversation
//! (Postfix's `smtpd_*_restrictions`), evaluated as Postfix's smtpd_check
//! does, then the local recipient table at RCPT.
//!
//! With `smtpd_delay_reject = yes` (the only value postfix-rs accepts) the
//! client, HELO and sender stages are evaluated at RCPT time, before the
//! relay and recipient stages, so a rejection names the recipient.

use std::net::IpAddr;

use pfx_config::restriction::Restriction;
use pfx_smtp_proto::Reply;
use tracing::warn;

use crate::settings::Settings;
use crate::stages::Stage;

/// What the session knows when a stage is judged.
#[derive(Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) client_ip: IpAddr,
    /// `name[address]`.
    pub(crate) client: &'a str,
    pub(crate) helo: Option<&'a str>,
    pub(crate) sender: Option<&'a str>,
    /// The SASL login name, once AUTH succeeded.
    pub(crate) login: Option<&'a str>,
}

/// The outcome of one restriction list.
enum Verdict {
    Permit,
    Dunno,
    Reject(Reply),
}

/// The address as Postfix shows it in a reject reply: source route dropped,
/// local part unquoted, nothing else rewritten.
pub(crate) fn display(addr: &str) -> String {
    let a = match addr.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, rest)) => rest,
        None => addr,
    };
    let (local, domain) = pfx_address::split(a);
    let local = pfx_address::unquote(local);
    if domain.is_empty() {
        local
    } else {
        format!("{local}@{domain}")
    }
}

/// What a restriction list is applied to.
struct Target<'a> {
    /// As the reject reply shows it.
    shown: String,
    /// The resolved recipient; none outside RCPT, where the
    /// destination restrictions do not apply.
    resolved: Option<&'a pfx_address::Resolved>,
}

fn evaluate(st: &Settings, stage: Stage, facts: &Facts<'_>, t: &Target<'_>) -> Verdict {
    let client = facts.client_ip;
    let (shown, class) = (&t.shown, stage.class());
    let authorized = t.resolved.map(|r| st.authorized_destination(r));
    let enhanced = |code: u16| if code < 500 { "4.7.1" } else { "5.7.1" };
    for item in st.restrictions.list(stage) {
        let v = match item {
            Restriction::PermitMynetworks if st.mynetworks.contains(client) => Verdict::Permit,
            Restriction::PermitSaslAuthenticated if facts.login.is_some() => Verdict::Permit,
            Restriction::PermitMynetworks | Restriction::PermitSaslAuthenticated => Verdict::Dunno,
            Restriction::RejectSenderLoginMismatch
            | Restriction::RejectAuthenticatedSenderLoginMismatch
            | Restriction::RejectUnauthenticatedSenderLoginMismatch => {
                match login_mismatch(st, *item, facts) {
                    Some(r) => Verdict::Reject(r),
                    None => Verdict::Dunno,
                }
            }
            Restriction::PermitAuthDestination if authorized == Some(true) => Verdict::Permit,
            Restriction::RejectUnauthDestination if authorized == Some(false) => {
                let code = st.relay_domains_reject_code;
                Verdict::Reject(Reply::new(
                    code,
                    enhanced(code),
                    format!("<{shown}>: Relay access denied"),
                ))
            }
            Restriction::DeferUnauthDestination if authorized == Some(false) => Verdict::Reject(
                Reply::new(454, "4.7.1", format!("<{shown}>: Relay access denied")),
            ),
            Restriction::PermitAuthDestination
            | Restriction::RejectUnauthDestination
            | Restriction::DeferUnauthDestination => Verdict::Dunno,
            Restriction::RejectUnlistedRecipient => {
                match t.resolved.and_then(|r| unknown_local(st, r, shown)) {
                    Some(r) => Verdict::Reject(r),
                    None => Verdict::Dunno,
                }
            }
            Restriction::Permit => Verdict::Permit,
            Restriction::Reject | Restriction::Defer => {
                let code = if *item == Restriction::Reject {
                    st.reject_code
                } else {
                    st.defer_code
                };
                Verdict::Reject(Reply::new(
                    code,
                    enhanced(code),
                    format!("<{shown}>: {class} rejected: Access denied"),
                ))
            }
        };
        if !matches!(v, Verdict::Dunno) {
            return v;
        }
    }
    Verdict::Dunno
}

/// Postfix's sender login checks: `smtpd_sender_login_maps` names the
/// login names that own an address (looked up as the address, then
/// `@domain`); a logged-in client must own the sender it uses, and an
/// owned address may not be used without logging in.
fn login_mismatch(st: &Settings, kind: Restriction, facts: &Facts<'_>) -> Option<Reply> {
    let sender = facts.sender.filter(|s| !s.is_empty())?;
    let (check_authenticated, check_anonymous) = match kind {
        Restriction::RejectAuthenticatedSenderLoginMismatch => (true, false),
        Restriction::RejectUnauthenticatedSenderLoginMismatch => (false, true),
        _ => (true, true),
    };
    // Only what the restriction checks is looked up.
    if (facts.login.is_some() && !check_authenticated)
        || (facts.login.is_none() && !check_anonymous)
    {
        return None;
    }
    let domain = sender.rsplit_once('@').map(|(_, d)| d);
    let lookup = |key: &str| st.sender_login.lookup(&key.to_ascii_lowercase());
    // As Postfix: the address, without its extension (user+ext), then @domain.
    let mut keys = vec![sender.to_owned()];
    if let (Some(d), Some(delim)) = (domain, st.recipient_delimiter.chars().next()) {
        let local = &sender[..sender.len() - d.len() - 1];
        if let Some((user, _)) = local.split_once(delim) {
            keys.push(format!("{user}@{d}"));
        }
    }
    keys.extend(domain.map(|d| format!("@{d}")));
    let mut owners = Ok(None);
    for key in &keys {
        owners = lookup(key);
        if !matches!(owners, Ok(None)) {
            break;
        }
    }
    let owners = match owners {
        Ok(o) => o,
        Err(e) => {
            warn!("smtpd_sender_login_maps: {e}");
            return Some(Reply::new(
                451,
                "4.3.0",
                format!("<{sender}>: Sender address rejected: Temporary lookup failure"),
            ));
        }
    };
    match (facts.login, owners) {
        (Some(user), owners) if check_authenticated => {
            let owned = owners.is_some_and(|o| {
                pfx_config::value::split_list(&o)
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(user))
            });
            (!owned).then(|| {
                Reply::new(
                    553,
                    "5.7.1",
                    format!("<{sender}>: Sender address rejected: not owned by user {user}"),
                )
            })
        }
        (None, Some(_)) if check_anonymous => Some(Reply::new(
            553,
            "5.7.1",
            format!("<{sender}>: Sender address rejected: not logged in"),
        )),
        _ => None,
    }
}

/// `smtpd_reject_unlisted_recipient`: a local address must be in
/// `local_recipient_maps` (users and aliases).
fn unknown_local(st: &Settings, r: &pfx_address::Resolved, shown: &str) -> Option<Reply> {
    if !r.is_local || st.local_recipients.is_empty() {
        return None;
    }
    // As Postfix: the addresses mail software writes to are always taken
    // (RFC 5321 requires postmaster); local or qmgr deals with them.
    if pfx_address::is_required_local_name(&r.local)
        || r.local.eq_ignore_ascii_case(&st.double_bounce_sender)
    {
        return None;
    }
    let mut user = r.local.to_ascii_lowercase();
    if let Some(d) = st.recipient_delimiter.chars().next() {
        if let Some(i) = user.find(d) {
            user.truncate(i);
        }
    }
    match st.local_recipients.lookup(&user) {
        Ok(Some(_)) => None,
        Ok(None) => Some(Reply::new(
            st.unknown_local_code,
            if st.unknown_local_code < 500 {
                "4.1.1"
            } else {
                "5.1.1"
            },
            if st.show_unknown_table {
                format!(
                    "<{shown}>: Recipient address rejected: User unknown in local recipient table"
                )
            } else {
                format!("<{shown}>: Recipient address rejected: User unknown")
            },
        )),
        Err(e) => {
            warn!("local_recipient_maps: {e}");
            Some(Reply::new(
                451,
                "4.3.0",
                format!("<{shown}>: Temporary lookup failure"),
            ))
        }
    }
}

/// The reject text's `<…>` for a stage judged at RCPT.
fn shown(stage: Stage, facts: &Facts<'_>, rcpt: &str) -> String {
    match stage {
        Stage::Client => facts.client.to_owned(),
        Stage::Helo => facts.helo.unwrap_or_default().to_owned(),
        Stage::Sender => facts.sender.map(display).unwrap_or_default(),
        _ => display(rcpt),
    }
}

/// Checks a recipient; `Ok(resolved address)` or the reject reply.
pub(crate) fn recipient(
    st: &Settings,
    facts: &Facts<'_>,
    addr: &str,
) -> Result<pfx_address::Resolved, Reply> {
    let resolved = st.resolve(addr);
    let (first, second) = if st.relay_before_recipient {
        (Stage::Relay, Stage::Recipient)
    } else {
        (Stage::Recipient, Stage::Relay)
    };
    for stage in [Stage::Client, Stage::Helo, Stage::Sender, first, second] {
        // Most stages have no list: no reply text is built for them.
        if st.restrictions.list(stage).is_empty() {
            continue;
        }
        let target = Target {
            shown: shown(stage, facts, addr),
            resolved: Some(&resolved),
        };
        if let Verdict::Reject(r) = evaluate(st, stage, facts, &target) {
            return Err(r);
        }
    }
    if !st.reject_unlisted_recipient {
        return Ok(resolved);
    }
    match unknown_local(st, &resolved, &display(addr)) {
        Some(r) => Err(r),
        None => Ok(resolved),
    }
}

/// DATA (`<DATA>`) or the end of the message (`<END-OF-MESSAGE>`).
pub(crate) fn content(st: &Settings, stage: Stage, facts: &Facts<'_>) -> Result<(), Reply> {
    let shown = if stage == Stage::Data {
        "DATA"
    } else {
        "END-OF-MESSAGE"
    };
    let target = Target {
        shown: shown.to_owned(),
        resolved: None,
    };
    match evaluate(st, stage, facts, &target) {
        Verdict::Reject(r) => Err(r),
        Verdict::Permit | Verdict::Dunno => Ok(()),
    }
}

/// ETRN: `smtpd_etrn_restrictions` (empty: every client may ask).
pub(crate) fn etrn(st: &Settings, facts: &Facts<'_>, domain: &str) -> Result<(), Reply> {
    let target = Target {
        shown: domain.to_owned(),
        resolved: None,
    };
    match evaluate(st, Stage::Etrn, facts, &target) {
        Verdict::Reject(r) => Err(r),
        Verdict::Permit | Verdict::Dunno => Ok(()),
    }
}

/// VRFY: only the local recipient table is consulted.
pub(crate) fn verify(st: &Settings, addr: &str) -> Result<(), Reply> {
    let resolved = st.resolve(addr);
    match unknown_local(st, &resolved, &display(addr)) {
        Some(r) => Err(r),
        None => Ok(()),
    }
}
