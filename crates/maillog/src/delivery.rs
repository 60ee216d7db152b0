//! The delivery status line every delivery agent (and qmgr, for mail it
//! cannot hand to an agent) logs, in Postfix's `log_adhoc` format:
//! `ID: to=<r>, orig_to=<o>, relay=R, delay=D, delays=a/b/c/d, dsn=X, status=S (text)`.

use std::time::SystemTime;

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

/// The outcome being logged.
pub struct Outcome<'a> {
    pub status: &'a str,
    pub dsn: &'a str,
    pub relay: &'a str,
    pub text: &'a str,
}

/// The whole line after `ID: `.
pub fn line(to: &str, orig_to: Option<&str>, t: Times, o: &Outcome<'_>) -> String {
    let orig = match orig_to {
        Some(orig) if orig != to => format!("orig_to=<{orig}>, "),
        _ => String::new(),
    };
    format!(
        "to=<{to}>, {orig}relay={}, delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({})",
        o.relay,
        pretty(secs(t.done, t.arrival)),
        pretty(secs(t.activated, t.arrival)),
        pretty(secs(t.agent_start, t.activated)),
        pretty(secs(t.connected, t.agent_start)),
        pretty(secs(t.done, t.connected)),
        o.dsn,
        o.status,
        o.text
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
        let o = Outcome {
            status: "sent",
            dsn: "2.0.0",
            relay: "local",
            text: "delivered to maildir",
        };
        assert_eq!(
            line("root@ywnds.com", Some("postmaster@ywnds.com"), t, &o),
            "to=<root@ywnds.com>, orig_to=<postmaster@ywnds.com>, relay=local, delay=0.12, delays=0.05/0.01/0/0.06, dsn=2.0.0, status=sent (delivered to maildir)"
        );
    }
}
