//! Access policy: one restriction list per stage of the SMTP conversation
//! (Postfix's `smtpd_*_restrictions`), evaluated as Postfix's smtpd_check
//! does.
//!
//! With `smtpd_delay_reject = yes` (the only value postfix-rs accepts) the
//! client, HELO and sender lists are evaluated again at every RCPT (and
//! VRFY), before the relay and recipient lists, so a rejection names the
//! recipient. In a list the first `OK` (permit) or rejection ends that
//! list; `DUNNO` goes on. `defer_if_permit` keeps a 450 for the end of the
//! evaluation (unless something rejects), `defer_if_reject` turns a later
//! 5xx of the same list into its 450, `warn_if_reject` makes the next
//! restriction log `reject_warning` instead of rejecting.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use pfx_config::restriction::{Access, DnsList, Restriction, Word};
use pfx_smtp_proto::Reply;
use pfx_tls::Negotiated;
use tracing::{info, warn};

use crate::access;
use crate::settings::Settings;
use crate::stages::Stage;

/// How a client name lookup ended (Postfix's peer name status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Ok,
    /// A DNS failure that may pass.
    Temporary,
    /// No name, or one that does not resolve back to the address.
    Permanent,
}

/// What the session knows when the restrictions are judged.
#[derive(Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) client_ip: IpAddr,
    pub(crate) client_port: u16,
    /// `name[address]`.
    pub(crate) client: &'a str,
    /// The verified client name, or `unknown`.
    pub(crate) name: &'a str,
    pub(crate) name_status: Peer,
    /// The PTR name, verified or not, or `unknown`.
    pub(crate) reverse_name: &'a str,
    pub(crate) reverse_status: Peer,
    pub(crate) server: Option<SocketAddr>,
    pub(crate) helo: Option<&'a str>,
    pub(crate) esmtp: bool,
    /// MAIL FROM's address (`Some("")` for the null sender).
    pub(crate) sender: Option<&'a str>,
    pub(crate) recipient: Option<&'a str>,
    /// Recipients accepted so far.
    pub(crate) rcpt_count: usize,
    /// The SASL mechanism and login name, once AUTH succeeded.
    pub(crate) login: Option<(&'a str, &'a str)>,
    pub(crate) sasl_sender: Option<&'a str>,
    pub(crate) tls: Option<&'a Negotiated>,
    /// The client sent commands ahead without being allowed to.
    pub(crate) ill_pipelining: bool,
    pub(crate) queue_id: Option<&'a str>,
    /// The message size, or MAIL FROM's SIZE=.
    pub(crate) size: u64,
    pub(crate) etrn: Option<&'a str>,
    /// The transaction's policy instance (the same for all its requests).
    pub(crate) instance: &'a str,
    /// RCPT, VRFY, DATA, END-OF-MESSAGE or ETRN.
    pub(crate) command: &'static str,
}

/// What the restrictions asked for besides a verdict (access table and
/// policy service actions), for the message of this transaction.
#[derive(Debug, Default, Clone)]
pub(crate) struct Effects {
    pub(crate) hold: bool,
    pub(crate) discard: bool,
    /// Headers to put before the message (`PREPEND`).
    pub(crate) prepend: Vec<String>,
    /// `REDIRECT`: deliver to this address instead.
    pub(crate) redirect: Option<String>,
    pub(crate) bcc: Vec<String>,
    /// `FILTER transport:destination`: the content filter instead of
    /// `content_filter`.
    pub(crate) filter: Option<String>,
}

/// Why a request is refused; only policy refusals can be made warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    Policy,
    Protocol,
    Bounce,
    /// A configuration or software problem (451 4.3.5).
    Software,
    /// A table or DNS lookup failed (451 4.3.0).
    Data,
}

#[derive(Debug, Clone)]
struct Held {
    class: ErrorClass,
    code: u16,
    dsn: String,
    text: String,
}

/// The outcome of a restriction or a list.
enum Status {
    Ok,
    Dunno,
    Reject(Reply),
}

type Eval<'b> = Pin<Box<dyn Future<Output = Status> + Send + 'b>>;

/// One evaluation (a RCPT, DATA, end of data or ETRN).
pub(crate) struct Checker<'a> {
    st: &'a Settings,
    f: Facts<'a>,
    fx: &'a mut Effects,
    recursion: usize,
    warn_if_reject: usize,
    defer_if_permit: Option<Held>,
    defer_if_reject: Option<Held>,
    /// The implicit unlisted sender/recipient check already ran.
    sender_checked: bool,
    recipient_checked: bool,
}

/// The text a reject reply shows for the stage's subject.
const CLIENT: &str = "Client host";
const REVERSE: &str = "Unverified Client host";
const HELO: &str = "Helo command";
const SENDER: &str = "Sender address";
const RECIPIENT: &str = "Recipient address";

impl<'a> Checker<'a> {
    pub(crate) fn new(st: &'a Settings, f: Facts<'a>, fx: &'a mut Effects) -> Self {
        Self {
            st,
            f,
            fx,
            recursion: 0,
            warn_if_reject: 0,
            defer_if_permit: None,
            defer_if_reject: None,
            sender_checked: false,
            recipient_checked: false,
        }
    }

    /// Postfix's log line for what the restrictions did.
    fn log(&self, whatsup: &str, text: &str) {
        let mut line = format!(
            "{}: {whatsup}: {} from {}: {text};",
            self.f.queue_id.unwrap_or("NOQUEUE"),
            self.f.command,
            self.f.client
        );
        if let Some(s) = self.f.sender {
            line.push_str(&format!(" from=<{s}>"));
        }
        if let Some(r) = self.f.recipient {
            line.push_str(&format!(" to=<{r}>"));
        }
        line.push_str(if self.f.esmtp {
            " proto=ESMTP"
        } else {
            " proto=SMTP"
        });
        if let Some(h) = self.f.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        info!("{line}");
    }

    /// Postfix's smtpd_check_reject: the reply, fixed up and logged; a
    /// warning only under `warn_if_reject`; a 5xx made the deferral kept
    /// by `defer_if_reject`.
    fn reject(&mut self, class: ErrorClass, code: u16, dsn: &str, text: String) -> Status {
        let warn_only =
            self.warn_if_reject > 0 && !matches!(class, ErrorClass::Software | ErrorClass::Data);
        let (mut code, mut dsn, mut text) = (code, dsn.to_owned(), text);
        if !(400..=599).contains(&code) || !valid_dsn(&dsn) {
            warn!("SMTP reply code configuration error: {code} {dsn} {text}");
            (code, dsn, text) = (450, "4.7.1".into(), "Service unavailable".into());
        }
        if !warn_only && code >= 500 {
            if let Some(d) = self.defer_if_reject.take() {
                self.warn_if_reject = 0;
                return self.reject(d.class, d.code, &d.dsn, d.text);
            }
        }
        let first = code.to_string().chars().next().unwrap_or('4');
        dsn.replace_range(..1, &first.to_string());
        // Postfix's printable(), and RFC 5321's line length.
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut room = 510 - 4 - dsn.len() - 1;
        while text.len() > room {
            room -= 1;
            while !text.is_char_boundary(room) {
                room -= 1;
            }
            text.truncate(room);
        }
        let reply = Reply::new(code, &dsn, text);
        self.log(
            if warn_only {
                "reject_warning"
            } else {
                "reject"
            },
            &reply.to_string(),
        );
        if warn_only {
            return Status::Dunno;
        }
        Status::Reject(reply)
    }

