//! smtpd's view of main.cf, computed once per configuration version.

use std::sync::Arc;
use std::time::Duration;

use pfx_address::NetworkList;
use pfx_config::{BuildError, Config};
use pfx_maps::passwd::Passwd;
use pfx_maps::MapList;

use crate::limits::Limits;
use crate::policy;
use crate::stages::Restrictions;
use crate::tls::{Sasl, Tls};

/// The reply codes of the restrictions (`*_reject_code` parameters).
#[derive(Debug)]
pub(crate) struct Codes {
    pub(crate) access_reject: u16,
    pub(crate) access_defer: u16,
    pub(crate) invalid_hostname: u16,
    pub(crate) non_fqdn: u16,
    pub(crate) unknown_client: u16,
    pub(crate) unknown_hostname: u16,
    pub(crate) unknown_address: u16,
    pub(crate) maps_rbl: u16,
    pub(crate) multi_recipient_bounce: u16,
    pub(crate) plaintext: u16,
}

/// Whether a DNS failure defers only if nothing else rejects
/// (`defer_if_permit`) or defers at once (`defer`).
#[derive(Debug)]
pub(crate) struct Tempfail {
    pub(crate) helo_defer_if_permit: bool,
    pub(crate) address_defer_if_permit: bool,
}

/// `smtpd_forbid_bare_newline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BareNewline {
    Normalize,
    Reject,
    No,
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) myhostname: String,
    /// `smtpd_milters` (none: no milter is asked, as with
    /// `receive_override_options = no_milters`).
    pub(crate) milters: Option<pfx_milter::Milters>,
    /// `content_filter` and `receive_override_options` for cleanup.
    pub(crate) receive: pfx_ipc::proto::Receive,
    /// `receive_override_options = no_unknown_recipient_checks`: no
    /// unlisted sender or recipient check.
    pub(crate) no_unknown_recipient_checks: bool,
    /// `smtpd_authorized_xforward_hosts`: the clients whose XFORWARD is taken.
    pub(crate) xforward_hosts: crate::limits::HostList,
    pub(crate) banner: String,
    pub(crate) mail_name: String,
    /// Address classes, routes and table lookup order (trivial-rewrite).
    pub(crate) addresses: pfx_resolve::Resolver,
    /// The recipient tables of each address class, and `virtual_alias_maps`,
    /// whose addresses are known whatever the class.
    pub(crate) virtual_alias_maps: MapList,
    /// Canonical maps: an address they know is valid too (Postfix's
    /// check_rcpt_maps); the sender's own only for senders.
    pub(crate) canonical_maps: MapList,
    pub(crate) recipient_canonical_maps: MapList,
    pub(crate) sender_canonical_maps: MapList,
    pub(crate) virtual_mailbox_maps: MapList,
    pub(crate) relay_recipients: MapList,
    /// `unknown_virtual_alias_reject_code`,
    /// `unknown_virtual_mailbox_reject_code`,
    /// `unknown_relay_recipient_reject_code`.
    pub(crate) unknown_alias_code: u16,
    pub(crate) unknown_mailbox_code: u16,
    pub(crate) unknown_relay_code: u16,
    pub(crate) mynetworks: NetworkList,
    pub(crate) restrictions: Restrictions,
    pub(crate) codes: Codes,
    pub(crate) tempfail: Tempfail,
    /// `smtpd_access_maps` in `parent_domain_matches_subdomains`.
    pub(crate) parent_access: bool,
    /// `smtpd_null_access_lookup_key`.
    pub(crate) null_access_key: String,
    pub(crate) default_rbl_reply: String,
    pub(crate) rbl_reply_maps: MapList,
    /// `smtpd_reject_unlisted_sender`.
    pub(crate) reject_unlisted_sender: bool,
    /// `smtpd_reject_footer`.
    pub(crate) reject_footer: String,
    pub(crate) policies: policy::Clients,
    /// For the restrictions that ask DNS (blocklists, unknown domains).
    pub(crate) dns: pfx_dns::Resolver,
    /// `smtpd_relay_before_recipient_restrictions`.
    pub(crate) relay_before_recipient: bool,
    /// `reject_code`, `defer_code`, `relay_domains_reject_code`.
    pub(crate) reject_code: u16,
    pub(crate) defer_code: u16,
    pub(crate) relay_domains_reject_code: u16,
    /// `show_user_unknown_table_name`.
    pub(crate) show_unknown_table: bool,
    /// `smtputf8_enable`: SMTPUTF8 offered and accepted.
    pub(crate) smtputf8: bool,
    /// Its local part is taken at RCPT whatever local_recipient_maps say.
    pub(crate) double_bounce_sender: String,
    pub(crate) local_recipients: MapList,
    /// `smtpd_reject_unlisted_recipient`: unknown local recipients are
    /// refused after the restrictions (`no` on a submission port).
    pub(crate) reject_unlisted_recipient: bool,
    pub(crate) recipient_delimiter: String,
    pub(crate) message_size_limit: u64,
    pub(crate) recipient_limit: usize,
    pub(crate) timeout: Duration,
    /// `smtpd_starttls_timeout`: for the TLS handshake.
    pub(crate) starttls_timeout: Duration,
    pub(crate) helo_required: bool,
    pub(crate) disable_vrfy: bool,
    pub(crate) bare_newline: BareNewline,
    pub(crate) bare_newline_exclusions: NetworkList,
    pub(crate) bare_newline_reject_code: u16,
    pub(crate) soft_error_limit: u32,
    pub(crate) hard_error_limit: u32,
    pub(crate) junk_command_limit: u32,
    /// `unknown_local_recipient_reject_code`: 550, or 450 while testing a setup.
    pub(crate) unknown_local_code: u16,
    pub(crate) error_sleep: Duration,
    /// The client limits anvil counts for (`smtpd_client_*_limit`).
    pub(crate) limits: Limits,
    pub(crate) queue_dir: std::path::PathBuf,
    /// For the client's name (`smtpd_peername_lookup`); `None`: every client is `unknown`.
    pub(crate) resolver: Option<pfx_dns::Resolver>,
    pub(crate) tls: Tls,
    /// SMTP AUTH; `None` when `smtpd_sasl_auth_enable = no`.
    pub(crate) sasl: Option<Sasl>,
    /// `smtpd_sender_login_maps`: who may use which sender address.
    pub(crate) sender_login: MapList,
    /// `smtpd_discard_ehlo_keywords`, in Postfix's table order, and
    /// whether `silent-discard` was among them.
    pub(crate) discard_ehlo: Vec<&'static str>,
    pub(crate) discard_silent: bool,
}

