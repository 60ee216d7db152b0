//! The smtp client's TLS policy and SASL credentials, from Postfix's
//! parameters: `smtp_tls_security_level` or a `smtp_tls_policy_maps` entry
//! per next hop, and `smtp_sasl_password_maps` per server (their `lmtp_*`
//! twins in LMTP mode).

use std::sync::Arc;

use pfx_config::BuildError;
use pfx_maillog::delivery::Outcome;
use pfx_maps::passwd::Passwd;
use pfx_maps::MapList;
use pfx_tls::client::{Client, Level};
use tracing::warn;

use crate::mode::Params;

/// The TLS policy for one next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) level: Level,
    /// `match=` or the level's default: `hostname`, `nexthop`,
    /// `dot-nexthop`, or literal names.
    pub(crate) matches: Vec<String>,
}

impl Policy {
    /// The names a certificate may carry for `host` (the server) reached
    /// for `nexthop`.
    pub(crate) fn names(&self, host: &str, nexthop_domain: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.matches {
            match m.as_str() {
                "hostname" => out.push(host.to_owned()),
                "nexthop" => out.push(nexthop_domain.to_owned()),
                // A name below the next hop: the server's own name, when it is one.
                "dot-nexthop" if host.ends_with(&format!(".{nexthop_domain}")) => {
                    out.push(host.to_owned())
                }
                "dot-nexthop" => {}
                name => out.push(name.trim_start_matches('.').to_owned()),
            }
        }
        out
    }
}

/// `smtp_sasl_security_options` and its TLS variants, as they apply to the
/// mechanisms the client has: PLAIN and LOGIN send the password itself.
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    noplaintext: bool,
}

impl Options {
    fn parse(parameter: &str, items: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        for item in items {
            match item.to_ascii_lowercase().as_str() {
                "noplaintext" => o.noplaintext = true,
                // PLAIN and LOGIN are neither anonymous, nor active-attack or
                // dictionary proof, nor mutual: these exclude nothing else here.
                "noanonymous" | "nodictionary" | "noactive" => {}
                "mutual_auth" | "forward_secrecy" => o.noplaintext = true,
                other => return Err(format!("{parameter}: unknown security option \"{other}\"")),
            }
        }
        Ok(o)
    }
}

/// SMTP AUTH as a client (`smtp_sasl_auth_enable = yes`).
#[derive(Debug)]
pub(crate) struct Sasl {
    passwords: MapList,
    /// `smtp_sender_dependent_authentication`.
    pub(crate) sender_dependent: bool,
    plain: Options,
    tls: Options,
    verified: Options,
    /// `smtp_sasl_mechanism_filter`; empty: any.
    filter: Vec<String>,
    /// `smtp_sasl_auth_soft_bounce`: a 5xx refusal defers rather than bounces.
    pub(crate) soft_bounce: bool,
}

/// The client's TLS and SASL settings.
#[derive(Debug)]
pub(crate) struct Security {
    /// `Err`: why no TLS client could be set up (logged once).
    pub(crate) client: Result<Arc<Client>, String>,
    level: Level,
    policy_maps: MapList,
    verify_match: Vec<String>,
    secure_match: Vec<String>,
    pub(crate) wrapper: bool,
    pub(crate) loglevel: i64,
    pub(crate) sasl: Option<Sasl>,
}

