//! Access control at RCPT time: the relay and recipient restriction lists,
//! then the local recipient table, as Postfix's smtpd_check does; and the
//! ETRN restriction list.

use std::net::IpAddr;

use pfx_config::restriction::Restriction;
use pfx_smtp_proto::Reply;
use tracing::warn;

use crate::settings::Settings;

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
    /// The start of Postfix's reject text: `Recipient address`, `Etrn command`.
    class: &'static str,
    /// The resolved recipient; none outside RCPT, where the
    /// destination restrictions do not apply.
    resolved: Option<&'a pfx_address::Resolved>,
}

fn evaluate(st: &Settings, list: &[Restriction], client: IpAddr, t: &Target<'_>) -> Verdict {
    let (shown, class) = (&t.shown, t.class);
    let authorized = t.resolved.map(|r| st.authorized_destination(r));
    let enhanced = |code: u16| if code < 500 { "4.7.1" } else { "5.7.1" };
    for item in list {
        let v = match item {
            Restriction::PermitMynetworks if st.mynetworks.contains(client) => Verdict::Permit,
            Restriction::PermitMynetworks | Restriction::PermitSaslAuthenticated => Verdict::Dunno,
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

/// Checks a recipient; `Ok(resolved address)` or the reject reply.
pub(crate) fn recipient(
    st: &Settings,
    client: IpAddr,
    addr: &str,
) -> Result<pfx_address::Resolved, Reply> {
    let resolved = st.resolve(addr);
    let target = Target {
        shown: display(addr),
        class: "Recipient address",
        resolved: Some(&resolved),
    };
    let lists = if st.relay_before_recipient {
        [&st.relay_restrictions, &st.recipient_restrictions]
    } else {
        [&st.recipient_restrictions, &st.relay_restrictions]
    };
    for list in lists {
        if let Verdict::Reject(r) = evaluate(st, list, client, &target) {
            return Err(r);
        }
    }
    match unknown_local(st, &resolved, &target.shown) {
        Some(r) => Err(r),
        None => Ok(resolved),
    }
}

/// ETRN: `smtpd_etrn_restrictions` (empty: every client may ask).
pub(crate) fn etrn(st: &Settings, client: IpAddr, domain: &str) -> Result<(), Reply> {
    let target = Target {
        shown: domain.to_owned(),
        class: "Etrn command",
        resolved: None,
    };
    match evaluate(st, &st.etrn_restrictions, client, &target) {
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