    /// `defer_if_permit`: remembered (the first reason only), unless a
    /// warning was asked for.
    fn defer_if_permit(&mut self, class: ErrorClass, code: u16, dsn: &str, text: String) -> Status {
        if self.warn_if_reject > 0 {
            return self.reject(class, code, dsn, text);
        }
        self.defer_if_permit.get_or_insert(Held {
            class,
            code,
            dsn: dsn.to_owned(),
            text,
        });
        Status::Dunno
    }

    fn defer_if_reject(&mut self, code: u16, dsn: &str, text: String) -> Status {
        self.defer_if_reject.get_or_insert(Held {
            class: ErrorClass::Policy,
            code,
            dsn: dsn.to_owned(),
            text,
        });
        Status::Dunno
    }

    fn server_error(&mut self) -> Status {
        self.reject(
            ErrorClass::Software,
            451,
            "4.3.5",
            "Server configuration error".into(),
        )
    }

    fn lookup_failure(&mut self, name: &str) -> Status {
        self.reject(
            ErrorClass::Data,
            451,
            "4.3.0",
            format!("<{name}>: Temporary lookup failure"),
        )
    }

    /// One list (or class, or access table answer), with what a reply
    /// names and the check a bare `type:name` item means.
    fn list<'b>(
        &'b mut self,
        list: &'b [Restriction],
        name: &'b str,
        class: &'static str,
    ) -> Eval<'b> {
        Box::pin(async move {
            self.recursion += 1;
            let mut status = Status::Dunno;
            for r in list {
                if self.fx.discard {
                    break;
                }
                if r == &Restriction::Word(Word::WarnIfReject) {
                    if self.warn_if_reject == 0 {
                        self.warn_if_reject = self.recursion;
                    }
                    continue;
                }
                status = self.one(r, name, class).await;
                if self.warn_if_reject >= self.recursion {
                    self.warn_if_reject = 0;
                }
                if !matches!(status, Status::Dunno) {
                    break;
                }
                if self.defer_if_permit.is_some() && self.defer_if_reject.is_some() {
                    break;
                }
            }
            self.recursion -= 1;
            if self.warn_if_reject > self.recursion {
                self.warn_if_reject = 0;
            }
            status
        })
    }

    /// One restriction.
    async fn one(&mut self, r: &Restriction, name: &str, class: &'static str) -> Status {
        let f = self.f;
        let st = self.st;
        match r {
            Restriction::Word(w) => self.word(*w, name, class).await,
            Restriction::Access { what, table } => self.access(*what, table).await,
            Restriction::Dns {
                list,
                domain,
                filter,
            } => self.dnsxl(*list, domain, filter.as_deref()).await,
            Restriction::Policy(spec) => {
                let answer = crate::policy::ask(st, spec, &f).await;
                let (value, origin) = match answer {
                    Ok(action) => (action, spec.endpoint.as_str()),
                    Err(default) => (default, spec.endpoint.as_str()),
                };
                self.table_result(origin, &value, "policy query", name, class, false)
                    .await
            }
            Restriction::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Status::Dunno
            }
            Restriction::Class(c) => match st.restrictions.class(c) {
                Some(list) => self.list(list, name, class).await,
                None => self.server_error(),
            },
        }
    }

    async fn word(&mut self, w: Word, name: &str, class: &'static str) -> Status {
        let f = self.f;
        let st = self.st;
        match w {
            Word::Permit => Status::Ok,
            Word::Reject => self.reject(
                ErrorClass::Policy,
                st.reject_code,
                "5.7.1",
                format!("<{name}>: {class} rejected: Access denied"),
            ),
            Word::Defer => self.reject(
                ErrorClass::Policy,
                st.defer_code,
                "4.3.2",
                format!("<{name}>: {class} rejected: Try again later"),
            ),
            Word::DeferIfPermit => self.defer_if_permit(
                ErrorClass::Policy,
                450,
                "4.7.0",
                format!("<{name}>: {class} rejected: defer_if_permit requested"),
            ),
            Word::DeferIfReject => self.defer_if_reject(
                450,
                "4.7.0",
                format!("<{name}>: {class} rejected: defer_if_reject requested"),
            ),
            Word::WarnIfReject => Status::Dunno,
            Word::PermitMynetworks if st.mynetworks.contains(f.client_ip) => Status::Ok,
            Word::PermitInetInterfaces if f.server.map(|s| s.ip()) == Some(f.client_ip) => {
                Status::Ok
            }
            Word::PermitSaslAuthenticated if f.login.is_some() => Status::Ok,
            Word::PermitMynetworks | Word::PermitInetInterfaces | Word::PermitSaslAuthenticated => {
                Status::Dunno
            }
            Word::RejectSenderLoginMismatch
            | Word::RejectAuthenticatedSenderLoginMismatch
            | Word::RejectUnauthenticatedSenderLoginMismatch => match login_mismatch(st, w, &f) {
                Some(Ok((code, dsn, text))) => self.reject(ErrorClass::Policy, code, dsn, text),
                Some(Err(addr)) => self.lookup_failure(&addr),
                None => Status::Dunno,
            },
            Word::PermitAuthDestination => {
                match f.recipient.map(|r| (r, st.authorized_destination(r))) {
                    Some((_, Ok(true))) => Status::Ok,
                    Some((r, Err(e))) => {
                        warn!("{e}");
                        self.lookup_failure(&display(r))
                    }
                    _ => Status::Dunno,
                }
            }
            Word::RejectUnauthDestination | Word::DeferUnauthDestination => {
                let Some(r) = f.recipient else {
                    return Status::Dunno;
                };
                match st.authorized_destination(r) {
                    Ok(true) => return Status::Dunno,
                    Ok(false) => {}
                    Err(e) => {
                        warn!("{e}");
                        return self.lookup_failure(&display(r));
                    }
                }
                let (code, dsn) = if w == Word::RejectUnauthDestination {
                    (st.relay_domains_reject_code, "5.7.1")
                } else {
                    (st.relay_domains_reject_code - 100, "4.7.1")
                };
                self.reject(
                    ErrorClass::Policy,
                    code,
                    dsn,
                    format!("<{}>: Relay access denied", display(r)),
                )
            }
            Word::RejectUnauthPipelining if f.ill_pipelining => self.reject(
                ErrorClass::Protocol,
                503,
                "5.5.0",
                format!("<{name}>: {class} rejected: Improper use of SMTP command pipelining"),
            ),
            Word::RejectUnauthPipelining => Status::Dunno,
            Word::RejectPlaintextSession if f.tls.is_none() => self.reject(
                ErrorClass::Policy,
                st.codes.plaintext,
                "4.7.1",
                "Session encryption is required".into(),
            ),
            Word::RejectPlaintextSession => Status::Dunno,
            Word::RejectInvalidHeloHostname
            | Word::RejectNonFqdnHeloHostname
            | Word::RejectUnknownHeloHostname => {
                let Some(helo) = f.helo else {
                    return Status::Dunno;
                };
                if helo.starts_with('[') {
                    return self.invalid_hostaddr(helo);
                }
                let name = helo.strip_suffix('.').unwrap_or(helo);
                match w {
                    Word::RejectInvalidHeloHostname
                        if !pfx_smtp_proto::valid_hostname(name)
                            && name.parse::<IpAddr>().is_err() =>
                    {
                        self.reject(
                            ErrorClass::Policy,
                            st.codes.invalid_hostname,
                            "5.5.2",
                            format!("<{helo}>: {HELO} rejected: Invalid name"),
                        )
                    }
                    Word::RejectNonFqdnHeloHostname
                        if !pfx_smtp_proto::valid_hostname(name) || !name.contains('.') =>
                    {
                        self.reject(
                            ErrorClass::Policy,
                            st.codes.non_fqdn,
                            "5.5.2",
                            format!("<{helo}>: {HELO} rejected: need fully-qualified hostname"),
                        )
                    }
                    Word::RejectUnknownHeloHostname => self.unknown_hostname(helo).await,
                    _ => Status::Dunno,
                }
            }
            Word::RejectNonFqdnSender => match f.sender {
                Some(s) if !s.is_empty() => self.non_fqdn_address(s, SENDER),
                _ => Status::Dunno,
            },
            Word::RejectNonFqdnRecipient => match f.recipient {
                Some(r) => self.non_fqdn_address(r, RECIPIENT),
                None => Status::Dunno,
            },
            Word::RejectUnknownClientHostname if f.name_status != Peer::Ok => self.reject(
                ErrorClass::Policy,
                if f.name_status == Peer::Permanent {
                    st.codes.unknown_client
                } else {
                    450
                },
                "4.7.25",
                format!(
                    "{CLIENT} rejected: cannot find your hostname, [{}]",
                    f.client_ip
                ),
            ),
            Word::RejectUnknownReverseClientHostname if f.reverse_status != Peer::Ok => self
                .reject(
                    ErrorClass::Policy,
                    if f.reverse_status == Peer::Permanent {
                        st.codes.unknown_client
                    } else {
                        450
                    },
                    "4.7.1",
                    format!(
                        "{CLIENT} rejected: cannot find your reverse hostname, [{}]",
                        f.client_ip
                    ),
                ),
            Word::RejectUnknownClientHostname | Word::RejectUnknownReverseClientHostname => {
                Status::Dunno
            }
            Word::RejectUnknownSenderDomain => match f.sender {
                Some(s) if !s.is_empty() => self.unknown_address(s, SENDER).await,
                _ => Status::Dunno,
            },
            Word::RejectUnknownRecipientDomain => match f.recipient {
                Some(r) => self.unknown_address(r, RECIPIENT).await,
                None => Status::Dunno,
            },
            Word::RejectUnlistedSender => match f.sender {
                Some(s) if !s.is_empty() => self.unlisted(s, SENDER),
                _ => Status::Dunno,
            },
            Word::RejectUnlistedRecipient => match f.recipient {
                Some(r) if !r.is_empty() => self.unlisted(r, RECIPIENT),
                _ => Status::Dunno,
            },
            Word::RejectMultiRecipientBounce => {
                let before = usize::from(f.command != "RCPT");
                if f.sender == Some("") && f.rcpt_count > before {
                    self.reject(
                        ErrorClass::Policy,
                        st.codes.multi_recipient_bounce,
                        "5.5.3",
                        format!("<{name}>: {class} rejected: Multi-recipient bounce"),
                    )
                } else {
                    Status::Dunno
                }
            }
        }
    }

    fn invalid_hostaddr(&mut self, helo: &str) -> Status {
        let inner = helo
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(helo);
        let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
        if inner.parse::<IpAddr>().is_ok() {
            return Status::Dunno;
        }
        self.reject(
            ErrorClass::Policy,
            self.st.codes.invalid_hostname,
            "5.5.2",
            format!("<{helo}>: {HELO} rejected: invalid ip address"),
        )
    }

    fn non_fqdn_address(&mut self, addr: &str, class: &'static str) -> Status {
        let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        if domain.starts_with('[') && domain.ends_with(']') {
            return Status::Dunno;
        }
        let d = domain.strip_suffix('.').unwrap_or(domain);
        if !d.is_empty() && pfx_smtp_proto::valid_hostname(d) && d.contains('.') {
            return Status::Dunno;
        }
        self.reject(
            ErrorClass::Policy,
            self.st.codes.non_fqdn,
            "4.5.2",
            format!(
                "<{}>: {class} rejected: need fully-qualified address",
                display(addr)
            ),
        )
    }

    /// `reject_unknown_helo_hostname`: no A, AAAA or MX record.
    async fn unknown_hostname(&mut self, helo: &str) -> Status {
        let dns = &self.st.dns;
        let name = helo.strip_suffix('.').unwrap_or(helo);
        let mut temporary = false;
        match dns.addresses(name).await {
            Ok(_) => return Status::Dunno,
            Err(pfx_dns::Error::Temporary(_)) => temporary = true,
            Err(pfx_dns::Error::NotFound) => {}
        }
        match dns.mx(name).await {
            Ok(_) => return Status::Dunno,
            Err(pfx_dns::Error::Temporary(_)) => temporary = true,
            Err(pfx_dns::Error::NotFound) => {}
        }
        let text = format!("<{helo}>: {HELO} rejected: Host not found");
        if temporary {
            if self.st.tempfail.helo_defer_if_permit {
                return self.defer_if_permit(ErrorClass::Policy, 450, "4.7.1", text);
            }
            return self.reject(ErrorClass::Policy, 450, "4.7.1", text);
        }
        self.reject(
            ErrorClass::Policy,
            self.st.codes.unknown_hostname,
            "4.7.1",
            text,
        )
    }

    /// `reject_unknown_sender_domain` / `_recipient_domain`: a domain that
    /// is not ours and has no MX, A or AAAA record.
    async fn unknown_address(&mut self, addr: &str, class: &'static str) -> Status {
        if !addr.contains('@') {
            return Status::Dunno;
        }
        // The domain the address resolves to (`u%d@ours` is `u@d`); our
        // own (local, virtual) need no DNS; a table that cannot tell is
        // a temporary failure, as in Postfix.
        let st = self.st;
        let resolved = st.resolve(addr);
        match st.addresses.class(&resolved) {
            Ok(c) if c.is_final() => return Status::Dunno,
            Ok(_) => {}
            Err(e) => {
                warn!("{e}");
                return self.lookup_failure(&display(addr));
            }
        }
        let domain = resolved.domain.as_str();
        if domain.is_empty() || (domain.starts_with('[') && domain.ends_with(']')) {
            return Status::Dunno;
        }
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let sender = class == SENDER;
        let shown = display(addr);
        let dsn = if sender { "4.1.8" } else { "4.1.2" };
        let dns = &self.st.dns;
        let mut temporary = false;
        match dns.mx(domain).await {
            Ok(mx) if mx.iter().all(|(_, h)| h.is_empty() || h == ".") => {
                return self.reject(
                    ErrorClass::Policy,
                    if sender { 550 } else { 556 },
                    if sender { "4.7.27" } else { "4.1.10" },
                    format!(
                        "<{shown}>: {class} rejected: Domain {domain} does not accept mail (nullMX)"
                    ),
                )
            }
            Ok(_) => return Status::Dunno,
            Err(pfx_dns::Error::Temporary(_)) => temporary = true,
            Err(pfx_dns::Error::NotFound) => match dns.addresses(domain).await {
                Ok(_) => return Status::Dunno,
                Err(pfx_dns::Error::Temporary(_)) => temporary = true,
                Err(pfx_dns::Error::NotFound) => {}
            },
        }
        let text = format!("<{shown}>: {class} rejected: Domain not found");
        if temporary {
            if self.st.tempfail.address_defer_if_permit {
                return self.defer_if_permit(ErrorClass::Policy, 450, dsn, text);
            }
            return self.reject(ErrorClass::Policy, 450, dsn, text);
        }
        self.reject(ErrorClass::Policy, self.st.codes.unknown_address, dsn, text)
    }

    /// `reject_unlisted_sender` / `reject_unlisted_recipient`, Postfix's
    /// check_rcpt_maps: an address that a canonical table or
    /// `virtual_alias_maps` knows passes;
    /// one that resolves to the error transport (unknown in a virtual alias
    /// domain, relocated) is refused with its text; otherwise the table of
    /// its class must know it: `local_recipient_maps`,
    /// `virtual_mailbox_maps`, `relay_recipient_maps` (an empty table
    /// accepts every address of its class).
    fn unlisted(&mut self, addr: &str, class: &'static str) -> Status {
        if self.st.no_unknown_recipient_checks {
            return Status::Dunno;
        }
        if self.warn_if_reject == 0 {
            if class == SENDER {
                self.sender_checked = true;
            } else {
                self.recipient_checked = true;
            }
        }
        let st = self.st;
        let shown = display(addr);
        let sender_class = class == SENDER;
        let res = match st.addresses.resolve(self.f.sender.unwrap_or(""), addr) {
            Ok(res) => res,
            Err(e) => {
                warn!("{e}");
                return self.lookup_failure(&shown);
            }
        };
        let r = &res.address;
        let full = r.address().to_ascii_lowercase();
        // An address a canonical or virtual alias table knows is valid.
        let mut known = vec![
            ("recipient_canonical_maps", &st.recipient_canonical_maps),
            ("canonical_maps", &st.canonical_maps),
            ("virtual_alias_maps", &st.virtual_alias_maps),
        ];
        if sender_class {
            known.insert(1, ("sender_canonical_maps", &st.sender_canonical_maps));
        }
        for (name, maps) in known.into_iter().filter(|(_, m)| !m.is_empty()) {
            match st
                .addresses
                .find(maps, &full, pfx_resolve::Strategy::DEFAULT)
            {
                Ok(Some(_)) => return Status::Dunno,
                Ok(None) => {}
                Err(e) => {
                    warn!("{name}: {e}");
                    return self.lookup_failure(&shown);
                }
            }
        }
        if res.transport == "error" || res.transport == "retry" {
            let bounce = res.transport == "error";
            let default = match (bounce, sender_class) {
                (true, true) => "5.1.0",
                (true, false) => "5.1.1",
                (false, true) => "4.1.0",
                (false, false) => "4.1.1",
            };
            let (dsn, text) = pfx_smtp_proto::dsn_split(default, &res.nexthop);
            let code = match (bounce, res.class) {
                (false, _) => 450,
                (true, pfx_resolve::Class::Alias) => st.unknown_alias_code,
                (true, _) => 550,
            };
            let dsn = access::dsn_fix(&dsn, class);
            return self.reject(
                ErrorClass::Bounce,
                code,
                &dsn,
                format!("<{shown}>: {class} rejected: {text}"),
            );
        }
        let (table, code, name) = match res.class {
            pfx_resolve::Class::Local => return self.unlisted_local(r, &shown, class),
            pfx_resolve::Class::Virtual => (
                &st.virtual_mailbox_maps,
                st.unknown_mailbox_code,
                "virtual mailbox table",
            ),
            pfx_resolve::Class::Relay => (
                &st.relay_recipients,
                st.unknown_relay_code,
                "relay recipient table",
            ),
            pfx_resolve::Class::Alias | pfx_resolve::Class::Default => return Status::Dunno,
        };
        if table.is_empty() {
            return Status::Dunno;
        }
        match st
            .addresses
            .find(table, &full, pfx_resolve::Strategy::DEFAULT)
        {
            Ok(Some(_)) => Status::Dunno,
            Ok(None) => self.reject(
                ErrorClass::Bounce,
                code,
                if sender_class { "5.1.0" } else { "5.1.1" },
                format!(
                    "<{shown}>: {class} rejected: User unknown{}",
                    if st.show_unknown_table {
                        format!(" in {name}")
                    } else {
                        String::new()
                    }
                ),
            ),
            Err(e) => {
                warn!("{name}: {e}");
                self.lookup_failure(&shown)
            }
        }
    }

    /// The local class: `local_recipient_maps` must know the address.
    fn unlisted_local(
        &mut self,
        r: &pfx_address::Resolved,
        shown: &str,
        class: &'static str,
    ) -> Status {
        let st = self.st;
        if st.local_recipients.is_empty() {
            return Status::Dunno;
        }
        let exempt = [
            st.double_bounce_sender.as_str(),
            "postmaster",
            "mailer-daemon",
        ];
        if exempt.iter().any(|e| r.local.eq_ignore_ascii_case(e)) {
            return Status::Dunno;
        }
        // Asked as Postfix asks every address table: `user+ext@domain`,
        // `user@domain`, `user+ext`, `user`, `@domain`.
        let full = r.address().to_ascii_lowercase();
        match st
            .addresses
            .find(&st.local_recipients, &full, pfx_resolve::Strategy::DEFAULT)
        {
            Ok(Some(_)) => Status::Dunno,
            Ok(None) => self.reject(
                ErrorClass::Bounce,
                st.unknown_local_code,
                if class == SENDER { "5.1.0" } else { "5.1.1" },
                format!(
                    "<{shown}>: {class} rejected: User unknown{}",
                    if st.show_unknown_table {
                        " in local recipient table"
                    } else {
                        ""
                    }
                ),
            ),
            Err(e) => {
                warn!("local_recipient_maps: {e}");
                self.lookup_failure(shown)
            }
        }
    }

    /// `check_*_access`.
    async fn access(&mut self, what: Access, table: &str) -> Status {
        let f = self.f;
        let parent = self.st.parent_access;
        match what {
            Access::Client => {
                let mut keys = access::domain_keys(&f.name.to_ascii_lowercase(), parent);
                keys.extend(access::address_keys(&f.client_ip.to_string()));
                self.lookup_keys(table, &keys, f.client, CLIENT, false)
                    .await
            }
            Access::ReverseClient => {
                let mut keys = access::domain_keys(&f.reverse_name.to_ascii_lowercase(), parent);
                keys.extend(access::address_keys(&f.client_ip.to_string()));
                self.lookup_keys(table, &keys, f.reverse_name, REVERSE, true)
                    .await
            }
            Access::Helo => match f.helo {
                Some(h) => {
                    let keys = access::domain_keys(h, parent);
                    self.lookup_keys(table, &keys, h, HELO, false).await
                }
                None => Status::Dunno,
            },
            Access::Sender => match f.sender {
                Some("") => {
                    let keys = [(self.st.null_access_key.clone(), false)];
                    self.lookup_keys(table, &keys, "", SENDER, false).await
                }
                Some(s) => self.mail_access(table, s, SENDER).await,
                None => Status::Dunno,
            },
            Access::Recipient => match f.recipient {
                Some(r) => self.mail_access(table, r, RECIPIENT).await,
                None => Status::Dunno,
            },
            Access::Etrn => match f.etrn {
                Some(d) => {
                    let keys = access::domain_keys(&d.to_ascii_lowercase(), parent);
                    self.lookup_keys(table, &keys, d, "Etrn command", false)
                        .await
                }
                None => Status::Dunno,
            },
            Access::HeloMx | Access::HeloNs => match f.helo {
                Some(h) => {
                    self.server_access(table, h, what == Access::HeloMx, h, HELO)
                        .await
                }
                None => Status::Dunno,
            },
            Access::SenderMx | Access::SenderNs => match f.sender {
                Some(s) if !s.is_empty() => {
                    self.server_access(table, s, what == Access::SenderMx, &display(s), SENDER)
                        .await
                }
                _ => Status::Dunno,
            },
            Access::RecipientMx | Access::RecipientNs => match f.recipient {
                Some(r) if !r.is_empty() => {
                    let shown = display(r);
                    self.server_access(table, r, what == Access::RecipientMx, &shown, RECIPIENT)
                        .await
                }
                _ => Status::Dunno,
            },
        }
    }

    /// An address, resolved as trivial-rewrite would, by access(5)'s keys.
    async fn mail_access(&mut self, table: &str, addr: &str, class: &'static str) -> Status {
        let resolved = self.st.resolve(addr);
        let keys = access::mail_keys(
            &resolved.address(),
            &self.st.recipient_delimiter,
            self.st.parent_access,
        );
        let status = self
            .lookup_keys(table, &keys, &display(addr), class, false)
            .await;
        // A routed recipient (`user%victim@relay.example`) is never let
        // through by a table's OK: where it ends up is not the table's call.
        if matches!(status, Status::Ok) && class == RECIPIENT && resolved.routed {
            return Status::Dunno;
        }
        status
    }

    /// Asks `table` for each key in turn (the partial ones of fixed-key
    /// tables only); the first answer decides. `no_ok`: an OK answer is a
    /// configuration error (Postfix forbids allow-listing by what the
    /// client itself can claim).
    async fn lookup_keys(
        &mut self,
        table: &str,
        keys: &[(String, bool)],
        name: &str,
        class: &'static str,
        no_ok: bool,
    ) -> Status {
        let Some(map) = self.st.restrictions.table(table) else {
            warn!("check_access: unexpected dictionary: {table}");
            return self.server_error();
        };
        for (key, partial) in keys {
            if *partial && map.is_pattern() {
                continue;
            }
            let key = if map.is_pattern() {
                key.clone()
            } else {
                key.to_ascii_lowercase()
            };
            match map.lookup(&key) {
                Ok(Some(value)) => {
                    let s = self
                        .table_result(table, &value, &key, name, class, false)
                        .await;
                    if no_ok && matches!(s, Status::Ok) && !self.fx.discard {
                        return self.forbidden_ok(table, name);
                    }
                    return s;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!("{table}: table lookup problem: {e}");
                    return self
                        .table_result(
                            table,
                            "451 4.3.5 Server configuration error",
                            &key,
                            name,
                            class,
                            false,
                        )
                        .await;
                }
            }
        }
        Status::Dunno
    }

    fn forbidden_ok(&mut self, table: &str, target: &str) -> Status {
        warn!("restriction {table} returns OK for {target}");
        warn!("this is not allowed for security reasons");
        warn!("use DUNNO instead of OK if you want to make an exception");
        self.server_error()
    }

    /// `check_*_mx_access` / `check_*_ns_access`: the domain's MX (or NS)
    /// hosts' names, then their addresses.
    async fn server_access(
        &mut self,
        table: &str,
        what: &str,
        mx: bool,
        name: &str,
        class: &'static str,
    ) -> Status {
        let domain = what.rsplit_once('@').map_or(what, |(_, d)| d);
        let parent = self.st.parent_access;
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            if !mx || literal.parse::<IpAddr>().is_err() {
                return Status::Dunno;
            }
            let keys = access::address_keys(literal);
            return self.lookup_keys(table, &keys, name, class, true).await;
        }
        let dns = self.st.dns.clone();
        let rtype = if mx { "MX" } else { "NS" };
        let servers = if mx {
            match dns.mx(domain).await {
                Ok(l) if l.iter().all(|(_, h)| h.is_empty() || h == ".") => return Status::Dunno,
                Ok(l) => l.into_iter().map(|(_, h)| h).collect(),
                Err(pfx_dns::Error::NotFound) => vec![domain.to_owned()],
                Err(e) => {
                    warn!("Unable to look up {rtype} host for {domain}: {e}");
                    return Status::Dunno;
                }
            }
        } else {
            let mut d = domain;
            loop {
                match dns.ns(d).await {
                    Ok(l) => break l,
                    Err(pfx_dns::Error::NotFound) => match d.split_once('.') {
                        Some((_, parent)) if !parent.is_empty() => d = parent,
                        _ => {
                            warn!("Unable to look up {rtype} host for {domain}: Host not found");
                            return Status::Dunno;
                        }
                    },
                    Err(e) => {
                        warn!("Unable to look up {rtype} host for {d}: {e}");
                        return Status::Dunno;
                    }
                }
            }
        };
        for server in servers {
            if server.parse::<IpAddr>().is_ok() {
                let keys = access::address_keys(&server);
                let s = self.lookup_keys(table, &keys, name, class, true).await;
                if !matches!(s, Status::Dunno) {
                    return s;
                }
                continue;
            }
            let keys = access::domain_keys(&server.to_ascii_lowercase(), parent);
            let s = self.lookup_keys(table, &keys, name, class, true).await;
            if !matches!(s, Status::Dunno) {
                return s;
            }
            match dns.addresses(&server).await {
                Ok(addrs) => {
                    for a in addrs {
                        let keys = access::address_keys(&a.to_string());
                        let s = self.lookup_keys(table, &keys, name, class, true).await;
                        if !matches!(s, Status::Dunno) {
                            return s;
                        }
                    }
                }
                Err(e) => warn!("Unable to look up {rtype} host {server} for {class} {name}: {e}"),
            }
        }
        Status::Dunno
    }

    /// What an access table (or policy service) answer means (access(5)).
    fn table_result<'b>(
        &'b mut self,
        table: &'b str,
        value: &'b str,
        datum: &'b str,
        name: &'b str,
        class: &'static str,
        _nested: bool,
    ) -> Eval<'b> {
        Box::pin(async move {
            let st = self.st;
            let (word, text) = access::split_action(value);
            let text = text.to_owned();
            match word.as_str() {
                "DUNNO" => return Status::Dunno,
                "REJECT" | "DEFER" => {
                    let (code, default) = if word == "REJECT" {
                        (st.codes.access_reject, "5.7.1")
                    } else {
                        (st.codes.access_defer, "4.7.1")
                    };
                    return self.table_reject(code, default, &text, name, class);
                }
                "INFO" | "WARN" => {
                    self.log(&word.to_ascii_lowercase(), &text);
                    return Status::Dunno;
                }
                "HOLD" | "DISCARD" | "REDIRECT" | "BCC" | "FILTER" | "PREPEND"
                    if self.f.command == "ETRN" =>
                {
                    warn!(
                        "access table {table}: action {word} is unavailable in smtpd_etrn_restrictions"
                    );
                    return Status::Dunno;
                }
                "HOLD" => {
                    if !self.fx.hold {
                        let why = if text.is_empty() {
                            "triggers HOLD action"
                        } else {
                            &text
                        };
                        self.log("hold", &format!("<{name}>: {class} {why}"));
                        self.fx.hold = true;
                    }
                    return Status::Dunno;
                }
                "DISCARD" => {
                    let why = if text.is_empty() {
                        "triggers DISCARD action"
                    } else {
                        &text
                    };
                    self.log("discard", &format!("<{name}>: {class} {why}"));
                    self.fx.discard = true;
                    return Status::Ok;
                }
                "REDIRECT" | "BCC" => {
                    if !text.contains('@') {
                        warn!("access table {table} entry \"{datum}\" requires user@domain target");
                        return Status::Dunno;
                    }
                    self.log(
                        &word.to_ascii_lowercase(),
                        &format!("<{name}>: {class} triggers {word} {text}"),
                    );
                    if word == "REDIRECT" {
                        self.fx.redirect = Some(text);
                    } else {
                        self.fx.bcc.push(text);
                    }
                    return Status::Dunno;
                }
                "FILTER" => {
                    if text.is_empty() {
                        warn!(
                            "access table {table} entry \"{datum}\" has FILTER entry without value"
                        );
                    } else if !text.contains(':') {
                        warn!(
                            "access table {table} entry \"{datum}\" requires transport:destination"
                        );
                    } else {
                        self.log(
                            "filter",
                            &format!("<{name}>: {class} triggers FILTER {text}"),
                        );
                        self.fx.filter = Some(text);
                    }
                    return Status::Dunno;
                }
                "DEFER_IF_PERMIT" | "DEFER_IF_REJECT" => {
                    let (dsn, text) = pfx_smtp_proto::dsn_split("4.7.1", &text);
                    let text = if text.is_empty() {
                        "Service unavailable"
                    } else {
                        text
                    };
                    let dsn = access::dsn_fix(&dsn, class);
                    let text = format!("<{name}>: {class} rejected: {text}");
                    return if word == "DEFER_IF_PERMIT" {
                        self.defer_if_permit(ErrorClass::Policy, st.codes.access_defer, &dsn, text)
                    } else {
                        self.defer_if_reject(st.codes.access_defer, &dsn, text)
                    };
                }
                "PREPEND" => {
                    if self.f.command == "END-OF-MESSAGE" {
                        warn!("access table {table}: action PREPEND must be used before smtpd_end_of_data_restrictions");
                    } else if !access::is_header(&text) {
                        warn!("access table {table} entry \"{datum}\" requires header: text");
                    } else {
                        self.fx.prepend.push(text);
                    }
                    return Status::Dunno;
                }
                "OK" | "RELAY" => return Status::Ok,
                _ => {}
            }
            let v = value.trim();
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                return Status::Ok;
            }
            let b = v.as_bytes();
            if word.len() == 3
                && !text.is_empty()
                && matches!(b[0], b'4' | b'5')
                && b[1].is_ascii_digit()
                && b[2].is_ascii_digit()
            {
                let code: u16 = word.parse().unwrap_or(450);
                let default = format!("{}.7.1", &word[..1]);
                return self.table_reject(code, &default, &text, name, class);
            }
            if v.contains(':') {
                warn!("access table {table} has entry with lookup table: {v}");
                warn!("do not specify lookup tables inside SMTPD access maps");
                warn!("define a restriction class and specify its name instead.");
                return self.server_error();
            }
            if self.recursion > 100 {
                warn!("access table {table} entry {v} causes unreasonable recursion");
                return self.server_error();
            }
            // A restriction list: class names and restrictions.
            let items = match pfx_config::restriction::tokens(v) {
                Ok(i) => i,
                Err(e) => {
                    warn!("access table {table} entry {v}: {e}");
                    return self.server_error();
                }
            };
            if items.is_empty() {
                warn!("access table {table} entry {datum} has empty value");
                return Status::Ok;
            }
            let list = match pfx_config::restriction::parse(
                table,
                &items,
                st.restrictions.class_names(),
            ) {
                Ok(l) => l,
                Err(e) => {
                    warn!("unknown smtpd restriction in access table {table}: {e}");
                    return self.server_error();
                }
            };
            if list.iter().any(|r| r.tables().is_some()) {
                warn!("access table {table} has entry with lookup table: {v}");
                return self.server_error();
            }
            self.list(&list, name, class).await
        })
    }

    /// A table's REJECT, DEFER or NNN: its text (with an optional RFC 3463
    /// code) after Postfix's `<NAME>: CLASS rejected:`.
    fn table_reject(
        &mut self,
        code: u16,
        default_dsn: &str,
        text: &str,
        name: &str,
        class: &'static str,
    ) -> Status {
        let (dsn, text) = pfx_smtp_proto::dsn_split(default_dsn, text);
        let text = if text.is_empty() {
            "Access denied"
        } else {
            text
        };
        self.reject(
            ErrorClass::Policy,
            code,
            &access::dsn_fix(&dsn, class),
            format!("<{name}>: {class} rejected: {text}"),
        )
    }

    /// `reject_rbl_client` and the other DNS lists.
    async fn dnsxl(&mut self, list: DnsList, domain: &str, filter: Option<&str>) -> Status {
        let f = self.f;
        let (what, class, query): (String, &'static str, Option<String>) = match list {
            DnsList::RblClient | DnsList::DnswlClient => (
                f.client_ip.to_string(),
                CLIENT,
                Some(crate::dnsxl::address_query(f.client_ip, domain)),
            ),
            DnsList::RhsblClient | DnsList::RhswlClient => (
                f.name.to_owned(),
                CLIENT,
                (f.name != "unknown")
                    .then(|| crate::dnsxl::domain_query(f.name, domain))
                    .flatten(),
            ),
            DnsList::RhsblReverseClient => (
                f.reverse_name.to_owned(),
                REVERSE,
                (f.reverse_name != "unknown")
                    .then(|| crate::dnsxl::domain_query(f.reverse_name, domain))
                    .flatten(),
            ),
            DnsList::RhsblHelo => match f.helo {
                Some(h) => (h.to_owned(), HELO, crate::dnsxl::domain_query(h, domain)),
                None => return Status::Dunno,
            },
            DnsList::RhsblSender => match f.sender {
                Some(s) if !s.is_empty() => {
                    (s.to_owned(), SENDER, crate::dnsxl::domain_query(s, domain))
                }
                _ => return Status::Dunno,
            },
            DnsList::RhsblRecipient => match f.recipient {
                Some(r) => (
                    r.to_owned(),
                    RECIPIENT,
                    crate::dnsxl::domain_query(r, domain),
                ),
                None => return Status::Dunno,
            },
        };
        let Some(query) = query else {
            return Status::Dunno;
        };
        let allow = matches!(list, DnsList::DnswlClient | DnsList::RhswlClient);
        if allow && f.command == "RCPT" {
            // An allow list never opens the relay.
            let authorized = f
                .recipient
                .is_some_and(|r| self.st.authorized_destination(r) == Ok(true));
            if !authorized {
                return Status::Dunno;
            }
        }
        let found = crate::dnsxl::lookup(&self.st.dns, &query, filter).await;
        match (found, allow) {
            (crate::dnsxl::Found::Listed(_), true) => Status::Ok,
            (crate::dnsxl::Found::Unavailable, true) => self.defer_if_reject(
                450,
                "4.7.1",
                format!("<{what}>: {class} rejected: Service unavailable"),
            ),
            (crate::dnsxl::Found::Listed(txt), false) => {
                let arg = match filter {
                    Some(f) => format!("{domain}={f}"),
                    None => domain.to_owned(),
                };
                self.rbl_reply(&arg, domain, &what, class, &txt)
            }
            _ => Status::Dunno,
        }
    }

    /// The reply for a listed client, from `rbl_reply_maps` or
    /// `default_rbl_reply`.
    fn rbl_reply(
        &mut self,
        arg: &str,
        domain: &str,
        what: &str,
        class: &'static str,
        txt: &str,
    ) -> Status {
        let st = self.st;
        let template = match st.rbl_reply_maps.lookup(arg) {
            Ok(t) => t,
            Err(e) => {
                warn!("rbl_reply_maps: {e}");
                return self.server_error();
            }
        };
        let f = self.f;
        let code = st.codes.maps_rbl.to_string();
        // Values are text, not templates: a `$` in a TXT record stays one.
        let lookup = |n: &str| -> Option<String> {
            let v = match n {
                "rbl_code" => code.clone(),
                "rbl_domain" => domain.to_owned(),
                "rbl_reason" | "rbl_txt" => txt.to_owned(),
                "rbl_what" => what.to_owned(),
                "rbl_class" => class.to_owned(),
                _ => macro_value(&f, n)?,
            };
            Some(v.replace('$', "$$"))
        };
        let expanded = template
            .as_deref()
            .and_then(|t| {
                pfx_config::expand::expand(t, &lookup)
                    .map_err(|_| {
                        warn!("rbl_reject_reply: bad rbl reply template for domain {arg}: {t}")
                    })
                    .ok()
            })
            .or_else(|| pfx_config::expand::expand(&st.default_rbl_reply, &lookup).ok())
            .unwrap_or_default();
        let b = expanded.as_bytes();
        if b.len() < 4
            || !matches!(b[0], b'4' | b'5')
            || !b[1].is_ascii_digit()
            || !b[2].is_ascii_digit()
            || b[3] != b' '
        {
            warn!("rbl response code configuration error: {expanded}");
            return self.reject(
                ErrorClass::Policy,
                450,
                "4.7.1",
                "Service unavailable".into(),
            );
        }
        let code: u16 = expanded[..3].parse().unwrap_or(450);
        let (dsn, text) = pfx_smtp_proto::dsn_split("4.7.1", &expanded[4..]);
        let text = if text.is_empty() {
            "Service unavailable"
        } else {
            text
        };
        self.reject(
            ErrorClass::Policy,
            code,
            &access::dsn_fix(&dsn, class),
            text.to_owned(),
        )
    }

    /// Runs one stage's list with its reply name and class (Postfix's
    /// SMTPD_CHECK_RESET: warn_if_reject and defer_if_reject start over).
    async fn stage(&mut self, stage: Stage, name: &str, class: &'static str) -> Status {
        self.recursion = 0;
        self.warn_if_reject = 0;
        self.defer_if_reject = None;
        let list = self.st.restrictions.list(stage);
        if list.is_empty() {
            return Status::Dunno;
        }
        self.list(list, name, class).await
    }

    /// The end of an evaluation: a kept `defer_if_permit` applies unless
    /// something rejected.
    fn finish(&mut self, status: Status) -> Status {
        match status {
            Status::Reject(r) => Status::Reject(r),
            other => match self.defer_if_permit.take() {
                Some(d) => self.reject(d.class, d.code, &d.dsn, d.text),
                None => other,
            },
        }
    }
}

