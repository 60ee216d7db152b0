//! smtpd's TLS and SASL settings: `smtpd_tls_*` and `smtpd_sasl_*` as one
//! configuration (main.cf with a service's `-o` overrides) sets them.

use std::path::Path;
use std::sync::Arc;

use pfx_address::NetworkList;
use pfx_config::{BuildError, Config};
use tracing::warn;

use crate::sasl::{Dovecot, Mech, Security};

/// `smtpd_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    None,
    May,
    /// MAIL and the rest wait for STARTTLS (`530 5.7.0`).
    Encrypt,
}

#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) level: Level,
    /// The server; `Err`: why TLS is unavailable (logged once, when the
    /// configuration was read). At level `encrypt` that refuses all mail.
    pub(crate) server: Result<Arc<pfx_tls::server::Server>, String>,
    /// `smtpd_tls_wrappermode`: TLS from the first byte (SMTPS, port 465).
    pub(crate) wrapper: bool,
    /// `smtpd_tls_auth_only`: AUTH only once the session is encrypted.
    auth_only: bool,
    /// `smtpd_tls_received_header`.
    pub(crate) received_header: bool,
    /// `smtpd_tls_loglevel`: 1 and up log each session's TLS parameters.
    pub(crate) loglevel: i64,
}

impl Tls {
    pub(crate) fn new(cfg: &Config) -> Result<Self, BuildError> {
        let level = match cfg.get("smtpd_tls_security_level")?.as_str() {
            "" if cfg.bool("smtpd_enforce_tls")? => Level::Encrypt,
            "" if cfg.bool("smtpd_use_tls")? => Level::May,
            "" | "none" => Level::None,
            "may" => Level::May,
            "encrypt" => Level::Encrypt,
            other => {
                return Err(format!(
                    "smtpd_tls_security_level: invalid value \"{other}\" (none, may or encrypt)"
                )
                .into())
            }
        };
        let wrapper = cfg.bool("smtpd_tls_wrappermode")?;
        let server = if level == Level::None && !wrapper {
            Err("TLS is not enabled".to_owned())
        } else {
            pfx_tls::server::Server::from_config(cfg, level == Level::Encrypt || wrapper)
                .map(Arc::new)
                .map_err(|e| {
                    warn!("{e}");
                    e.to_string()
                })
        };
        Ok(Self {
            level,
            server,
            wrapper,
            auth_only: cfg.bool("smtpd_tls_auth_only")?,
            received_header: cfg.bool("smtpd_tls_received_header")?,
            loglevel: cfg.int("smtpd_tls_loglevel")?,
        })
    }

    /// `smtpd_tls_auth_only`, which level `encrypt` implies.
    pub(crate) fn auth_only(&self) -> bool {
        self.auth_only || self.level == Level::Encrypt
    }

    /// Whether STARTTLS is offered to a plain session. At `may` without a
    /// usable certificate it is not (Postfix: "TLS won't be enabled"); at
    /// `encrypt` it is, and answered `454`, so that nothing goes in clear.
    pub(crate) fn offered(&self) -> bool {
        !self.wrapper
            && match self.level {
                Level::None => false,
                Level::May => self.server.is_ok(),
                Level::Encrypt => true,
            }
    }
}

/// `smtpd_sasl_mechanism_filter`: names to drop (`!NAME`), names to keep,
/// and `static:rest` (keep what no item named).
#[derive(Debug, Default)]
struct MechFilter {
    items: Vec<(bool, String)>,
    rest: bool,
}

impl MechFilter {
    fn parse(items: &[String]) -> Result<Self, String> {
        let mut f = Self::default();
        for item in items {
            if item.eq_ignore_ascii_case("static:rest") {
                f.rest = true;
            } else if item.contains(':') {
                return Err(format!("smtpd_sasl_mechanism_filter: \"{item}\": only mechanism names, !names and static:rest are implemented by postfix-rs"));
            } else if let Some(name) = item.strip_prefix('!') {
                f.items.push((false, name.to_owned()));
            } else {
                f.items.push((true, item.clone()));
            }
        }
        if items.is_empty() {
            f.rest = true;
        }
        Ok(f)
    }

    fn allows(&self, name: &str) -> bool {
        self.items
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map_or(self.rest, |(keep, _)| *keep)
    }
}

