//! Access control at RCPT time: the relay and recipient restriction lists,
//! then the local recipient table, as Postfix's smtpd_check does.

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

fn evaluate(
    st: &Settings,
    list: &[String],
    client: IpAddr,
    addr: &str,
    resolved: &pfx_address::Resolved,
) -> Verdict {
    let shown = display(addr);
    for item in list {
        let v = match item.as_str() {
            "permit_mynetworks" if st.mynetworks.contains(client) => Verdict::Permit,
            "permit_mynetworks" | "permit_sasl_authenticated" => Verdict::Dunno,
            "permit_auth_destination" if st.authorized_destination(resolved) => Verdict::Permit,
            "permit_auth_destination" => Verdict::Dunno,
            "reject_unauth_destination" if !st.authorized_destination(resolved) => Verdict::Reject(
                Reply::new(554, "5.7.1", format!("<{shown}>: Relay access denied")),
            ),
            "defer_unauth_destination" if !st.authorized_destination(resolved) => Verdict::Reject(
                Reply::new(454, "4.7.1", format!("<{shown}>: Relay access denied")),
            ),
            "reject_unauth_destination" | "defer_unauth_destination" => Verdict::Dunno,
            "reject_unlisted_recipient" => match unknown_local(st, resolved, &shown) {
                Some(r) => Verdict::Reject(r),
                None => Verdict::Dunno,
            },
            "permit" => Verdict::Permit,
            "reject" => Verdict::Reject(Reply::new(
                554,
                "5.7.1",
                format!("<{shown}>: Recipient address rejected: Access denied"),
            )),
            "defer" => Verdict::Reject(Reply::new(
                450,
                "4.7.1",
                format!("<{shown}>: Recipient address rejected: Access denied"),
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
    for list in [&st.relay_restrictions, &st.recipient_restrictions] {
        if let Verdict::Reject(r) = evaluate(st, list, client, addr, &resolved) {
            return Err(r);
        }
    }
    match unknown_local(st, &resolved, &display(addr)) {
        Some(r) => Err(r),
        None => Ok(resolved),
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
