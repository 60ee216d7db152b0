//! The one table of every main.cf parameter postfix-rs knows, with its default.
//!
//! `postconf -d`, typed access in the daemons and the "unused parameter"
//! warning all read this table; nothing else lists parameters. Defaults are
//! Postfix 3.7's at compatibility level 3.6, written out plainly where Postfix
//! uses a `compatibility_level` expression. A few defaults are computed from the
//! machine (`myhostname`, `mydomain`) or from the invocation (`config_directory`);
//! see [`crate::Config`].

/// How a parameter's value is interpreted by [`crate::Config`]'s typed getters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text, often a list or a path.
    Str,
    /// A whole number (sizes in bytes, counts).
    Int,
    /// `yes` or `no`.
    Bool,
    /// A duration; the char is the unit used when the value has none (`s`, `m`, `h`, `d`, `w`).
    Time(char),
}

/// One supported parameter.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
}

const fn p(name: &'static str, default: &'static str, kind: Kind) -> Param {
    Param {
        name,
        default,
        kind,
    }
}

use Kind::{Bool, Int, Str, Time};

/// Every supported parameter, sorted by name (the order `postconf` prints).
pub static PARAMS: &[Param] = &[
    p("2bounce_notice_recipient", "postmaster", Str),
    p("alias_database", "hash:/etc/aliases", Str),
    p("alias_maps", "hash:/etc/aliases", Str),
    p("allow_mail_to_commands", "alias, forward", Str),
    p("allow_mail_to_files", "alias, forward", Str),
    p("allow_percent_hack", "yes", Bool),
    p("alternate_config_directories", "", Str),
    p("append_at_myorigin", "yes", Bool),
    p("append_dot_mydomain", "no", Bool),
    p("bounce_notice_recipient", "postmaster", Str),
    p("bounce_queue_lifetime", "5d", Time('d')),
    p("bounce_size_limit", "50000", Int),
    p("command_directory", "/usr/sbin", Str),
    p("compatibility_level", "3.6", Str),
    p("config_directory", "/etc/postfix", Str),
    p("daemon_directory", "/usr/libexec/postfix", Str),
    p("daemon_timeout", "18000s", Time('s')),
    p("data_directory", "/var/lib/postfix", Str),
    p("default_destination_concurrency_limit", "20", Int),
    p("default_destination_recipient_limit", "50", Int),
    p("default_privs", "nobody", Str),
    p("default_process_limit", "100", Int),
    p("default_transport", "smtp", Str),
    p("delay_logging_resolution_limit", "2", Int),
    p("disable_vrfy_command", "no", Bool),
    // postfix-rs: name servers for DNS lookups (address[:port], ...); empty: /etc/resolv.conf.
    p("dns_servers", "", Str),
    p("double_bounce_sender", "double-bounce", Str),
    p("duplicate_filter_limit", "1000", Int),
    p("empty_address_recipient", "MAILER-DAEMON", Str),
    p("enable_long_queue_ids", "no", Bool),
    p("fast_flush_domains", "$relay_domains", Str),
    p(
        "forward_path",
        "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
        Str,
    ),
    p("hash_queue_depth", "1", Int),
    p("hash_queue_names", "deferred, defer", Str),
    p("header_size_limit", "102400", Int),
    p("home_mailbox", "", Str),
    p("hopcount_limit", "50", Int),
    p("inet_interfaces", "all", Str),
    p("inet_protocols", "all", Str),
    p("initial_destination_concurrency", "5", Int),
    p("ipc_timeout", "3600s", Time('s')),
    p("line_length_limit", "2048", Int),
    p("local_destination_concurrency_limit", "2", Int),
    p("local_passwd_file", "", Str),
    p(
        "local_recipient_maps",
        "proxy:unix:passwd.byname $alias_maps",
        Str,
    ),
    p("local_transport", "local:$myhostname", Str),
    p("mail_name", "Postfix", Str),
    p("mail_owner", "postfix", Str),
    p("mail_spool_directory", "/var/mail", Str),
    p("mail_version", env!("CARGO_PKG_VERSION"), Str),
    p("mailbox_delivery_lock", "fcntl, dotlock", Str),
    p("mailbox_size_limit", "51200000", Int),
    p("maillog_file", "", Str),
    p("max_idle", "100s", Time('s')),
    p("max_use", "100", Int),
    p("maximal_backoff_time", "4000s", Time('s')),
    p("maximal_queue_lifetime", "5d", Time('d')),
    p("message_size_limit", "10240000", Int),
    p("minimal_backoff_time", "300s", Time('s')),
    p("multi_instance_directories", "", Str),
    p(
        "mydestination",
        "$myhostname, localhost.$mydomain, localhost",
        Str,
    ),
    p("mydomain", "", Str),
    p("myhostname", "", Str),
    p(
        "mynetworks",
        "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128",
        Str,
    ),
    p("mynetworks_style", "host", Str),
    p("myorigin", "$myhostname", Str),
    // postfix-rs: the named.conf that named(8) serves when master runs it.
    p("named_config_file", "$config_directory/named.conf", Str),
    p("notify_classes", "resource, software", Str),
    p("owner_request_special", "yes", Bool),
    p("process_id_directory", "pid", Str),
    p("qmgr_message_active_limit", "20000", Int),
    p("queue_directory", "/var/spool/postfix", Str),
    p("queue_run_delay", "300s", Time('s')),
    p("recipient_delimiter", "", Str),
    p("relay_domains", "", Str),
    p("relay_transport", "relay", Str),
    p("relayhost", "", Str),
    p("service_throttle_time", "60s", Time('s')),
    p("setgid_group", "postdrop", Str),
    p("smtp_connect_timeout", "30s", Time('s')),
    p("smtp_connection_cache_on_demand", "yes", Bool),
    p("smtp_connection_cache_time_limit", "2s", Time('s')),
    p("smtp_data_done_timeout", "600s", Time('s')),
    p("smtp_data_init_timeout", "120s", Time('s')),
    p("smtp_data_xfer_timeout", "180s", Time('s')),
    p(
        "smtp_destination_concurrency_limit",
        "$default_destination_concurrency_limit",
        Int,
    ),
    p("smtp_helo_name", "$myhostname", Str),
    p("smtp_helo_timeout", "300s", Time('s')),
    p("smtp_mail_timeout", "300s", Time('s')),
    p("smtp_quit_timeout", "300s", Time('s')),
    p("smtp_rcpt_timeout", "300s", Time('s')),
    p("smtp_rset_timeout", "20s", Time('s')),
    p("smtpd_banner", "$myhostname ESMTP $mail_name", Str),
    p("smtpd_client_connection_count_limit", "50", Int),
    p("smtpd_delay_reject", "yes", Bool),
    p("smtpd_error_sleep_time", "1s", Time('s')),
    p("smtpd_etrn_restrictions", "", Str),
    p("smtpd_forbid_bare_newline", "normalize", Str),
    p("smtpd_forbid_bare_newline_exclusions", "", Str),
    p("smtpd_forbid_bare_newline_reject_code", "550", Int),
    p("smtpd_hard_error_limit", "20", Int),
    p("smtpd_helo_required", "no", Bool),
    p("smtpd_junk_command_limit", "100", Int),
    p("smtpd_peername_lookup", "yes", Bool),
    p("smtpd_recipient_limit", "1000", Int),
    p("smtpd_recipient_restrictions", "", Str),
    p(
        "smtpd_relay_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
        Str,
    ),
    p("smtpd_soft_error_limit", "10", Int),
    p("smtpd_timeout", "300s", Time('s')),
    p("syslog_facility", "mail", Str),
    p("syslog_name", "postfix", Str),
    p("transport_maps", "", Str),
    p("transport_retry_time", "60s", Time('s')),
    p("unknown_local_recipient_reject_code", "550", Int),
];

/// Looks a parameter up by name.
pub fn find(name: &str) -> Option<&'static Param> {
    PARAMS
        .binary_search_by(|p| p.name.cmp(name))
        .ok()
        .map(|i| &PARAMS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique_so_lookup_works() {
        for pair in PARAMS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        assert_eq!(find("myorigin").unwrap().default, "$myhostname");
        assert!(find("no_such_parameter").is_none());
    }

    #[test]
    fn every_typed_default_parses() {
        for p in PARAMS {
            if p.default.contains('$') {
                continue;
            }
            match p.kind {
                Kind::Int => assert!(crate::value::parse_int(p.default).is_ok(), "{}", p.name),
                Kind::Bool => assert!(crate::value::parse_bool(p.default).is_ok(), "{}", p.name),
                Kind::Time(u) => {
                    assert!(crate::value::parse_time(p.default, u).is_ok(), "{}", p.name)
                }
                Kind::Str => {}
            }
        }
    }
}
