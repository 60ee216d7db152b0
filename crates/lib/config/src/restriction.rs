//! The smtpd restrictions postfix-rs implements, parsed from a list
//! (`smtpd_*_restrictions` and the classes of `smtpd_restriction_classes`).
//!
//! Items are separated by commas or white space; `{ … }` groups one item
//! with spaces in it (`check_policy_service { inet:host:port, timeout=10s }`).
//! A keyword that takes an argument (`check_client_access hash:/x`) takes
//! the next item. A list that names anything else (an unknown keyword, one
//! of Postfix's that postfix-rs does not implement, an argument missing) is
//! refused when the configuration is checked, not discovered at run time.

use std::collections::HashMap;
use std::time::Duration;

/// An argument-less restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    Permit,
    Reject,
    Defer,
    /// Remember a 450 for the end of the evaluation, unless something rejects.
    DeferIfPermit,
    /// Turn a later rejection into a deferral.
    DeferIfReject,
    /// The next restriction only logs what it would reject.
    WarnIfReject,
    PermitMynetworks,
    /// The client connected from one of this host's own addresses.
    PermitInetInterfaces,
    /// The client logged in with SMTP AUTH.
    PermitSaslAuthenticated,
    /// `smtpd_sender_login_maps` says someone else owns the sender address,
    /// or the logged-in client does not own it.
    RejectSenderLoginMismatch,
    /// As [`Self::RejectSenderLoginMismatch`], for logged-in clients only.
    RejectAuthenticatedSenderLoginMismatch,
    /// As [`Self::RejectSenderLoginMismatch`], for clients not logged in only.
    RejectUnauthenticatedSenderLoginMismatch,
    PermitAuthDestination,
    RejectUnauthDestination,
    DeferUnauthDestination,
    RejectUnauthPipelining,
    RejectInvalidHeloHostname,
    RejectNonFqdnHeloHostname,
    RejectUnknownHeloHostname,
    RejectNonFqdnSender,
    RejectNonFqdnRecipient,
    RejectUnknownClientHostname,
    RejectUnknownReverseClientHostname,
    RejectUnknownSenderDomain,
    RejectUnknownRecipientDomain,
    RejectUnlistedSender,
    RejectUnlistedRecipient,
    RejectMultiRecipientBounce,
    RejectPlaintextSession,
}

/// Each word with its keyword; later entries are Postfix's older names.
const WORDS: &[(Word, &str)] = &[
    (Word::Permit, "permit"),
    (Word::Reject, "reject"),
    (Word::Defer, "defer"),
    (Word::DeferIfPermit, "defer_if_permit"),
    (Word::DeferIfReject, "defer_if_reject"),
    (Word::WarnIfReject, "warn_if_reject"),
    (Word::PermitMynetworks, "permit_mynetworks"),
    (Word::PermitInetInterfaces, "permit_inet_interfaces"),
    (Word::PermitSaslAuthenticated, "permit_sasl_authenticated"),
    (
        Word::RejectSenderLoginMismatch,
        "reject_sender_login_mismatch",
    ),
    (
        Word::RejectAuthenticatedSenderLoginMismatch,
        "reject_authenticated_sender_login_mismatch",
    ),
    (
        Word::RejectUnauthenticatedSenderLoginMismatch,
        "reject_unauthenticated_sender_login_mismatch",
    ),
    (Word::PermitAuthDestination, "permit_auth_destination"),
    (Word::RejectUnauthDestination, "reject_unauth_destination"),
    (Word::DeferUnauthDestination, "defer_unauth_destination"),
    (Word::RejectUnauthPipelining, "reject_unauth_pipelining"),
    (
        Word::RejectInvalidHeloHostname,
        "reject_invalid_helo_hostname",
    ),
    (
        Word::RejectNonFqdnHeloHostname,
        "reject_non_fqdn_helo_hostname",
    ),
    (
        Word::RejectUnknownHeloHostname,
        "reject_unknown_helo_hostname",
    ),
    (Word::RejectNonFqdnSender, "reject_non_fqdn_sender"),
    (Word::RejectNonFqdnRecipient, "reject_non_fqdn_recipient"),
    (
        Word::RejectUnknownClientHostname,
        "reject_unknown_client_hostname",
    ),
    (
        Word::RejectUnknownReverseClientHostname,
        "reject_unknown_reverse_client_hostname",
    ),
    (
        Word::RejectUnknownSenderDomain,
        "reject_unknown_sender_domain",
    ),
    (
        Word::RejectUnknownRecipientDomain,
        "reject_unknown_recipient_domain",
    ),
    (Word::RejectUnlistedSender, "reject_unlisted_sender"),
    (Word::RejectUnlistedRecipient, "reject_unlisted_recipient"),
    (
        Word::RejectMultiRecipientBounce,
        "reject_multi_recipient_bounce",
    ),
    (Word::RejectPlaintextSession, "reject_plaintext_session"),
    // Postfix's names before 2.3.
    (Word::RejectInvalidHeloHostname, "reject_invalid_hostname"),
    (Word::RejectNonFqdnHeloHostname, "reject_non_fqdn_hostname"),
    (Word::RejectUnknownHeloHostname, "reject_unknown_hostname"),
    (Word::RejectUnknownClientHostname, "reject_unknown_client"),
];

