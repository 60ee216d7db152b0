//! The stages of the SMTP conversation that have a restriction list of
//! their own (Postfix's `smtpd_*_restrictions`), and the lists of one
//! configuration. How a list is evaluated is in `check.rs`.

use pfx_config::restriction::{self, Restriction};
use pfx_config::{BuildError, Config};

/// A stage of the conversation with a restriction list of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Client,
    Helo,
    Sender,
    Relay,
    Recipient,
    Data,
    EndOfData,
    Etrn,
}

impl Stage {
    const ALL: [Self; 8] = [
        Self::Client,
        Self::Helo,
        Self::Sender,
        Self::Relay,
        Self::Recipient,
        Self::Data,
        Self::EndOfData,
        Self::Etrn,
    ];

    /// The main.cf parameter that holds the stage's list.
    pub(crate) const fn parameter(self) -> &'static str {
        match self {
            Self::Client => "smtpd_client_restrictions",
            Self::Helo => "smtpd_helo_restrictions",
            Self::Sender => "smtpd_sender_restrictions",
            Self::Relay => "smtpd_relay_restrictions",
            Self::Recipient => "smtpd_recipient_restrictions",
            Self::Data => "smtpd_data_restrictions",
            Self::EndOfData => "smtpd_end_of_data_restrictions",
            Self::Etrn => "smtpd_etrn_restrictions",
        }
    }

    /// How Postfix's reject text names what the stage judged.
    pub(crate) const fn class(self) -> &'static str {
        match self {
            Self::Client => "Client host",
            Self::Helo => "Helo command",
            Self::Sender => "Sender address",
            Self::Relay | Self::Recipient => "Recipient address",
            Self::Data => "Data command",
            Self::EndOfData => "End-of-data",
            Self::Etrn => "Etrn command",
        }
    }
}

/// Every stage's restriction list, parsed once per configuration.
#[derive(Debug)]
pub(crate) struct Restrictions([Vec<Restriction>; Stage::ALL.len()]);

impl Restrictions {
    pub(crate) fn new(cfg: &Config) -> Result<Self, BuildError> {
        let mut lists: [Vec<Restriction>; Stage::ALL.len()] = Default::default();
        for stage in Stage::ALL {
            let name = stage.parameter();
            let items = cfg.list(name)?;
            lists[stage as usize] = restriction::parse(name, &items)?;
        }
        Ok(Self(lists))
    }

    pub(crate) fn list(&self, stage: Stage) -> &[Restriction] {
        &self.0[stage as usize]
    }
}