impl Security {
    pub(crate) fn new(cfg: &Params<'_>) -> Result<Self, BuildError> {
        let level = match cfg.get("smtp_tls_security_level")?.as_str() {
            // Postfix: enforce_tls with enforce_peername (its default) is verify.
            "" if cfg.bool("smtp_enforce_tls")? => {
                if cfg.bool("smtp_tls_enforce_peername")? {
                    Level::Verify
                } else {
                    Level::Encrypt
                }
            }
            "" if cfg.bool("smtp_use_tls")? => Level::May,
            other => Level::parse(other)
                .map_err(|e| format!("{}: {e}", cfg.mode.param("smtp_tls_security_level")))?,
        };
        let passwd = Passwd::new(None);
        let client = Client::from_config(&cfg.tls_config())
            .map(Arc::new)
            .map_err(|e| {
                warn!("{e}");
                e.to_string()
            });
        let sasl = if cfg.bool("smtp_sasl_auth_enable")? {
            let opts = |n: &'static str| -> Result<Options, BuildError> {
                Ok(Options::parse(&cfg.mode.param(n), &cfg.list(n)?)?)
            };
            Some(Sasl {
                passwords: MapList::parse(&cfg.list("smtp_sasl_password_maps")?, &passwd)?,
                sender_dependent: cfg.bool("smtp_sender_dependent_authentication")?,
                plain: opts("smtp_sasl_security_options")?,
                tls: opts("smtp_sasl_tls_security_options")?,
                verified: opts("smtp_sasl_tls_verified_security_options")?,
                filter: cfg
                    .list("smtp_sasl_mechanism_filter")?
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                soft_bounce: cfg.bool("smtp_sasl_auth_soft_bounce")?,
            })
        } else {
            None
        };
        Ok(Self {
            client,
            level,
            policy_maps: MapList::parse(&cfg.list("smtp_tls_policy_maps")?, &passwd)?,
            verify_match: cfg.list("smtp_tls_verify_cert_match")?,
            secure_match: cfg.list("smtp_tls_secure_cert_match")?,
            wrapper: cfg.bool("smtp_tls_wrappermode")?,
            loglevel: cfg.int("smtp_tls_loglevel")?,
            sasl,
        })
    }

    fn default_matches(&self, level: Level) -> Vec<String> {
        match level {
            Level::Verify => self.verify_match.clone(),
            Level::Secure => self.secure_match.clone(),
            _ => Vec::new(),
        }
    }

    /// The policy for a next hop: its `smtp_tls_policy_maps` entry (the
    /// next hop as written, then for a domain its parents as `.parent`),
    /// else the default level. A broken entry defers the mail, as Postfix.
    pub(crate) fn policy(&self, nexthop: &str, domain: &str) -> Result<Policy, Outcome> {
        let mut keys = vec![nexthop.to_ascii_lowercase()];
        if !nexthop.starts_with('[') {
            let mut d = domain;
            while let Some((_, parent)) = d.split_once('.') {
                keys.push(format!(".{parent}"));
                d = parent;
            }
        }
        let problem = |why: String| {
            warn!("TLS policy lookup for {nexthop}: {why}");
            Outcome::failed(true, "4.7.5", "none", "client TLS configuration problem")
        };
        for key in keys {
            let found = self
                .policy_maps
                .lookup(&key)
                .map_err(|e| problem(e.to_string()))?;
            let Some(value) = found else { continue };
            let mut words = pfx_config::value::split_list(&value).into_iter();
            let level = Level::parse(&words.next().unwrap_or_default())
                .map_err(|e| problem(e.to_string()))?;
            let mut matches = self.default_matches(level);
            for attr in words {
                match attr.split_once('=') {
                    Some(("match", v)) => {
                        matches = v
                            .split(':')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    }
                    // Every suite rustls has is of Postfix's `high` grade,
                    // so any grade is met; an exclusion list, or protocols
                    // narrower than TLS 1.2 and 1.3, cannot be honoured and
                    // so defer the mail rather than weaken the policy.
                    Some(("ciphers", "high" | "medium" | "low" | "export")) => {}
                    Some(("protocols", p))
                        if pfx_tls::protocols::parse("protocols", p)
                            .is_ok_and(|v| v.len() == 2) => {}
                    _ => {
                        return Err(problem(format!(
                            "\"{attr}\" is not implemented by postfix-rs"
                        )))
                    }
                }
            }
            return Ok(Policy { level, matches });
        }
        Ok(Policy {
            level: self.level,
            matches: self.default_matches(self.level),
        })
    }
}

impl Sasl {
    /// The user name and password for a server: by sender first (with
    /// `smtp_sender_dependent_authentication`), then the server's host
    /// name, then the next hop as written (`[smtp.example.com]:587`).
    pub(crate) fn credentials(
        &self,
        sender: &str,
        host: &str,
        nexthop: &str,
    ) -> Result<Option<(String, String)>, String> {
        let mut keys = Vec::new();
        if self.sender_dependent && !sender.is_empty() {
            keys.push(sender.to_ascii_lowercase());
            if let Some((_, d)) = sender.rsplit_once('@') {
                keys.push(format!("@{}", d.to_ascii_lowercase()));
            }
        }
        keys.push(host.to_ascii_lowercase());
        keys.push(nexthop.to_ascii_lowercase());
        for key in keys {
            if let Some(v) = self.passwords.lookup(&key).map_err(|e| e.to_string())? {
                let (user, password) = v.split_once(':').unwrap_or((&v, ""));
                return Ok(Some((user.to_owned(), password.to_owned())));
            }
        }
        Ok(None)
    }

