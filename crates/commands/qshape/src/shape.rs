//! Counting addresses by domain and age bucket, and the table, as Postfix's
//! qshape does both.

use std::collections::HashMap;

pub(crate) use crate::envelope::number;
use crate::envelope::Envelope;

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) sender: bool,
    pub(crate) parents: bool,
    pub(crate) linear: bool,
    /// Age buckets; the last has no upper limit.
    pub(crate) buckets: u64,
    /// Minutes the first bucket spans.
    pub(crate) tick: f64,
    pub(crate) min_subdomains: u64,
    pub(crate) width: u64,
    /// Interim tables every this many messages (0: none).
    pub(crate) batch_msg_count: u64,
    /// Domains shown at most (0: all).
    pub(crate) batch_top_domains: u64,
}

/// The narrowest the domain column gets.
const MIN_DOMAIN_WIDTH: usize = 18;

pub(crate) struct Shape {
    opts: Options,
    now: i64,
    /// Per domain (and `TOTAL`): the count over all buckets, then each
    /// bucket's (index 1 to `buckets`).
    counts: HashMap<Vec<u8>, Vec<u64>>,
    /// Per parent domain: how many of its subdomains were seen.
    subdomains: HashMap<Vec<u8>, u64>,
    messages: u64,
}

impl Shape {
    pub(crate) fn new(opts: Options, now: i64) -> Self {
        Self {
            opts,
            now,
            counts: HashMap::new(),
            subdomains: HashMap::new(),
            messages: 0,
        }
    }

    /// The age bucket of a message that arrived at `time`: 1 within the
    /// first `tick` minutes, then one more per doubling of the age (or per
    /// `tick` with -l), the last bucket for all older.
    fn bucket(&self, time: f64) -> usize {
        let m = (self.now as f64 - time) / (60.0 * self.opts.tick);
        let b = if m < 1.0 {
            1.0
        } else if self.opts.linear {
            (m + 1.0).trunc()
        } else {
            2.0 + (m.ln() / 2f64.ln()).trunc()
        };
        b.min(self.opts.buckets as f64) as usize
    }

    fn count(&mut self, key: &[u8], bucket: usize) -> bool {
        let row = self
            .counts
            .entry(key.to_vec())
            .or_insert_with(|| vec![0; self.opts.buckets as usize + 1]);
        row[0] += 1;
        row[bucket] += 1;
        row[0] > 1
    }

    /// Counts one message's recipients (or sender); says whether an interim
    /// table is due.
    pub(crate) fn add(&mut self, env: &Envelope) -> bool {
        let b = self.bucket(env.time);
        let addresses = if self.opts.sender {
            std::slice::from_ref(&env.sender)
        } else {
            &env.recipients[..]
        };
        for a in addresses {
            self.count(b"TOTAL", b);
            let mut domain = domain(&a.to_ascii_lowercase());
            let mut new = false;
            loop {
                let old = self.count(&domain, b);
                if new {
                    *self.subdomains.entry(domain.clone()).or_default() += 1;
                }
                new = !old;
                if !self.opts.parents {
                    break;
                }
                match parent(&domain) {
                    Some(p) => domain = p,
                    None => break,
                }
            }
        }
        self.messages += 1;
        self.opts.batch_msg_count > 0 && self.messages.is_multiple_of(self.opts.batch_msg_count)
    }