/// SMTP AUTH, when `smtpd_sasl_auth_enable = yes`.
#[derive(Debug)]
pub(crate) struct Sasl {
    pub(crate) dovecot: Arc<Dovecot>,
    pub(crate) service: String,
    security: Security,
    tls_security: Security,
    filter: MechFilter,
    /// `broken_sasl_auth_clients`: also `AUTH=…` in the EHLO reply.
    pub(crate) broken_clients: bool,
    /// `smtpd_sasl_authenticated_header`.
    pub(crate) authenticated_header: bool,
    /// `smtpd_sasl_exceptions_networks`: clients not offered AUTH.
    pub(crate) exceptions: NetworkList,
    /// `smtpd_sasl_response_limit`.
    pub(crate) response_limit: usize,
}

impl Sasl {
    pub(crate) fn new(cfg: &Config, queue_dir: &Path) -> Result<Option<Self>, BuildError> {
        if !cfg.bool("smtpd_sasl_auth_enable")? {
            return Ok(None);
        }
        let kind = cfg.get("smtpd_sasl_type")?;
        if kind != "dovecot" {
            return Err(format!(
                "smtpd_sasl_type = {kind}: not implemented by postfix-rs (dovecot is)"
            )
            .into());
        }
        let path = cfg.get("smtpd_sasl_path")?;
        // As Postfix: relative to the queue directory (inside the chroot).
        let path = if path.starts_with('/') {
            path.into()
        } else {
            queue_dir.join(path)
        };
        Ok(Some(Self {
            dovecot: Arc::new(Dovecot::new(path)),
            service: cfg.get("smtpd_sasl_service")?,
            security: Security::parse(
                "smtpd_sasl_security_options",
                &cfg.list("smtpd_sasl_security_options")?,
            )?,
            tls_security: Security::parse(
                "smtpd_sasl_tls_security_options",
                &cfg.list("smtpd_sasl_tls_security_options")?,
            )?,
            filter: MechFilter::parse(&cfg.list("smtpd_sasl_mechanism_filter")?)?,
            broken_clients: cfg.bool("broken_sasl_auth_clients")?,
            authenticated_header: cfg.bool("smtpd_sasl_authenticated_header")?,
            exceptions: NetworkList::parse(&cfg.list("smtpd_sasl_exceptions_networks")?)?,
            response_limit: cfg.count("smtpd_sasl_response_limit")?,
        }))
    }

    /// The mechanisms to offer a session, encrypted or not.
    pub(crate) fn usable(&self, mechs: &[Mech], encrypted: bool) -> Vec<String> {
        let security = if encrypted {
            &self.tls_security
        } else {
            &self.security
        };
        mechs
            .iter()
            .filter(|m| security.allows(m) && self.filter.allows(&m.name))
            .map(|m| m.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mech(name: &str, flags: &[&str]) -> Mech {
        Mech {
            name: name.into(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn security_options_and_the_filter_choose_what_is_offered() {
        let l = |s: &str| pfx_config::value::split_list(s);
        let sasl = Sasl {
            dovecot: Arc::new(Dovecot::new("/nonexistent".into())),
            service: "smtp".into(),
            security: Security::parse("x", &l("noanonymous, noplaintext")).unwrap(),
            tls_security: Security::parse("x", &l("noanonymous")).unwrap(),
            filter: MechFilter::parse(&l("!external, static:rest")).unwrap(),
            broken_clients: false,
            authenticated_header: false,
            exceptions: NetworkList::parse(&[]).unwrap(),
            response_limit: 12288,
        };
        let mechs = [
            mech("PLAIN", &["plaintext"]),
            mech("LOGIN", &["plaintext"]),
            mech("ANONYMOUS", &["anonymous"]),
            mech("EXTERNAL", &[]),
            mech("CRAM-MD5", &["dictionary", "active"]),
            mech("SECRET", &["private"]),
        ];
        assert_eq!(sasl.usable(&mechs, false), ["CRAM-MD5"]);
        assert_eq!(sasl.usable(&mechs, true), ["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(MechFilter::parse(&l("hash:/etc/postfix/mechs")).is_err());
        assert!(
            Security::parse("smtpd_sasl_security_options", &l("noplaintext, nonsense")).is_err()
        );
    }
}
