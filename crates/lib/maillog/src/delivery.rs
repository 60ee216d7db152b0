//! The delivery status line every delivery agent (and qmgr, for mail it
//! cannot hand to an agent) logs, in Postfix's `log_adhoc` format:
//! `ID: to=<r>, orig_to=<o>, relay=R, delay=D, delays=a/b/c/d, dsn=X, status=S (text)`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Points in a delivery's life, for `delay=` and `delays=a/b/c/d`.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub arrival: SystemTime,
    /// qmgr took the message into the active queue.
    pub activated: SystemTime,
    /// The agent started on it (connection setup begins).
    pub agent_start: SystemTime,
    /// Connection set up, transmission begins.
    pub connected: SystemTime,
    pub done: SystemTime,
}

fn secs(later: SystemTime, earlier: SystemTime) -> f64 {
    later
        .duration_since(earlier)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Two significant digits at most two decimals, as Postfix prints delays.
pub fn pretty(x: f64) -> String {
    let s = if x < 0.005 {
        return "0".into();
    } else if x < 1.0 {
        format!("{x:.2}")
    } else if x < 10.0 {
        format!("{x:.1}")
    } else {
        return format!("{x:.0}");
    };
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// How a delivery attempt ended for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Class {
    Sent,
    /// Try again later.
    Deferred,
    /// Give up: the sender gets a non-delivery notice.
    Bounced,
}

impl Class {
    /// The class an enhanced status code says: 2 sent, 4 deferred, else bounced.
    pub fn of_dsn(dsn: &str) -> Self {
        match dsn.as_bytes().first() {
            Some(b'2') => Self::Sent,
            Some(b'4') => Self::Deferred,
            _ => Self::Bounced,
        }
    }

    /// The `status=` word of the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Deferred => "deferred",
            Self::Bounced => "bounced",
        }
    }
}

/// What a success notice (RFC 3464 `Action:`) says of a delivery, for a
/// recipient that asked for one (NOTIFY=SUCCESS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Final delivery: a mailbox, a file, a command.
    #[default]
    Delivered,
    /// Handed to a next hop that does not do DSN.
    Relayed,
    /// An alias or `.forward` the message went on from; its addresses
    /// are not reported one by one.
    Expanded,
    /// Handed to a next hop that announced DSN: a success notice is its
    /// business, not ours (Postfix's smtp clears NOTIFY=SUCCESS then).
    Passed,
}

impl Action {
    /// The `Action:` word, when a notice is due.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Self::Delivered => Some("delivered"),
            Self::Relayed => Some("relayed"),
            Self::Expanded => Some("expanded"),
            Self::Passed => None,
        }
    }
}

/// One recipient's outcome, as every delivery agent reports it to qmgr and
/// as the log line shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub class: Class,
    /// Enhanced status code (RFC 3463), e.g. `5.1.1`.
    pub dsn: String,
    /// Where the answer came from: `local`, `mx.example[192.0.2.1]:25`, `none`.
    pub relay: String,
    /// The text in parentheses: the server's reply, or why it failed.
    pub reason: String,
    /// The address that failed, when it is not the one requested (an
    /// alias target): the bounce notice names it.
    pub final_recipient: Option<String>,
    /// For a success notice.
    pub action: Action,
}

impl Outcome {
    pub fn sent(relay: &str, text: impl Into<String>) -> Self {
        Self::new(Class::Sent, "2.0.0", relay, text)
    }

    /// A failure: deferred when `temporary`, else bounced.
    pub fn failed(temporary: bool, dsn: &str, relay: &str, reason: impl Into<String>) -> Self {
        let class = if temporary {
            Class::Deferred
        } else {
            Class::Bounced
        };
        Self::new(class, dsn, relay, reason)
    }

    pub fn new(class: Class, dsn: &str, relay: &str, reason: impl Into<String>) -> Self {
        Self {
            class,
            dsn: dsn.to_owned(),
            relay: relay.to_owned(),
            reason: reason.into(),
            final_recipient: None,
            action: Action::Delivered,
        }
    }

    pub fn is_temporary(&self) -> bool {
        self.class == Class::Deferred
    }

    /// The whole log line after `ID: `.
    pub fn line(&self, to: &str, orig_to: Option<&str>, t: Times) -> String {
        line(to, orig_to, t, &self.relay, self)
    }

    /// [`Outcome::line`] for the `uses`th delivery over one connection:
    /// Postfix shows the reuse after the relay, in the log only.
    pub fn line_reused(&self, to: &str, orig_to: Option<&str>, t: Times, uses: u32) -> String {
        if uses > 1 {
            line(
                to,
                orig_to,
                t,
                &format!("{}, conn_use={uses}", self.relay),
                self,
            )
        } else {
            self.line(to, orig_to, t)
        }
    }
}

fn line(to: &str, orig_to: Option<&str>, t: Times, relay: &str, o: &Outcome) -> String {
    let orig = match orig_to {
        Some(orig) if orig != to => format!("orig_to=<{orig}>, "),
        _ => String::new(),
    };
    format!(
        "to=<{to}>, {orig}relay={relay}, delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({})",
        pretty(secs(t.done, t.arrival)),
        pretty(secs(t.activated, t.arrival)),
        pretty(secs(t.agent_start, t.activated)),
        pretty(secs(t.connected, t.agent_start)),
        pretty(secs(t.done, t.connected)),
        o.dsn,
        o.class.as_str(),
        o.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn delays_print_like_postfix() {
        assert_eq!(pretty(0.0), "0");
        assert_eq!(pretty(0.004), "0");
        assert_eq!(pretty(0.05), "0.05");
        assert_eq!(pretty(0.1), "0.1");
        assert_eq!(pretty(1.23), "1.2");
        assert_eq!(pretty(12.7), "13");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let ms = |n| t0 + Duration::from_millis(n);
        let t = Times {
            arrival: t0,
            activated: ms(50),
            agent_start: ms(60),
            connected: ms(60),
            done: ms(120),
        };
        let o = Outcome::sent("local", "delivered to maildir");
        assert_eq!(
            o.line("root@ywnds.com", Some("postmaster@ywnds.com"), t),
            "to=<root@ywnds.com>, orig_to=<postmaster@ywnds.com>, relay=local, delay=0.12, delays=0.05/0.01/0/0.06, dsn=2.0.0, status=sent (delivered to maildir)"
        );
        let o = Outcome::failed(true, "4.4.1", "mx[192.0.2.1]:25", "lost connection");
        assert_eq!(
            o.line_reused("u@x.example", None, t, 3),
            "to=<u@x.example>, relay=mx[192.0.2.1]:25, conn_use=3, delay=0.12, delays=0.05/0.01/0/0.06, dsn=4.4.1, status=deferred (lost connection)"
        );
    }
}