impl Word {
    /// The keyword as written in main.cf.
    pub fn keyword(self) -> &'static str {
        WORDS
            .iter()
            .find(|(w, _)| *w == self)
            .map_or("", |(_, k)| k)
    }
}

/// What a `check_*_access` table is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Client,
    ReverseClient,
    Helo,
    Sender,
    Recipient,
    /// The ETRN domain.
    Etrn,
    /// The names of the HELO, sender or recipient domain's MX hosts (and
    /// their addresses).
    HeloMx,
    SenderMx,
    RecipientMx,
    /// The names of the domain's name servers (and their addresses).
    HeloNs,
    SenderNs,
    RecipientNs,
}

const ACCESS: &[(Access, &str)] = &[
    (Access::Client, "check_client_access"),
    (
        Access::ReverseClient,
        "check_reverse_client_hostname_access",
    ),
    (Access::Helo, "check_helo_access"),
    (Access::Sender, "check_sender_access"),
    (Access::Recipient, "check_recipient_access"),
    (Access::Etrn, "check_etrn_access"),
    (Access::HeloMx, "check_helo_mx_access"),
    (Access::SenderMx, "check_sender_mx_access"),
    (Access::RecipientMx, "check_recipient_mx_access"),
    (Access::HeloNs, "check_helo_ns_access"),
    (Access::SenderNs, "check_sender_ns_access"),
    (Access::RecipientNs, "check_recipient_ns_access"),
];

/// A DNS list a restriction asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsList {
    /// `reject_rbl_client`: the client address, reversed.
    RblClient,
    RhsblClient,
    RhsblReverseClient,
    RhsblHelo,
    RhsblSender,
    RhsblRecipient,
    /// `permit_dnswl_client`: an allow list of addresses.
    DnswlClient,
    /// `permit_rhswl_client`: an allow list of client names.
    RhswlClient,
}

const DNS_LISTS: &[(DnsList, &str)] = &[
    (DnsList::RblClient, "reject_rbl_client"),
    (DnsList::RhsblClient, "reject_rhsbl_client"),
    (DnsList::RhsblReverseClient, "reject_rhsbl_reverse_client"),
    (DnsList::RhsblHelo, "reject_rhsbl_helo"),
    (DnsList::RhsblSender, "reject_rhsbl_sender"),
    (DnsList::RhsblRecipient, "reject_rhsbl_recipient"),
    (DnsList::DnswlClient, "permit_dnswl_client"),
    (DnsList::RhswlClient, "permit_rhswl_client"),
];

/// `check_policy_service`: where the policy server is, and the settings
/// that differ from the `smtpd_policy_service_*` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyService {
    /// `inet:host:port` or `unix:path` (relative: below the queue directory).
    pub endpoint: String,
    pub timeout: Option<Duration>,
    pub max_idle: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub try_limit: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub default_action: Option<String>,
    pub policy_context: Option<String>,
}

