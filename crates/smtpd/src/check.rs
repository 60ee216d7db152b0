//! Access control at RCPT time: the relay and recipient restriction lists,
//! then the local recipient table, as Postfix's smtpd_check does; and the
//! ETRN restriction list.

use std::net::IpAddr;

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

fn evaluate(st: &Settings, list: &[String], client: IpAddr, t: &Target<'_>) -> Verdict {
    let (shown, class) = (&t.shown, t.class);
    let authorized = t.resolved.map(|r| st.authorized_destination(r));
    for item in list {
        let v =
            match item.as_str() {
                "permit_mynetworks" if st.mynetworks.contains(client) => Verdict::Permit,
                "permit_mynetworks" | "permit_sasl_authenticated" => Verdict::Dunno,
                "permit_auth_destination" if authorized == Some(true) => Verdict::Permit,
                "permit_auth_destination" => Verdict::Dunno,
                "reject_unauth_destination" if authorized == Some(false) => Verdict::Reject(
                    Reply::new(554, "5.7.1", format!("<{shown}>: Relay access denied")),
                ),
                "defer_unauth_destination" if authorized == Some(false) => Verdict::Reject(
                    Reply::new(454, "4.7.1", format!("<{shown}>: Relay access denied")),
                ),
                "reject_unauth_destination" | "defer_unauth_destination" => Verdict::Dunno,
                "reject_unlisted_recipient" => {
                    match t.resolved.and_then(|r| unknown_local(st, r, shown)) {
                        Some(r) => Verdict::Reject(r),
                        None => Verdict::Dunno,
                    }
                }
                "permit" => Verdict::Permit,
                "reject" => Verdict::Reject(Reply::new(
                    554,
                    "5.7.1",
                    format!("<{shown}>: {class} rejected: Access denied"),
                )),
                "defer" => Verdict::Reject(Reply::new(
                    450,
                    "4.7.1",
                    format!("<{shown}>: {class} rejected: Access denied"),
                )),
                other => {
                    warn!("unknown smtpd restriction: \"{other}\"");
                    Verdict::Reject(Reply::new(451, "4.3.5", "Server configuration error"))
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
            format!("<{shown}>: Recipient address rejected: User unknown in local recipient table"),
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
    for list in [&st.relay_restrictions, &st.recipient_restrictions] {
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
