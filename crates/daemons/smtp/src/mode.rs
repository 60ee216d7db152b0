//! SMTP or LMTP: Postfix's smtp(8) and lmtp(8) are one program, and so
//! are they here. The mode decides the greeting (EHLO or LHLO), how next
//! hops are read (MX lookups or `unix:`/`inet:` endpoints), how the end of
//! DATA is answered (one reply, or one per accepted recipient), and which
//! parameters are read: in LMTP mode every `smtp_*` parameter the client
//! uses is read under its `lmtp_*` name, as Postfix's lmtp_params.c binds
//! them, so both programs share all their code and no default is repeated.

use std::borrow::Cow;
use std::time::Duration;

use pfx_config::{Config, Error};

/// Which of the two programs this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// smtp(8): RFC 5321 to other mail servers.
    Smtp,
    /// lmtp(8): RFC 2033 to a final delivery server (Dovecot, Cyrus).
    Lmtp,
}

impl Mode {
    /// The program name, for the log tag (`postfix/lmtp[pid]`).
    pub(crate) fn program(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::Lmtp => "lmtp",
        }
    }

    /// The greeting command.
    pub(crate) fn hello(self) -> &'static str {
        match self {
            Self::Smtp => "EHLO",
            Self::Lmtp => "LHLO",
        }
    }

    /// The parameter this mode reads where smtp(8) reads `name`. Names
    /// outside the client's namespace (`myhostname`, `queue_directory`)
    /// are shared.
    pub(crate) fn param(self, name: &'static str) -> Cow<'static, str> {
        if self == Self::Smtp {
            return Cow::Borrowed(name);
        }
        match name {
            "smtp_helo_name" => Cow::Borrowed("lmtp_lhlo_name"),
            "smtp_helo_timeout" => Cow::Borrowed("lmtp_lhlo_timeout"),
            _ => match name.strip_prefix("smtp_") {
                Some(rest) => Cow::Owned(format!("lmtp_{rest}")),
                None => Cow::Borrowed(name),
            },
        }
    }
}

/// main.cf as one of the two programs reads it: `smtp_*` names in, the
/// mode's names out, so an error names the parameter the administrator set.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) mode: Mode,
}

impl Params<'_> {
    pub(crate) fn get(&self, name: &'static str) -> Result<String, Error> {
        self.cfg.get(&self.mode.param(name))
    }

    pub(crate) fn bool(&self, name: &'static str) -> Result<bool, Error> {
        self.cfg.bool(&self.mode.param(name))
    }

    pub(crate) fn int(&self, name: &'static str) -> Result<i64, Error> {
        self.cfg.int(&self.mode.param(name))
    }

    pub(crate) fn time(&self, name: &'static str) -> Result<Duration, Error> {
        self.cfg.time(&self.mode.param(name))
    }

    pub(crate) fn list(&self, name: &'static str) -> Result<Vec<String>, Error> {
        self.cfg.list(&self.mode.param(name))
    }

    /// The configuration the TLS library reads: it knows the `smtp_tls_*`
    /// names only, so in LMTP mode they carry the `lmtp_tls_*` settings.
    pub(crate) fn tls_config(&self) -> Cow<'_, Config> {
        if self.mode == Mode::Smtp {
            return Cow::Borrowed(self.cfg);
        }
        let mut cfg = self.cfg.clone();
        for name in [
            "smtp_tls_CAfile",
            "smtp_tls_CApath",
            "smtp_tls_cert_file",
            "smtp_tls_key_file",
            "smtp_tls_protocols",
            "smtp_tls_mandatory_protocols",
        ] {
            // The raw value: a `$lmtp_...` reference in it still expands
            // against the lmtp_* parameters.
            if let Some(v) = self.cfg.raw(&self.mode.param(name)) {
                cfg.set_override(name, &v);
            }
        }
        Cow::Owned(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lmtp_reads_its_own_parameters_and_shares_the_rest() {
        assert_eq!(Mode::Lmtp.param("smtp_helo_name"), "lmtp_lhlo_name");
        assert_eq!(Mode::Lmtp.param("smtp_helo_timeout"), "lmtp_lhlo_timeout");
        assert_eq!(
            Mode::Lmtp.param("smtp_connection_cache_on_demand"),
            "lmtp_connection_cache_on_demand"
        );
        assert_eq!(Mode::Lmtp.param("myhostname"), "myhostname");
        assert_eq!(Mode::Smtp.param("smtp_helo_name"), "smtp_helo_name");
    }

    #[test]
    fn lmtp_tls_settings_reach_the_tls_library_under_smtp_names() {
        let cfg = Config::from_text(
            std::path::Path::new("/etc/postfix"),
            "smtp_tls_cert_file = /smtp.pem\nlmtp_tls_cert_file = /lmtp.pem\n",
        )
        .unwrap();
        let p = Params {
            cfg: &cfg,
            mode: Mode::Lmtp,
        };
        let tls = p.tls_config();
        assert_eq!(tls.get("smtp_tls_cert_file").unwrap(), "/lmtp.pem");
        // lmtp_tls_key_file defaults to $lmtp_tls_cert_file.
        assert_eq!(tls.get("smtp_tls_key_file").unwrap(), "/lmtp.pem");
        let p = Params {
            cfg: &cfg,
            mode: Mode::Smtp,
        };
        assert_eq!(
            p.tls_config().get("smtp_tls_key_file").unwrap(),
            "/smtp.pem"
        );
    }
}