/// One restriction of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restriction {
    Word(Word),
    /// `check_*_access type:name`.
    Access {
        what: Access,
        table: String,
    },
    /// `reject_rbl_client domain[=filter]` and the like.
    Dns {
        list: DnsList,
        domain: String,
        /// `=127.0.0.2`, `=127.0.0.[2..11]`: which answers count.
        filter: Option<String>,
    },
    Policy(PolicyService),
    /// `sleep N`: pause, then go on.
    Sleep(Duration),
    /// A name from `smtpd_restriction_classes`.
    Class(String),
}

impl Restriction {
    /// The keyword as written in main.cf.
    pub fn keyword(&self) -> String {
        match self {
            Self::Word(w) => w.keyword().to_owned(),
            Self::Access { what, table } => format!("{} {table}", access_keyword(*what)),
            Self::Dns { list, domain, .. } => format!("{} {domain}", dns_keyword(*list)),
            Self::Policy(p) => format!("check_policy_service {}", p.endpoint),
            Self::Sleep(d) => format!("sleep {}", d.as_secs()),
            Self::Class(c) => c.clone(),
        }
    }

    /// Every lookup table it names (`type:name`).
    pub fn tables(&self) -> Option<&str> {
        match self {
            Self::Access { table, .. } => Some(table),
            _ => None,
        }
    }
}

fn access_keyword(a: Access) -> &'static str {
    ACCESS.iter().find(|(x, _)| *x == a).map_or("", |(_, k)| k)
}

fn dns_keyword(l: DnsList) -> &'static str {
    DNS_LISTS
        .iter()
        .find(|(x, _)| *x == l)
        .map_or("", |(_, k)| k)
}

/// The lookup table types pfx-maps opens (after an optional `proxy:`).
pub const TABLE_TYPES: &[&str] = &[
    "hash",
    "btree",
    "lmdb",
    "cdb",
    "texthash",
    "regexp",
    "pcre",
    "cidr",
    "inline",
    "static",
    "unionmap",
    "pipemap",
    "tcp",
    "socketmap",
    "sqlite",
    "pgsql",
    "mysql",
    "unix",
    "nis",
];

/// The restriction lists postfix-rs evaluates. Any restriction may be in
/// any list, as with Postfix: one whose subject is missing there (a
/// recipient at ETRN, or at DATA with several recipients) does nothing.
pub const LISTS: &[&str] = &[
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
    "smtpd_etrn_restrictions",
];

/// Whether relay and recipient restrictions together hold one restriction
/// that can refuse mail for other domains (Postfix's smtpd will not start
/// without one).
pub fn closes_relay(restrictions: &[Restriction]) -> bool {
    restrictions.iter().any(|r| {
        matches!(
            r,
            Restriction::Word(
                Word::RejectUnauthDestination
                    | Word::DeferUnauthDestination
                    | Word::Reject
                    | Word::Defer
                    | Word::DeferIfPermit
            )
        )
    })
}

/// Splits a restriction list as Postfix does: commas and white space
/// separate items, `{ … }` is one item (braces kept).
pub fn tokens(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = value.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c == ',' || c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut depth = 0usize;
        let mut end = value.len();
        while let Some(&(i, c)) = chars.peek() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => return Err(format!("unexpected '}}' in \"{value}\"")),
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                c if c.is_whitespace() && depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
            chars.next();
        }
        if depth > 0 {
            return Err(format!("missing '}}' in \"{value}\""));
        }
        out.push(value[start..end].to_owned());
    }
    Ok(out)
}

/// The inside of a `{ … }` item, trimmed; `None` when it is not one.
pub fn braced(item: &str) -> Option<&str> {
    item.strip_prefix('{')?.strip_suffix('}').map(str::trim)
}

