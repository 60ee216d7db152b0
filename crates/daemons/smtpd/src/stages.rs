//! The stages of the SMTP conversation that have a restriction list of
//! their own (Postfix's `smtpd_*_restrictions`), the lists and classes of
//! one configuration, and the access tables they name, opened once (before
//! any chroot). How a list is evaluated is in `check.rs`.

use std::collections::HashMap;

use pfx_config::restriction::{self, Restriction};
use pfx_config::{BuildError, Config};
use pfx_maps::passwd::Passwd;
use pfx_maps::Map;

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
}

/// Every stage's restriction list and every class, parsed once per
/// configuration, with the tables they name.
#[derive(Debug)]
pub(crate) struct Restrictions {
    lists: [Vec<Restriction>; Stage::ALL.len()],
    classes: HashMap<String, Vec<Restriction>>,
    class_names: Vec<String>,
    tables: HashMap<String, Map>,
}

impl Restrictions {
    pub(crate) fn new(cfg: &Config, passwd: &Passwd) -> Result<Self, BuildError> {
        let parsed = restriction::Lists::parse(&|n| cfg.get(n).map_err(|e| e.to_string()))?;
        let mut lists: [Vec<Restriction>; Stage::ALL.len()] = Default::default();
        for stage in Stage::ALL {
            lists[stage as usize] = parsed
                .lists
                .get(stage.parameter())
                .cloned()
                .unwrap_or_default();
        }
        let class_names = restriction::tokens(&cfg.get("smtpd_restriction_classes")?)?;
        let mut tables = HashMap::new();
        let all = lists.iter().chain(parsed.classes.values()).flatten();
        for r in all {
            if let Some(t) = r.tables() {
                if !tables.contains_key(t) {
                    let map = Map::parse(t, passwd).map_err(|e| format!("{t}: {e}"))?;
                    tables.insert(t.to_owned(), map);
                }
            }
        }
        Ok(Self {
            lists,
            classes: parsed.classes,
            class_names,
            tables,
        })
    }

    pub(crate) fn list(&self, stage: Stage) -> &[Restriction] {
        &self.lists[stage as usize]
    }

    pub(crate) fn class(&self, name: &str) -> Option<&[Restriction]> {
        self.classes.get(name).map(Vec::as_slice)
    }

    pub(crate) fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub(crate) fn table(&self, spec: &str) -> Option<&Map> {
        self.tables.get(spec)
    }

    /// Every policy service the lists and classes name.
    pub(crate) fn policies(&self) -> impl Iterator<Item = &restriction::PolicyService> {
        self.lists
            .iter()
            .chain(self.classes.values())
            .flatten()
            .filter_map(|r| match r {
                Restriction::Policy(p) => Some(p),
                _ => None,
            })
    }
}
