//! The per-command counts of a session, as Postfix's `disconnect from`
//! line shows them.

/// The commands counted, in the order of Postfix's command table.
const VERBS: [&str; 16] = [
    "helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat",
    "rset", "noop", "vrfy", "etrn", "quit", "unknown",
];

/// Accepted and total uses of each command.
#[derive(Debug, Default)]
pub(crate) struct Stats([(u32, u32); VERBS.len()]);

impl Stats {
    /// Counts one use of `verb`; `ok` when the reply was positive.
    pub(crate) fn count(&mut self, verb: &str, ok: bool) {
        if let Some(i) = VERBS.iter().position(|v| *v == verb) {
            self.0[i].1 += 1;
            if ok {
                self.0[i].0 += 1;
            }
        }
    }

    /// ` ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`: each command used,
    /// `ok/total` where some failed, then the sum; `commands=0/0` for a
    /// session without any (Postfix's mark of an abnormal one: refused at
    /// connect, or lost before a command).
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let (mut ok, mut total) = (0, 0);
        for (verb, (o, t)) in VERBS.iter().zip(self.0) {
            if t == 0 {
                continue;
            }
            ok += o;
            total += t;
            out.push_str(&ratio(verb, o, t));
        }
        if total == 0 {
            out.push_str(" commands=0/0");
        } else {
            out.push_str(&ratio("commands", ok, total));
        }
        out
    }
}

fn ratio(name: &str, ok: u32, total: u32) -> String {
    if ok == total {
        format!(" {name}={ok}")
    } else {
        format!(" {name}={ok}/{total}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_disconnect_counts() {
        let mut s = Stats::default();
        assert_eq!(s.text(), " commands=0/0");
        for (verb, ok) in [
            ("quit", true),
            ("ehlo", true),
            ("rcpt", false),
            ("mail", true),
        ] {
            s.count(verb, ok);
        }
        s.count("rcpt", true);
        // Command table order, not the order of use.
        assert_eq!(s.text(), " ehlo=1 mail=1 rcpt=1/2 quit=1 commands=4/5");
    }
}