/// The EHLO keywords Postfix knows how to discard, in its table's order.
const EHLO_KEYWORDS: [&str; 14] = [
    "8BITMIME",
    "AUTH",
    "ETRN",
    "PIPELINING",
    "SIZE",
    "VERP",
    "VRFY",
    "XCLIENT",
    "XFORWARD",
    "STARTTLS",
    "ENHANCEDSTATUSCODES",
    "DSN",
    "SMTPUTF8",
    "CHUNKING",
];

impl Settings {
    pub(crate) fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let s = |n: &str| cfg.get(n);
        let l = |n: &str| cfg.list(n);
        let n = |n: &str| cfg.int(n);
        let passwd = Passwd::new(Some(s("local_passwd_file")?.into()));
        let receive = pfx_ipc::proto::Receive::from_config(&cfg)?;
        let overrides = pfx_ipc::proto::ReceiveOverride::from_config(&cfg)?;
        let bare_newline = match s("smtpd_forbid_bare_newline")?.as_str() {
            "normalize" | "yes" => BareNewline::Normalize,
            "reject" => BareNewline::Reject,
            "no" => BareNewline::No,
            other => {
                return Err(format!(
                "smtpd_forbid_bare_newline: unknown value \"{other}\" (normalize, reject or no)"
            )
                .into())
            }
        };
        let code = |name: &str| -> Result<u16, BuildError> {
            let c = n(name)?;
            match u16::try_from(c) {
                Ok(c @ 400..=599) => Ok(c),
                _ => Err(format!("{name}: {c} is not a 4xx or 5xx code").into()),
            }
        };
        let queue_dir: std::path::PathBuf = s("queue_directory")?.into();
        let milters = pfx_milter::Milters::from_main_cf(&cfg, "smtpd_milters", &queue_dir)?
            .filter(|_| !receive.no_milters);
        let restrictions = Restrictions::new(&cfg, &passwd)?;
        let tempfail = |name: &str| -> Result<bool, BuildError> {
            match s(name)?.as_str() {
                "defer_if_permit" => Ok(true),
                "defer" => Ok(false),
                other => Err(format!("bad configuration: {name} = {other}").into()),
            }
        };
        let dns = pfx_dns::Resolver::from_config(&cfg)?;
        let postmap_maps =
            |name: &str| -> Result<MapList, BuildError> { Ok(MapList::parse(&l(name)?, &passwd)?) };
        Ok(Self {
            policies: policy::Clients::new(&cfg, restrictions.policies())?,
            codes: Codes {
                access_reject: code("access_map_reject_code")?,
                access_defer: code("access_map_defer_code")?,
                invalid_hostname: code("invalid_hostname_reject_code")?,
                non_fqdn: code("non_fqdn_reject_code")?,
                unknown_client: code("unknown_client_reject_code")?,
                unknown_hostname: code("unknown_hostname_reject_code")?,
                unknown_address: code("unknown_address_reject_code")?,
                maps_rbl: code("maps_rbl_reject_code")?,
                multi_recipient_bounce: code("multi_recipient_bounce_reject_code")?,
                plaintext: code("plaintext_reject_code")?,
            },
            tempfail: Tempfail {
                helo_defer_if_permit: tempfail("unknown_helo_hostname_tempfail_action")?,
                address_defer_if_permit: tempfail("unknown_address_tempfail_action")?,
            },
            parent_access: l("parent_domain_matches_subdomains")?
                .iter()
                .any(|p| p == "smtpd_access_maps"),
            null_access_key: s("smtpd_null_access_lookup_key")?,
            default_rbl_reply: cfg.raw("default_rbl_reply").unwrap_or_default(),
            rbl_reply_maps: MapList::parse(&l("rbl_reply_maps")?, &passwd)?,
            reject_unlisted_sender: cfg.bool("smtpd_reject_unlisted_sender")?,
            reject_footer: cfg.raw("smtpd_reject_footer").unwrap_or_default(),

            tls: Tls::new(&cfg)?,
            sasl: Sasl::new(&cfg, &queue_dir)?,
            discard_ehlo: {
                let words = l("smtpd_discard_ehlo_keywords")?;
                EHLO_KEYWORDS
                    .into_iter()
                    .filter(|k| words.iter().any(|w| w.eq_ignore_ascii_case(k)))
                    .collect()
            },
            discard_silent: l("smtpd_discard_ehlo_keywords")?
                .iter()
                .any(|w| w.eq_ignore_ascii_case("silent-discard")),
            sender_login: MapList::parse(&l("smtpd_sender_login_maps")?, &passwd)?,
            milters,
            receive,
            no_unknown_recipient_checks: overrides.no_unknown_recipient_checks,
            xforward_hosts: crate::limits::HostList::parse(&l("smtpd_authorized_xforward_hosts")?)?,
            myhostname: s("myhostname")?,
            banner: s("smtpd_banner")?,
            mail_name: s("mail_name")?,
            addresses: pfx_resolve::Resolver::new(&cfg)?,
            virtual_alias_maps: postmap_maps("virtual_alias_maps")?,
            canonical_maps: postmap_maps("canonical_maps")?,
            recipient_canonical_maps: postmap_maps("recipient_canonical_maps")?,
            sender_canonical_maps: postmap_maps("sender_canonical_maps")?,
            virtual_mailbox_maps: postmap_maps("virtual_mailbox_maps")?,
            relay_recipients: postmap_maps("relay_recipient_maps")?,
            unknown_alias_code: code("unknown_virtual_alias_reject_code")?,
            unknown_mailbox_code: code("unknown_virtual_mailbox_reject_code")?,
            unknown_relay_code: code("unknown_relay_recipient_reject_code")?,
            mynetworks: NetworkList::parse(&l("mynetworks")?)?,
            restrictions,
            relay_before_recipient: cfg.bool("smtpd_relay_before_recipient_restrictions")?,
            reject_code: code("reject_code")?,
            defer_code: code("defer_code")?,
            relay_domains_reject_code: code("relay_domains_reject_code")?,
            show_unknown_table: cfg.bool("show_user_unknown_table_name")?,
            smtputf8: cfg.bool("smtputf8_enable")?,
            double_bounce_sender: s("double_bounce_sender")?,
            // Postfix reads every text table here as postmap's `key value`.
            local_recipients: MapList::parse(&l("local_recipient_maps")?, &passwd)?,
            reject_unlisted_recipient: cfg.bool("smtpd_reject_unlisted_recipient")?,
            recipient_delimiter: s("recipient_delimiter")?,
            message_size_limit: cfg.count("message_size_limit")?,
            recipient_limit: cfg.count("smtpd_recipient_limit")?,
            timeout: cfg.time("smtpd_timeout")?,
            starttls_timeout: cfg.time("smtpd_starttls_timeout")?,
            helo_required: cfg.bool("smtpd_helo_required")?,
            disable_vrfy: cfg.bool("disable_vrfy_command")?,
            bare_newline,
            bare_newline_exclusions: NetworkList::parse(&l(
                "smtpd_forbid_bare_newline_exclusions",
            )?)?,
            bare_newline_reject_code: code("smtpd_forbid_bare_newline_reject_code")?,
            soft_error_limit: cfg.count("smtpd_soft_error_limit")?,
            hard_error_limit: cfg.count("smtpd_hard_error_limit")?,
            junk_command_limit: cfg.count("smtpd_junk_command_limit")?,
            unknown_local_code: code("unknown_local_recipient_reject_code")?,
            error_sleep: cfg.time("smtpd_error_sleep_time")?,
            limits: Limits::new(&cfg)?,
            queue_dir,
            resolver: cfg.bool("smtpd_peername_lookup")?.then(|| dns.clone()),
            dns,
        })
    }

    /// Whether mail for this address may be accepted from anyone: its
    /// domain is ours (local, virtual alias or mailbox) or in
    /// `relay_domains`, and its local part routes it nowhere else
    /// (`allow_untrusted_routing = no`, the only value postfix-rs takes).
    pub(crate) fn authorized_destination(&self, addr: &str) -> Result<bool, pfx_resolve::Failure> {
        let resolved = self.resolve(addr);
        let class = self.addresses.class(&resolved)?;
        Ok(class != pfx_resolve::Class::Default && !resolved.routed)
    }

    /// Whether an EHLO keyword is announced (and its command or option
    /// taken): not in `smtpd_discard_ehlo_keywords`.
    pub(crate) fn ehlo_keyword(&self, keyword: &str) -> bool {
        !self
            .discard_ehlo
            .iter()
            .any(|k| k.eq_ignore_ascii_case(keyword))
    }

    /// The `discarding EHLO keywords:` text, as Postfix logs it at each
    /// EHLO (not with `silent-discard`, nor when ENHANCEDSTATUSCODES is
    /// among them); Postfix's table names SMTPUTF8 by its internal name.
    pub(crate) fn discard_ehlo_log(&self) -> Option<String> {
        if self.discard_ehlo.is_empty()
            || self.discard_silent
            || !self.ehlo_keyword("ENHANCEDSTATUSCODES")
        {
            return None;
        }
        let names: Vec<&str> = self
            .discard_ehlo
            .iter()
            .map(|k| {
                if *k == "SMTPUTF8" {
                    "EHLO_MASK_SMTPUTF8"
                } else {
                    k
                }
            })
            .collect();
        Some(names.join(" "))
    }

    pub(crate) fn resolve(&self, addr: &str) -> pfx_address::Resolved {
        self.addresses.resolve_address(addr)
    }
}