/// Parses the items of the list `name`; `classes` are the names declared in
/// `smtpd_restriction_classes`. Postfix keywords are case-insensitive.
pub fn parse(name: &str, items: &[String], classes: &[String]) -> Result<Vec<Restriction>, String> {
    let mut out = Vec::new();
    let mut items = items.iter();
    while let Some(item) = items.next() {
        let lower = item.to_ascii_lowercase();
        let mut argument = |what: &str| {
            items
                .next()
                .filter(|a| !WORDS.iter().any(|(_, k)| a.eq_ignore_ascii_case(k)))
                .cloned()
                .ok_or_else(|| format!("restriction \"{item}\" in {name}: missing {what}"))
        };
        let r = if let Some((w, _)) = WORDS.iter().find(|(_, k)| *k == lower) {
            Restriction::Word(*w)
        } else if let Some((a, _)) = ACCESS.iter().find(|(_, k)| *k == lower) {
            let table = argument("lookup table")?;
            let kind = table.strip_prefix("proxy:").unwrap_or(&table);
            match kind.split_once(':') {
                None => {
                    return Err(format!(
                        "restriction \"{item}\" in {name}: \"{table}\" is not a type:name table"
                    ))
                }
                Some((t, _)) if !TABLE_TYPES.contains(&t) => {
                    return Err(format!(
                        "restriction \"{item} {table}\" in {name}: table type \"{t}\" not implemented by postfix-rs"
                    ))
                }
                Some(_) => {}
            }
            Restriction::Access { what: *a, table }
        } else if let Some((l, _)) = DNS_LISTS.iter().find(|(_, k)| *k == lower) {
            let arg = argument("DNS list domain")?;
            let (domain, filter) = match arg.split_once('=') {
                Some((d, f)) => {
                    check_filter(f)
                        .map_err(|e| format!("restriction \"{item} {arg}\" in {name}: {e}"))?;
                    (d.to_owned(), Some(f.to_owned()))
                }
                None => (arg.clone(), None),
            };
            Restriction::Dns {
                list: *l,
                domain: domain.trim_end_matches('.').to_ascii_lowercase(),
                filter,
            }
        } else if lower == "check_policy_service" {
            let arg = argument("policy server")?;
            let spec =
                policy(&arg).map_err(|e| format!("restriction \"{item} {arg}\" in {name}: {e}"))?;
            Restriction::Policy(spec)
        } else if lower == "sleep" {
            let arg = argument("number of seconds")?;
            let secs = arg
                .parse::<u64>()
                .map_err(|_| format!("restriction \"sleep {arg}\" in {name}: bad number"))?;
            Restriction::Sleep(Duration::from_secs(secs))
        } else if let Some(c) = classes.iter().find(|c| c.eq_ignore_ascii_case(item)) {
            Restriction::Class(c.clone())
        } else {
            return Err(format!(
                "restriction \"{item}\" in {name}: not implemented by postfix-rs"
            ));
        };
        out.push(r);
    }
    Ok(out)
}

/// `=127.0.0.2`, `=127.0.0.[2..11]`, `=127.0.0.[2;4;6]`: four octets, each a
/// number or a bracketed list of numbers and ranges.
fn check_filter(f: &str) -> Result<(), String> {
    if filter_matches(f, std::net::Ipv4Addr::UNSPECIFIED).is_none() {
        return Err(format!("bad address pattern \"{f}\""));
    }
    Ok(())
}

/// Whether `ip` matches an address pattern; `None` when the pattern is bad.
pub fn filter_matches(pattern: &str, ip: std::net::Ipv4Addr) -> Option<bool> {
    let mut octets = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        let (part, tail) = if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let mut alternatives = Vec::new();
        for alt in part.split(';') {
            let (lo, hi) = match alt.split_once("..") {
                Some((a, b)) => (a.parse::<u8>().ok()?, b.parse::<u8>().ok()?),
                None => {
                    let v = alt.parse::<u8>().ok()?;
                    (v, v)
                }
            };
            alternatives.push((lo, hi));
        }
        octets.push(alternatives);
        rest = match tail.strip_prefix('.') {
            Some(t) if !t.is_empty() => t,
            None if tail.is_empty() => tail,
            _ => return None,
        };
    }
    if octets.len() != 4 {
        return None;
    }
    Some(
        octets
            .iter()
            .zip(ip.octets())
            .all(|(alts, o)| alts.iter().any(|(lo, hi)| (*lo..=*hi).contains(&o))),
    )
}