    /// The mechanism to use among those the server offers: PLAIN, then
    /// LOGIN, as the security options for this connection allow.
    pub(crate) fn mechanism(
        &self,
        offered: &[String],
        tls: Option<pfx_tls::client::Trust>,
    ) -> Option<&'static str> {
        let options = match tls {
            None => self.plain,
            Some(pfx_tls::client::Trust::Verified) => self.verified,
            Some(_) => self.tls,
        };
        if options.noplaintext {
            return None;
        }
        ["PLAIN", "LOGIN"].into_iter().find(|m| {
            offered.iter().any(|o| o == m)
                && (self.filter.is_empty() || self.filter.iter().any(|f| f == m))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::Mode;
    use pfx_config::Config;

    fn smtp(cfg: &Config) -> Params<'_> {
        Params {
            cfg,
            mode: Mode::Smtp,
        }
    }

    #[test]
    fn match_names_for_verify_and_secure() {
        let p = Policy {
            level: Level::Secure,
            matches: vec!["nexthop".into(), "dot-nexthop".into()],
        };
        assert_eq!(
            p.names("mx1.example.com", "example.com"),
            ["example.com", "mx1.example.com"]
        );
        assert_eq!(p.names("mx.other.net", "example.com"), ["example.com"]);
        let p = Policy {
            level: Level::Verify,
            matches: vec!["hostname".into(), ".example.org".into()],
        };
        assert_eq!(
            p.names("mx.example.net", "example.net"),
            ["mx.example.net", "example.org"]
        );
    }

    #[test]
    fn the_old_enforce_and_use_parameters_map_to_levels_as_in_postfix() {
        let level = |text: &str| {
            let cfg = Config::from_text(std::path::Path::new("/etc/postfix"), text).unwrap();
            Security::new(&smtp(&cfg)).unwrap().level
        };
        assert_eq!(level(""), Level::None);
        assert_eq!(level("smtp_use_tls = yes\n"), Level::May);
        assert_eq!(level("smtp_enforce_tls = yes\n"), Level::Verify);
        assert_eq!(
            level("smtp_enforce_tls = yes\nsmtp_tls_enforce_peername = no\n"),
            Level::Encrypt
        );
        assert_eq!(
            level("smtp_enforce_tls = yes\nsmtp_tls_security_level = may\n"),
            Level::May
        );
    }

    #[test]
    fn lmtp_reads_the_lmtp_tls_and_sasl_parameters() {
        let cfg = Config::from_text(
            std::path::Path::new("/etc/postfix"),
            "smtp_tls_security_level = may\nlmtp_tls_security_level = encrypt\n\
             lmtp_sasl_auth_enable = yes\nlmtp_sasl_security_options = noanonymous\n",
        )
        .unwrap();
        assert_eq!(Security::new(&smtp(&cfg)).unwrap().level, Level::May);
        let lmtp = Params {
            cfg: &cfg,
            mode: Mode::Lmtp,
        };
        let sec = Security::new(&lmtp).unwrap();
        assert_eq!(sec.level, Level::Encrypt);
        let sasl = sec.sasl.expect("lmtp_sasl_auth_enable");
        assert_eq!(sasl.mechanism(&["PLAIN".into()], None), Some("PLAIN"));
        assert!(Security::new(&smtp(&cfg)).unwrap().sasl.is_none());
    }

    #[test]
    fn policy_entries_that_cannot_be_honoured_defer_instead() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("tls_policy");
        std::fs::write(
            &table,
            "[a.test]:25 encrypt ciphers=high\n[b.test]:25 encrypt exclude=aNULL\n\
             [c.test]:25 verify protocols=>=TLSv1.3\n[d.test]:25 secure protocols=!SSLv2:!SSLv3 match=nexthop\n\
             [e.test]:25 encrypt tafile=/etc/ta.pem\n.example.org may\n",
        )
        .unwrap();
        let text = format!("smtp_tls_policy_maps = texthash:{}\n", table.display());
        let cfg = Config::from_text(dir.path(), &text).unwrap();
        let sec = Security::new(&smtp(&cfg)).unwrap();
        let level = |hop: &str, domain: &str| sec.policy(hop, domain).map(|p| p.level);
        assert_eq!(level("[a.test]:25", "a.test").unwrap(), Level::Encrypt);
        assert_eq!(level("[d.test]:25", "d.test").unwrap(), Level::Secure);
        assert_eq!(
            level("mx.example.org", "mx.example.org").unwrap(),
            Level::May
        );
        assert_eq!(level("other.test", "other.test").unwrap(), Level::None);
        for hop in ["b.test", "c.test", "e.test"] {
            let o = sec.policy(&format!("[{hop}]:25"), hop).unwrap_err();
            assert_eq!(o.reason, "client TLS configuration problem", "{hop}");
            assert_eq!(o.dsn, "4.7.5");
        }
    }

    #[test]
    fn options_that_forbid_plaintext_leave_no_mechanism() {
        let items = |s: &str| pfx_config::value::split_list(s);
        let o = Options::parse("x", &items("noplaintext, noanonymous")).unwrap();
        assert!(o.noplaintext);
        let o = Options::parse("x", &items("noanonymous")).unwrap();
        assert!(!o.noplaintext);
        assert!(Options::parse("x", &items("nonsense")).is_err());
    }
}