    /// The table: a heading of bucket limits, then each domain's counts,
    /// the busiest first.
    pub(crate) fn table(&mut self) -> Vec<u8> {
        let n = self.opts.buckets as usize;
        let total = self
            .counts
            .entry(b"TOTAL".to_vec())
            .or_insert_with(|| vec![0; n + 1])
            .clone();
        let mut heads = Vec::with_capacity(n + 1);
        let mut widths = Vec::with_capacity(n + 1);
        let mut domain_width = self.opts.width as i64;
        let mut limit = Limit::Minutes(0.0);
        for (i, count) in total.iter().enumerate() {
            let head = if i == 0 {
                "T".to_owned()
            } else {
                limit.to_string()
            };
            let w = count.to_string().len().max(head.len());
            let w = if w > 2 { w + 1 } else { 3 };
            heads.push(head);
            widths.push(w);
            domain_width -= w as i64;
            limit = match limit {
                Limit::Minutes(t) if i + 1 < n => Limit::Minutes(
                    t + if t != 0.0 && !self.opts.linear {
                        t
                    } else {
                        self.opts.tick
                    },
                ),
                other => other.open_ended(),
            };
        }
        let domain_width = usize::try_from(domain_width)
            .unwrap_or(0)
            .max(MIN_DOMAIN_WIDTH);
        let mut out = Vec::new();
        row(&mut out, b"", &heads, &widths, domain_width);
        let mut keys: Vec<&Vec<u8>> = self.counts.keys().collect();
        keys.sort_by(|a, b| {
            self.counts[*b][0]
                .cmp(&self.counts[*a][0])
                .then(a.len().cmp(&b.len()))
                .then(a.cmp(b))
        });
        let mut shown = 0;
        for key in keys {
            if key.first() == Some(&b'.')
                && self.subdomains.get(key).copied().unwrap_or(0) < self.opts.min_subdomains
            {
                continue;
            }
            shown += 1;
            if self.opts.batch_top_domains > 0 && shown > self.opts.batch_top_domains {
                break;
            }
            let counts: Vec<String> = self.counts[key].iter().map(u64::to_string).collect();
            row(&mut out, key, &counts, &widths, domain_width);
        }
        out
    }
}

/// A bucket's upper limit in the heading: minutes, then the last one's
/// with a `+` per step past it (qshape appends one each time).
enum Limit {
    Minutes(f64),
    Open(String),
}

impl Limit {
    fn open_ended(self) -> Self {
        Self::Open(format!("{self}+"))
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Minutes(t) => f.write_str(&perl_number(*t)),
            Self::Open(s) => f.write_str(s),
        }
    }
}