fn reply_of(s: Status) -> Result<(), Reply> {
    match s {
        Status::Reject(r) => Err(r),
        Status::Ok | Status::Dunno => Ok(()),
    }
}

/// RCPT (and VRFY): the client, HELO and sender lists, then the relay and
/// recipient lists, then the implicit unlisted recipient check.
pub(crate) async fn recipient(st: &Settings, f: Facts<'_>, fx: &mut Effects) -> Result<(), Reply> {
    let Some(rcpt) = f.recipient else {
        return Ok(());
    };
    // As Postfix: mail to the bare postmaster is always taken.
    if rcpt.eq_ignore_ascii_case("postmaster") {
        return Ok(());
    }
    let mut c = Checker::new(st, f, fx);
    let client_name = f.client.to_owned();
    reply_of(c.stage(Stage::Client, &client_name, CLIENT).await)?;
    if let Some(h) = f.helo {
        reply_of(c.stage(Stage::Helo, h, HELO).await)?;
    }
    if let Some(s) = f.sender {
        let shown = display(s);
        reply_of(c.stage(Stage::Sender, &shown, SENDER).await)?;
        if st.reject_unlisted_sender && !c.sender_checked && !c.fx.discard && !s.is_empty() {
            reply_of(c.unlisted(s, SENDER))?;
        }
    }
    let (first, second) = if st.relay_before_recipient {
        (Stage::Relay, Stage::Recipient)
    } else {
        (Stage::Recipient, Stage::Relay)
    };
    let shown = display(rcpt);
    let mut status = Status::Dunno;
    for stage in [first, second] {
        status = c.stage(stage, &shown, RECIPIENT).await;
        if matches!(status, Status::Reject(_)) {
            break;
        }
    }
    reply_of(c.finish(status))?;
    if st.reject_unlisted_recipient && !c.recipient_checked && !c.fx.discard {
        reply_of(c.unlisted(rcpt, RECIPIENT))?;
    }
    Ok(())
}

