//! `cidr:` tables (cidr_table(5)): network blocks in order, the first that
//! holds the lookup key (an IPv4 or IPv6 address) answers.
//!
//! ```text
//! 192.168.1.1             OK          # one address (all bits)
//! 192.168.0.0/16          REJECT      # a block
//! [2001:db8::]/32         REJECT      # [] around an address is allowed
//! !10.0.0.0/8             DUNNO       # any IPv4 address outside the block
//! if 10.0.0.0/8                       # rules up to endif only inside it
//! 10.1.0.0/16             OK
//! endif
//! ```
//!
//! As Postfix 3.7: a key that is not an address never matches; a rule only
//! applies to keys of its own address family (a negated IPv4 rule does not
//! match an IPv6 key); a block with bits set beyond its length is refused
//! (`non-null host address bits in "1.2.3.4/24", perhaps you should use
//! "1.2.3.0/24" instead`). A rule with a problem is reported with the
//! file and line and left out (`cidr map FILE, line N: ...: skipping this
//! rule`); the rest of the table works. The table may be a file or inline
//! rules (`{ {rule}, {rule} }`).

use std::net::IpAddr;

use crate::text;

/// An address block as 16 bytes (IPv4 uses the first 4) and its length.
#[derive(Debug, Clone, Copy)]
struct Block {
    v6: bool,
    net: [u8; 16],
    mask: [u8; 16],
    /// Whether the rule wants the key inside (`!` wants it outside).
    inside: bool,
}

impl Block {
    fn bytes(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }

    /// Whether the rule decides for `key` (of the same family only).
    fn decides(&self, key: &Key) -> bool {
        if key.v6 != self.v6 {
            return false;
        }
        let n = self.bytes();
        let inside = (0..n).all(|i| key.bytes[i] & self.mask[i] == self.net[i]);
        inside == self.inside
    }
}

struct Key {
    v6: bool,
    bytes: [u8; 16],
}

#[derive(Debug)]
enum Op {
    Match(Block, String),
    If(Block, Option<usize>),
    Endif,
}

#[derive(Debug)]
struct Rule {
    line: usize,
    op: Op,
}

/// A loaded cidr table.
#[derive(Debug)]
pub struct Table {
    rules: Vec<Rule>,
}

/// `addr` as Postfix's cidr code reads it: IPv6 when it has a colon.
fn parse_addr(addr: &str) -> Option<Key> {
    let mut bytes = [0u8; 16];
    if addr.contains(':') {
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V6(a) => bytes = a.octets(),
            IpAddr::V4(_) => return None,
        }
        Some(Key { v6: true, bytes })
    } else {
        let a: std::net::Ipv4Addr = addr.parse().ok()?;
        bytes[..4].copy_from_slice(&a.octets());
        Some(Key { v6: false, bytes })
    }
}