/// A number as Perl prints it (`%.15g`).
fn perl_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        return format!("{}", n as i64);
    }
    let s = format!("{:.*e}", 14, n);
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-5..15).contains(&exp) {
        let decimals = usize::try_from(14 - exp).unwrap_or(0);
        let fixed = format!("{n:.decimals$}");
        fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        let m = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// One line: the domain right-aligned in its column (a long one cut to its
/// end behind `+`, or `.+` for a parent domain), then each value
/// right-aligned in its width.
fn row(out: &mut Vec<u8>, domain: &[u8], values: &[String], widths: &[usize], domain_width: usize) {
    let len = domain.len();
    if len > domain_width {
        if domain.first() == Some(&b'.') {
            out.extend_from_slice(b".+");
            out.extend_from_slice(&domain[len - (domain_width - 2)..]);
        } else {
            out.push(b'+');
            out.extend_from_slice(&domain[len - (domain_width - 1)..]);
        }
    } else {
        out.resize(out.len() + domain_width - len, b' ');
        out.extend_from_slice(domain);
    }
    for (v, &w) in values.iter().zip(widths) {
        out.resize(out.len() + w.saturating_sub(v.len()), b' ');
        out.extend_from_slice(v.as_bytes());
    }
    out.push(b'\n');
}

/// The domain qshape files a (lower-cased) address under: the null sender
/// as `MAILER-DAEMON`, else what follows the last `@`, with `..` made `.`
/// and one leading and one trailing dot dropped.
fn domain(address: &[u8]) -> Vec<u8> {
    if address.is_empty() {
        return b"MAILER-DAEMON".to_vec();
    }
    let after_at = match address.iter().rposition(|&b| b == b'@') {
        Some(i) => &address[i + 1..],
        None => address,
    };
    let mut d = Vec::with_capacity(after_at.len());
    let mut i = 0;
    while i < after_at.len() {
        if after_at[i..].starts_with(b"..") {
            d.push(b'.');
            i += 2;
        } else {
            d.push(after_at[i]);
            i += 1;
        }
    }
    if d.len() >= 2 && d[0] == b'.' {
        d.remove(0);
    }
    if d.len() >= 2 && d.last() == Some(&b'.') {
        d.pop();
    }
    d
}

/// The parent of a domain, with a leading dot, down to the one below the
/// top level: `a.b.example.com` -> `.b.example.com` -> `.example.com`.
fn parent(domain: &[u8]) -> Option<Vec<u8>> {
    let rest = domain.strip_prefix(b".").unwrap_or(domain);
    let dot = rest.iter().position(|&b| b == b'.')?;
    let tail = &rest[dot + 1..];
    if dot == 0 || !tail.contains(&b'.') {
        return None;
    }
    let mut p = Vec::with_capacity(tail.len() + 1);
    p.push(b'.');
    p.extend_from_slice(tail);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            sender: false,
            parents: false,
            linear: false,
            buckets: 10,
            tick: 5.0,
            min_subdomains: 5,
            width: 80,
            batch_msg_count: 0,
            batch_top_domains: 0,
        }
    }

    fn env(age_minutes: f64, sender: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            time: 1_000_000.0 - age_minutes * 60.0,
            sender: sender.into(),
            recipients: rcpts.iter().map(|r| r.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn domains_as_qshape_files_them() {
        assert_eq!(domain(b""), b"MAILER-DAEMON");
        assert_eq!(domain(b"a@b@example.com"), b"example.com");
        assert_eq!(domain(b"user"), b"user");
        assert_eq!(domain(b"u@example.com."), b"example.com");
        assert_eq!(domain(b"u@.example..com"), b"example.com");
        assert_eq!(domain(b"u@..."), b".");
        assert_eq!(domain(b"u@."), b".");
        assert_eq!(domain(b"u@"), b"");
    }

    #[test]
    fn parents_stop_below_the_top_level() {
        assert_eq!(parent(b"a.b.example.com").unwrap(), b".b.example.com");
        assert_eq!(parent(b".b.example.com").unwrap(), b".example.com");
        assert_eq!(parent(b".example.com"), None);
        assert_eq!(parent(b"example.com"), None);
    }

    #[test]
    fn numbers_print_as_perl_prints_them() {
        assert_eq!(perl_number(5.0), "5");
        assert_eq!(perl_number(0.5), "0.5");
        assert_eq!(perl_number(2.25), "2.25");
        assert_eq!(perl_number(0.1 + 0.2), "0.3");
    }

    #[test]
    fn the_default_table_of_an_empty_queue() {
        let mut s = Shape::new(opts(), 1_000_000);
        let t = String::from_utf8(s.table()).unwrap();
        assert_eq!(
            t,
            "                                         T  5 10 20 40 80 160 320 640 1280 1280+\n\
             \x20                                 TOTAL  0  0  0  0  0  0   0   0   0    0     0\n"
        );
    }

    #[test]
    fn ages_fall_in_doubling_buckets() {
        let s = Shape::new(opts(), 1_000_000);
        let at = |m: f64| s.bucket(1_000_000.0 - m * 60.0);
        assert_eq!(at(0.0), 1);
        assert_eq!(at(4.9), 1);
        assert_eq!(at(5.0), 2);
        assert_eq!(at(9.9), 2);
        assert_eq!(at(10.0), 3);
        assert_eq!(at(1279.0), 9);
        assert_eq!(at(1280.0), 10);
        assert_eq!(at(100_000.0), 10);
        assert_eq!(at(-60.0), 1, "from the future");
    }

    #[test]
    fn parent_domains_need_enough_subdomains() {
        let o = Options {
            parents: true,
            min_subdomains: 2,
            ..opts()
        };
        let mut s = Shape::new(o, 1_000_000);
        s.add(&env(
            1.0,
            "s@x",
            &["a@one.example.com", "b@two.example.com", "c@one.other.org"],
        ));
        let t = String::from_utf8(s.table()).unwrap();
        assert!(t.contains(" .example.com  2  2"), "{t}");
        assert!(!t.contains(" .other.org "), "one subdomain only: {t}");
        assert!(t.contains(" one.other.org  1  1"), "{t}");
    }

    #[test]
    fn long_domains_are_cut_to_their_end() {
        let mut out = Vec::new();
        row(
            &mut out,
            b"averyveryverylongdomainname.example",
            &[],
            &[],
            18,
        );
        row(
            &mut out,
            b".averyveryverylongdomainname.example",
            &[],
            &[],
            18,
        );
        row(&mut out, b"short.example", &[], &[], 18);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+omainname.example\n.+mainname.example\n     short.example\n"
        );
    }
}