/// `inet:host:port`, `unix:path`, or `{ endpoint, name = value, … }`.
fn policy(arg: &str) -> Result<PolicyService, String> {
    let mut spec = PolicyService {
        endpoint: String::new(),
        timeout: None,
        max_idle: None,
        max_ttl: None,
        try_limit: None,
        retry_delay: None,
        default_action: None,
        policy_context: None,
    };
    let Some(inner) = braced(arg) else {
        spec.endpoint = arg.to_owned();
        return check_endpoint(spec);
    };
    let mut parts = tokens(inner)?.into_iter();
    spec.endpoint = parts.next().ok_or("no policy server")?;
    // `name = value` may come as one item or three, and a value in braces.
    let rest: Vec<String> = parts.collect();
    let joined = rest.join(" ");
    for setting in split_settings(&joined) {
        let (n, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("expected name=value, got \"{setting}\""))?;
        let (n, v) = (n.trim(), v.trim());
        let v = braced(v).unwrap_or(v).to_owned();
        let time = |v: &str| crate::value::parse_time(v, 's');
        match n {
            "timeout" => spec.timeout = Some(time(&v)?),
            "max_idle" => spec.max_idle = Some(time(&v)?),
            "max_ttl" => spec.max_ttl = Some(time(&v)?),
            "retry_delay" => spec.retry_delay = Some(time(&v)?),
            "try_limit" => {
                spec.try_limit = Some(v.parse().map_err(|_| format!("bad try_limit \"{v}\""))?)
            }
            "default_action" => spec.default_action = Some(v),
            "policy_context" => spec.policy_context = Some(v),
            _ => return Err(format!("unknown attribute \"{n}\"")),
        }
    }
    check_endpoint(spec)
}

/// `a=1, b = { x y }` → `["a=1", "b = { x y }"]`.
fn split_settings(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        // A new setting starts at a word that is followed by '=' later on;
        // here: items are separated by commas only (spaces may surround '=').
        if c == ',' && depth == 0 {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    out.push(cur);
    let mut merged: Vec<String> = Vec::new();
    for s in out.into_iter().map(|s| s.trim().to_owned()) {
        if s.is_empty() {
            continue;
        }
        // `timeout=10s max_idle=5s` written with spaces only.
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.len() > 1 && words.iter().all(|w| w.contains('=') && !w.starts_with('=')) {
            merged.extend(words.iter().map(|w| (*w).to_owned()));
        } else {
            merged.push(s);
        }
    }
    merged
}

fn check_endpoint(spec: PolicyService) -> Result<PolicyService, String> {
    let e = &spec.endpoint;
    let ok = match e.split_once(':') {
        Some(("inet", rest)) => rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty()),
        Some(("unix", rest)) => !rest.is_empty(),
        _ => false,
    };
    if ok {
        Ok(spec)
    } else {
        Err(format!(
            "policy server \"{e}\": expected inet:host:port or unix:pathname"
        ))
    }
}

/// Every list and class of one configuration, parsed.
#[derive(Debug, Default, Clone)]
pub struct Lists {
    pub lists: HashMap<String, Vec<Restriction>>,
    pub classes: HashMap<String, Vec<Restriction>>,
}