fn addr_text(v6: bool, bytes: &[u8; 16]) -> String {
    if v6 {
        std::net::Ipv6Addr::from(*bytes).to_string()
    } else {
        std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

/// Parses `[addr]/len`, `[addr/len]`, `addr/len` or `addr`.
fn parse_block(pattern: &str, inside: bool) -> Result<Block, String> {
    let (addr, mask) = match pattern.strip_prefix('[') {
        Some(p) => {
            let Some((inner, after)) = p.split_once(']') else {
                return Err(format!("missing ']' character after \"[{p}\""));
            };
            if let Some(m) = after.strip_prefix('/') {
                (inner.to_owned(), Some(m.to_owned()))
            } else if !after.is_empty() {
                return Err(format!("garbage after \"[{inner}]\""));
            } else {
                match inner.split_once('/') {
                    Some((a, m)) => (a.to_owned(), Some(m.to_owned())),
                    None => (inner.to_owned(), None),
                }
            }
        }
        None => match pattern.split_once('/') {
            Some((a, m)) => (a.to_owned(), Some(m.to_owned())),
            None => (pattern.to_owned(), None),
        },
    };
    let v6 = addr.contains(':');
    let bits = if v6 { 128 } else { 32 };
    let Some(mask) = mask else {
        let key = parse_addr(&addr).ok_or_else(|| format!("bad address pattern: \"{addr}\""))?;
        return Ok(Block {
            v6,
            net: key.bytes,
            mask: [0xff; 16],
            inside,
        });
    };
    let bad = |what: &str| Err(format!("{what} in \"{addr}/{mask}\""));
    if mask.is_empty() || !mask.bytes().all(|c| c.is_ascii_digit()) {
        return bad("bad mask value");
    }
    let len: usize = mask.parse().unwrap_or(usize::MAX);
    if len > bits {
        return bad("bad mask length");
    }
    let Some(key) = parse_addr(&addr) else {
        return bad("bad network value");
    };
    let mut m = [0u8; 16];
    for (i, b) in m.iter_mut().enumerate() {
        let from = i * 8;
        *b = match len.saturating_sub(from) {
            0 => 0,
            n if n >= 8 => 0xff,
            n => 0xffu8 << (8 - n),
        };
    }
    let mut net = key.bytes;
    if (0..bits / 8).any(|i| net[i] & !m[i] != 0) {
        for i in 0..16 {
            net[i] &= m[i];
        }
        return Err(format!(
            "non-null host address bits in \"{addr}/{mask}\", perhaps you should use \"{}/{len}\" instead",
            addr_text(v6, &net)
        ));
    }
    Ok(Block {
        v6,
        net,
        mask: m,
        inside,
    })
}

/// Leading `!`s (each toggles) and white space.
fn negations(mut p: &str) -> (bool, &str) {
    let mut inside = true;
    loop {
        match p.chars().next() {
            Some('!') => inside = !inside,
            Some(c) if text::is_space(c) => {}
            _ => return (inside, p),
        }
        p = &p[1..];
    }
}

fn word(p: &str, w: &str) -> bool {
    p.len() >= w.len()
        && p.is_char_boundary(w.len())
        && p[..w.len()].eq_ignore_ascii_case(w)
        && !p[w.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn parse_rule(p: &str, nesting: usize) -> Result<Op, String> {
    if word(p, "if") {
        let (inside, rest) = negations(&p[2..]);
        if rest.is_empty() {
            return Err("no address pattern".to_owned());
        }
        return Ok(Op::If(parse_block(text::trim_end(rest), inside)?, None));
    }
    if word(p, "endif") {
        if !text::trim_start(&p[5..]).is_empty() {
            return Err("garbage after ENDIF".to_owned());
        }
        if nesting == 0 {
            return Err("ENDIF without IF".to_owned());
        }
        return Ok(Op::Endif);
    }
    let (inside, rest) = negations(p);
    let (pattern, value) = match rest.find(text::is_space) {
        Some(i) => (&rest[..i], text::trim_end(text::trim_start(&rest[i..]))),
        None => (rest, ""),
    };
    if pattern.is_empty() {
        return Err("no address pattern".to_owned());
    }
    let block = parse_block(pattern, inside)?;
    if value.is_empty() {
        return Err("no lookup result".to_owned());
    }
    Ok(Op::Match(block, value.to_owned()))
}

impl Table {
    /// Parses table text; `name` is what warnings call the table.
    pub fn parse(name: &str, text: &str) -> Self {
        let mut rules: Vec<Rule> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        for (line, l) in text::logical_lines(name, text) {
            let op = match parse_rule(&l, stack.len()) {
                Ok(op) => op,
                Err(why) => {
                    tracing::warn!("cidr map {name}, line {line}: {why}: skipping this rule");
                    continue;
                }
            };
            let index = rules.len();
            match op {
                Op::If(..) => stack.push(index),
                Op::Endif => {
                    if let Some(i) = stack.pop() {
                        if let Op::If(_, end) = &mut rules[i].op {
                            *end = Some(index);
                        }
                    }
                }
                Op::Match(..) => {}
            }
            rules.push(Rule { line, op });
        }
        for i in stack.into_iter().rev() {
            tracing::warn!(
                "cidr map {name}, line {}: IF has no matching ENDIF",
                rules[i].line
            );
        }
        Self { rules }
    }

    /// The result of the first rule that holds `key`; nothing for a key
    /// that is not an address.
    pub fn lookup(&self, key: &str) -> Option<String> {
        let key = parse_addr(key)?;
        let mut i = 0;
        while i < self.rules.len() {
            let rule = &self.rules[i];
            i += 1;
            match &rule.op {
                Op::Match(b, value) if b.decides(&key) => return Some(value.clone()),
                Op::Match(..) | Op::Endif => {}
                Op::If(b, _) if b.decides(&key) => {}
                Op::If(_, end) => match end {
                    Some(e) => i = e + 1,
                    None => return None,
                },
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::parse("/etc/postfix/cidr", text)
    }

    #[test]
    fn first_block_that_holds_the_address_answers() {
        let t = table(
            "1.2.3.0/24 net\n!1.2.3.4 not4\n[::1] v6one\n[2001:db8::]/32 v6net\n[10.0.0.0/8] ten\n",
        );
        assert_eq!(t.lookup("1.2.3.4").as_deref(), Some("net"));
        assert_eq!(t.lookup("9.9.9.9").as_deref(), Some("not4"));
        assert_eq!(t.lookup("::1").as_deref(), Some("v6one"));
        // A negated IPv4 rule does not match an IPv6 key.
        assert_eq!(t.lookup("2001:db8::5").as_deref(), Some("v6net"));
        assert_eq!(t.lookup("2001:db9::5"), None);
        assert_eq!(t.lookup("foo"), None);
        assert_eq!(t.lookup("1.2.3.4/32"), None);
        assert_eq!(t.lookup("1.2.3"), None);
    }

    #[test]
    fn if_blocks_nest_and_an_open_if_ends_the_table() {
        let t = table(
            "if 10.0.0.0/8\nif !10.1.0.0/16\n0.0.0.0/0 ten-not-ten-one\nendif\n10.1.2.3 ten-one\nendif\n::/0 v6\nif 192.168.0.0/16\n0.0.0.0/0 private\n",
        );
        assert_eq!(t.lookup("10.2.0.1").as_deref(), Some("ten-not-ten-one"));
        assert_eq!(t.lookup("10.1.2.3").as_deref(), Some("ten-one"));
        assert_eq!(t.lookup("::2").as_deref(), Some("v6"));
        assert_eq!(t.lookup("192.168.3.3").as_deref(), Some("private"));
        assert_eq!(t.lookup("8.8.8.8"), None);
    }

    #[test]
    fn bad_rules_are_reported_as_postfix_words_them() {
        let cases = [
            ("1.2.3.4/33 x", "bad mask length in \"1.2.3.4/33\""),
            (
                "1.2.3.4/24 x",
                "non-null host address bits in \"1.2.3.4/24\", perhaps you should use \"1.2.3.0/24\" instead",
            ),
            (
                "2001:db8::1/32 x",
                "non-null host address bits in \"2001:db8::1/32\", perhaps you should use \"2001:db8::/32\" instead",
            ),
            ("1.2.3.x y", "bad address pattern: \"1.2.3.x\""),
            ("[1.2.3.4 a", "missing ']' character after \"[1.2.3.4\""),
            ("[1.2.3.4]x a", "garbage after \"[1.2.3.4]\""),
            ("1.2.3.4/0x m", "bad mask value in \"1.2.3.4/0x\""),
            ("1.2.3.x/8 m", "bad network value in \"1.2.3.x/8\""),
            ("10.0.0.0/8", "no lookup result"),
            ("endif", "ENDIF without IF"),
            ("endif x", "garbage after ENDIF"),
            ("if", "no address pattern"),
        ];
        for (rule, why) in cases {
            assert_eq!(parse_rule(rule, 0).unwrap_err(), why, "{rule}");
        }
        let t = table("1.2.3.4/24 x\n0.0.0.0/0 any\n");
        assert_eq!(t.lookup("1.2.3.4").as_deref(), Some("any"));
    }

    #[test]
    fn zero_length_blocks_hold_their_whole_family() {
        let t = table("0.0.0.0/0 v4\n::/0 v6\n");
        assert_eq!(t.lookup("255.1.2.3").as_deref(), Some("v4"));
        assert_eq!(t.lookup("fe80::1").as_deref(), Some("v6"));
    }
}