/// DATA (`<DATA>`) or the end of the message (`<END-OF-MESSAGE>`).
pub(crate) async fn content(
    st: &Settings,
    stage: Stage,
    f: Facts<'_>,
    fx: &mut Effects,
) -> Result<(), Reply> {
    let (name, class) = if stage == Stage::Data {
        ("DATA", "Data command")
    } else {
        ("END-OF-MESSAGE", "End-of-data")
    };
    let mut c = Checker::new(st, f, fx);
    let s = c.stage(stage, name, class).await;
    reply_of(c.finish(s))
}

/// ETRN: the client and HELO lists, then `smtpd_etrn_restrictions`.
pub(crate) async fn etrn(st: &Settings, f: Facts<'_>, domain: &str) -> Result<(), Reply> {
    let mut fx = Effects::default();
    let mut c = Checker::new(st, f, &mut fx);
    let client_name = f.client.to_owned();
    reply_of(c.stage(Stage::Client, &client_name, CLIENT).await)?;
    if let Some(h) = f.helo {
        reply_of(c.stage(Stage::Helo, h, HELO).await)?;
    }
    let s = c.stage(Stage::Etrn, domain, "Etrn command").await;
    reply_of(c.finish(s))
}

/// The `$name` values a reply template or footer may use.
pub(crate) fn macro_value(f: &Facts<'_>, name: &str) -> Option<String> {
    let domain = |a: &str| {
        a.rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default()
    };
    let local = |a: &str| a.rsplit_once('@').map_or(a, |(l, _)| l).to_owned();
    Some(match name {
        "client" => f.client.to_owned(),
        "client_address" => f.client_ip.to_string(),
        "client_name" => f.name.to_owned(),
        "client_port" => f.client_port.to_string(),
        "reverse_client_name" => f.reverse_name.to_owned(),
        "helo_name" => f.helo?.to_owned(),
        "sender" => f.sender?.to_owned(),
        "sender_name" => local(f.sender?),
        "sender_domain" => domain(f.sender?),
        "recipient" => f.recipient?.to_owned(),
        "recipient_name" => local(f.recipient?),
        "recipient_domain" => domain(f.recipient?),
        _ => return None,
    })
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

fn valid_dsn(dsn: &str) -> bool {
    pfx_smtp_proto::dsn_split("", dsn).0 == dsn
}

/// Postfix's sender login checks: `smtpd_sender_login_maps` names the
/// login names that own an address (looked up as the address, then
/// `@domain`); a logged-in client must own the sender it uses, and an
/// owned address may not be used without logging in. `Err`: the table
/// could not be asked.
fn login_mismatch(
    st: &Settings,
    kind: Word,
    f: &Facts<'_>,
) -> Option<Result<(u16, &'static str, String), String>> {
    let sender = f.sender.filter(|s| !s.is_empty())?;
    let (check_authenticated, check_anonymous) = match kind {
        Word::RejectAuthenticatedSenderLoginMismatch => (true, false),
        Word::RejectUnauthenticatedSenderLoginMismatch => (false, true),
        _ => (true, true),
    };
    let login = f.login.map(|(_, u)| u);
    // Only what the restriction checks is looked up.
    if (login.is_some() && !check_authenticated) || (login.is_none() && !check_anonymous) {
        return None;
    }
    let sender = display(sender);
    let domain = sender.rsplit_once('@').map(|(_, d)| d);
    let lookup = |key: &str| st.sender_login.lookup(&key.to_ascii_lowercase());
    // As Postfix: the address, without its extension (user+ext), then @domain.
    let mut keys = vec![sender.clone()];
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
            return Some(Err(sender));
        }
    };
    match (login, owners) {
        (Some(user), owners) if check_authenticated => {
            let owned = owners.is_some_and(|o| {
                pfx_config::value::split_list(&o)
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(user))
            });
            (!owned).then(|| {
                Ok((
                    553,
                    "5.7.1",
                    format!("<{sender}>: Sender address rejected: not owned by user {user}"),
                ))
            })
        }
        (None, Some(_)) if check_anonymous => Some(Ok((
            553,
            "5.7.1",
            format!("<{sender}>: Sender address rejected: not logged in"),
        ))),
        _ => None,
    }
}