impl Lists {
    /// Parses the eight lists and the classes; `value` gives a parameter's
    /// expanded value (classes are parameters of their own).
    pub fn parse(value: &dyn Fn(&str) -> Result<String, String>) -> Result<Self, String> {
        let class_names = tokens(&value("smtpd_restriction_classes")?)?;
        let mut classes = HashMap::new();
        for c in &class_names {
            let items = tokens(&value(c)?)?;
            classes.insert(c.clone(), parse(c, &items, &class_names)?);
        }
        let mut lists = HashMap::new();
        for name in LISTS {
            let items = tokens(&value(name)?)?;
            lists.insert((*name).to_owned(), parse(name, &items, &class_names)?);
        }
        Ok(Self { lists, classes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(s: &str) -> Vec<String> {
        tokens(s).unwrap()
    }

    #[test]
    fn debian_relay_restrictions_parse() {
        let l = parse(
            "smtpd_relay_restrictions",
            &items("permit_mynetworks permit_sasl_authenticated defer_unauth_destination"),
            &[],
        )
        .unwrap();
        assert_eq!(
            l,
            [
                Restriction::Word(Word::PermitMynetworks),
                Restriction::Word(Word::PermitSaslAuthenticated),
                Restriction::Word(Word::DeferUnauthDestination)
            ]
        );
    }

    #[test]
    fn arguments_braces_and_classes() {
        let l = parse(
            "smtpd_recipient_restrictions",
            &items("check_client_access cidr:/etc/postfix/c, reject_rbl_client bl.test=127.0.0.[2..4], check_policy_service { inet:127.0.0.1:10023, timeout=10s, default_action=DUNNO }, sleep 1, mine, REJECT_INVALID_HOSTNAME"),
            &["mine".to_owned()],
        )
        .unwrap();
        assert_eq!(
            l[0],
            Restriction::Access {
                what: Access::Client,
                table: "cidr:/etc/postfix/c".into()
            }
        );
        assert_eq!(
            l[1],
            Restriction::Dns {
                list: DnsList::RblClient,
                domain: "bl.test".into(),
                filter: Some("127.0.0.[2..4]".into())
            }
        );
        let Restriction::Policy(p) = &l[2] else {
            panic!("{:?}", l[2])
        };
        assert_eq!(p.endpoint, "inet:127.0.0.1:10023");
        assert_eq!(p.timeout, Some(Duration::from_secs(10)));
        assert_eq!(p.default_action.as_deref(), Some("DUNNO"));
        assert_eq!(l[3], Restriction::Sleep(Duration::from_secs(1)));
        assert_eq!(l[4], Restriction::Class("mine".into()));
        assert_eq!(l[5], Restriction::Word(Word::RejectInvalidHeloHostname));
    }

    #[test]
    fn unknown_missing_and_misplaced_are_refused() {
        let e = parse(
            "smtpd_recipient_restrictions",
            &items("permit_mynetworks, check_client_access"),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            "restriction \"check_client_access\" in smtpd_recipient_restrictions: missing lookup table"
        );
        assert!(parse("smtpd_relay_restrictions", &items("reject_bogus"), &[]).is_err());
        assert!(parse(
            "smtpd_relay_restrictions",
            &items("check_client_access reject"),
            &[]
        )
        .is_err());
        assert!(parse(
            "smtpd_etrn_restrictions",
            &items("reject_unauth_destination"),
            &[]
        )
        .is_ok());
        assert!(parse(
            "smtpd_client_restrictions",
            &items("check_client_access ldap:/etc/postfix/ldap.cf"),
            &[]
        )
        .is_err());
        assert!(parse(
            "smtpd_data_restrictions",
            &items("reject_rbl_client bl=127.0.0"),
            &[]
        )
        .is_err());
        assert!(parse(
            "smtpd_etrn_restrictions",
            &items("PERMIT_MYNETWORKS, reject"),
            &[]
        )
        .is_ok());
        assert!(tokens("check_policy_service { inet:x:1").is_err());
    }

    #[test]
    fn address_filters() {
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(filter_matches("127.0.0.2", ip("127.0.0.2")), Some(true));
        assert_eq!(filter_matches("127.0.0.2", ip("127.0.0.3")), Some(false));
        assert_eq!(
            filter_matches("127.0.0.[2..4]", ip("127.0.0.3")),
            Some(true)
        );
        assert_eq!(
            filter_matches("127.0.0.[2;10]", ip("127.0.0.10")),
            Some(true)
        );
        assert_eq!(
            filter_matches("127.0.0.[2;10]", ip("127.0.0.3")),
            Some(false)
        );
        assert_eq!(filter_matches("127.0.0", ip("127.0.0.3")), None);
        assert_eq!(filter_matches("127.0.0.x", ip("127.0.0.3")), None);
    }
}
