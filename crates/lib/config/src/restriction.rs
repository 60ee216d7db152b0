//! The smtpd restriction keywords postfix-rs implements, parsed from a list.
//!
//! A list that names anything else (an unknown keyword, or one of Postfix's
//! that postfix-rs does not implement yet, such as `check_client_access`) is
//! refused when the configuration is checked, not discovered at run time.

/// One restriction of an `smtpd_*_restrictions` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    PermitMynetworks,
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
    RejectUnlistedRecipient,
    Permit,
    Reject,
    Defer,
}

impl Restriction {
    /// The keyword as written in main.cf.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::PermitMynetworks => "permit_mynetworks",
            Self::PermitSaslAuthenticated => "permit_sasl_authenticated",
            Self::RejectSenderLoginMismatch => "reject_sender_login_mismatch",
            Self::RejectAuthenticatedSenderLoginMismatch => {
                "reject_authenticated_sender_login_mismatch"
            }
            Self::RejectUnauthenticatedSenderLoginMismatch => {
                "reject_unauthenticated_sender_login_mismatch"
            }
            Self::PermitAuthDestination => "permit_auth_destination",
            Self::RejectUnauthDestination => "reject_unauth_destination",
            Self::DeferUnauthDestination => "defer_unauth_destination",
            Self::RejectUnlistedRecipient => "reject_unlisted_recipient",
            Self::Permit => "permit",
            Self::Reject => "reject",
            Self::Defer => "defer",
        }
    }

    const ALL: [Self; 12] = [
        Self::PermitMynetworks,
        Self::PermitSaslAuthenticated,
        Self::RejectSenderLoginMismatch,
        Self::RejectAuthenticatedSenderLoginMismatch,
        Self::RejectUnauthenticatedSenderLoginMismatch,
        Self::PermitAuthDestination,
        Self::RejectUnauthDestination,
        Self::DeferUnauthDestination,
        Self::RejectUnlistedRecipient,
        Self::Permit,
        Self::Reject,
        Self::Defer,
    ];

    /// Whether it needs a recipient (RCPT) to act on.
    pub fn needs_recipient(self) -> bool {
        matches!(
            self,
            Self::PermitAuthDestination
                | Self::RejectUnauthDestination
                | Self::DeferUnauthDestination
                | Self::RejectUnlistedRecipient
        )
    }
}

/// The restriction lists postfix-rs evaluates, and whether each is applied
/// where a recipient is known.
pub const LISTS: &[(&str, bool)] = &[
    ("smtpd_client_restrictions", false),
    ("smtpd_helo_restrictions", false),
    ("smtpd_sender_restrictions", false),
    ("smtpd_relay_restrictions", true),
    ("smtpd_recipient_restrictions", true),
    ("smtpd_data_restrictions", false),
    ("smtpd_end_of_data_restrictions", false),
    ("smtpd_etrn_restrictions", false),
];

/// Whether relay and recipient restrictions together hold one restriction
/// that can refuse mail for other domains (Postfix's smtpd will not start
/// without one).
pub fn closes_relay(restrictions: &[Restriction]) -> bool {
    restrictions.iter().any(|r| {
        matches!(
            r,
            Restriction::RejectUnauthDestination
                | Restriction::DeferUnauthDestination
                | Restriction::Reject
                | Restriction::Defer
        )
    })
}

/// Parses the (expanded, split) items of the list `name`. Postfix keywords
/// are case-insensitive.
pub fn parse(name: &str, items: &[String]) -> Result<Vec<Restriction>, String> {
    let with_recipient = LISTS.iter().any(|(n, r)| *n == name && *r);
    items
        .iter()
        .map(|item| {
            let r = Restriction::ALL
                .into_iter()
                .find(|r| item.eq_ignore_ascii_case(r.keyword()))
                .ok_or_else(|| {
                    format!("restriction \"{item}\" in {name}: not implemented by postfix-rs")
                })?;
            if r.needs_recipient() && !with_recipient {
                return Err(format!(
                    "restriction \"{item}\" in {name}: not implemented by postfix-rs outside the recipient restrictions"
                ));
            }
            Ok(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(s: &str) -> Vec<String> {
        crate::value::split_list(s)
    }

    #[test]
    fn debian_relay_restrictions_parse() {
        let l = parse(
            "smtpd_relay_restrictions",
            &items("permit_mynetworks permit_sasl_authenticated defer_unauth_destination"),
        )
        .unwrap();
        assert_eq!(
            l,
            [
                Restriction::PermitMynetworks,
                Restriction::PermitSaslAuthenticated,
                Restriction::DeferUnauthDestination
            ]
        );
    }

    #[test]
    fn unknown_and_unimplemented_keywords_are_refused() {
        let e = parse(
            "smtpd_recipient_restrictions",
            &items("permit_mynetworks, check_client_access hash:/etc/postfix/access"),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "restriction \"check_client_access\" in smtpd_recipient_restrictions: not implemented by postfix-rs"
        );
        assert!(parse("smtpd_relay_restrictions", &items("reject_bogus")).is_err());
        assert!(parse(
            "smtpd_etrn_restrictions",
            &items("reject_unauth_destination")
        )
        .is_err());
        assert!(parse(
            "smtpd_etrn_restrictions",
            &items("PERMIT_MYNETWORKS, reject")
        )
        .is_ok());
    }
}
