//! XFORWARD, Postfix's extension by which an SMTP client that passes mail
//! through (an after-queue content filter) tells the server whose mail it
//! is: the original client's name, address, port, protocol and HELO name,
//! its queue ID, and whether it was local. smtpd takes it from authorized
//! clients (`smtpd_authorized_xforward_hosts`) and logs and records the
//! forwarded values in place of its own; the smtp client sends it when the
//! server offers it and `smtp_send_xforward_command = yes`.

use crate::dsn::{xtext_decode, xtext_encode};
use crate::Reply;

/// The keyword of the EHLO line smtpd offers, with the attributes it takes.
pub const EHLO_LINE: &str = "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT";

/// An attribute's value when the client does not have it.
pub const UNAVAILABLE: &str = "[UNAVAILABLE]";

/// Characters replaced with `?` in forwarded values (Postfix's
/// NEUTER_CHARACTERS): they could break log lines and headers.
const NEUTER: &[char] = &[' ', '<', '>', '(', ')', '\\', '"', ';', '@'];

/// What an authorized client forwarded since the last transaction ended;
/// each `None` attribute was not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub name: Option<String>,
    pub addr: Option<String>,
    pub port: Option<String>,
    pub proto: Option<String>,
    pub helo: Option<String>,
    /// The queue ID on the previous hop.
    pub ident: Option<String>,
    /// `local` or `remote` (a rewrite context), from SOURCE.
    pub source: Option<&'static str>,
}

/// The original client as smtpd logs and records it: forwarded values
/// where an XFORWARD gave any client attribute, `unknown` for those it did
/// not give (as Postfix presets them), else the connection's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub addr: String,
    pub port: String,
    pub proto: String,
    pub helo: Option<String>,
}

impl Client {
    /// `name[addr]`, or the name alone when the address is unknown.
    pub fn namaddr(&self) -> String {
        if self.addr == "unknown" {
            self.name.clone()
        } else {
            format!("{}[{}]", self.name, self.addr)
        }
    }
}

impl Forwarded {
    /// Whether any client attribute (not IDENT or SOURCE) was forwarded.
    pub fn has_client(&self) -> bool {
        self.name.is_some()
            || self.addr.is_some()
            || self.port.is_some()
            || self.proto.is_some()
            || self.helo.is_some()
    }

    /// The forwarded client, when [`Self::has_client`].
    pub fn client(&self) -> Option<Client> {
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        self.has_client().then(|| Client {
            name: or_unknown(&self.name),
            addr: or_unknown(&self.addr),
            port: or_unknown(&self.port),
            proto: or_unknown(&self.proto),
            helo: self.helo.clone().filter(|h| !h.is_empty()),
        })
    }

    /// Takes one XFORWARD command's `attribute=value` arguments, all or
    /// none; the error is the reply, in Postfix's words.
    pub fn apply(&mut self, args: &str) -> Result<(), Reply> {
        let mut next = self.clone();
        for arg in args.split_ascii_whitespace() {
            let syntax =
                |what: &str, v: &str| Reply::new(501, "5.5.4", format!("Bad {what} syntax: {v}"));
            let (name, raw) = match arg.split_once('=') {
                Some((n, v)) if !v.is_empty() => (n, v),
                _ => return Err(Reply::new(501, "5.5.4", "Error: attribute=value expected")),
            };
            if raw.len() > 255 {
                return Err(Reply::new(501, "5.5.4", "Error: attribute value too long"));
            }
            // Values are xtext; clients before Postfix 2.3 sent them plain.
            let value = printable(&xtext_decode(raw).unwrap_or_else(|| raw.to_owned()));
            let given = value != UNAVAILABLE;
            match name.to_ascii_uppercase().as_str() {
                "NAME" => {
                    let v = neuter(&value);
                    if given && !crate::valid_hostname(&v) {
                        return Err(syntax("NAME", &v));
                    }
                    next.name = Some(if given { v } else { "unknown".into() });
                }
                "ADDR" => {
                    let v = neuter(&value);
                    next.addr = Some(if given {
                        address(&v).ok_or_else(|| syntax("ADDR", &v))?
                    } else {
                        "unknown".into()
                    });
                }
                "PORT" => {
                    if given && (value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit())) {
                        return Err(syntax("PORT", &value));
                    }
                    next.port = Some(if given { value } else { "unknown".into() });
                }
                "HELO" => next.helo = Some(if given { neuter(&value) } else { String::new() }),
                "PROTO" => {
                    if given && value.len() > 64 {
                        return Err(syntax("PROTO", &value));
                    }
                    next.proto = Some(if given {
                        neuter(&value)
                    } else {
                        "unknown".into()
                    });
                }
                "IDENT" => next.ident = given.then(|| neuter(&value)),
                "SOURCE" => {
                    next.source = Some(match value.to_ascii_uppercase().as_str() {
                        "LOCAL" | "[UNAVAILABLE]" => "local",
                        "REMOTE" => "remote",
                        _ => return Err(syntax("SOURCE", &value)),
                    })
                }
                _ => {
                    return Err(Reply::new(
                        501,
                        "5.5.4",
                        format!("Bad XFORWARD attribute name: {name}"),
                    ))
                }
            }
        }
        *self = next;
        Ok(())
    }
}

/// Postfix's printable(): what is not printable ASCII becomes `?`.
fn printable(v: &str) -> String {
    v.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

fn neuter(v: &str) -> String {
    v.chars()
        .map(|c| if NEUTER.contains(&c) { '?' } else { c })
        .collect()
}

/// An address as Postfix's normalize_mailhost_addr takes it: IPv4, or
/// IPv6 with or without its `IPv6:` prefix; the normal form.
fn address(v: &str) -> Option<String> {
    let bare = match v.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPv6:") => &v[5..],
        _ => v,
    };
    let ip: std::net::IpAddr = bare.parse().ok()?;
    if v.len() != bare.len() && !ip.is_ipv6() {
        return None;
    }
    Some(ip.to_string())
}

/// The XFORWARD commands an smtp client sends before MAIL FROM, as
/// Postfix's: `NAME ADDR PORT` in one, `PROTO HELO IDENT SOURCE` in the
/// other, each attribute only when the server named it in its EHLO line
/// and the queue file has it (`unknown` is not sent); no command without
/// attributes.
pub fn commands(
    offered: &[String],
    have: &Client,
    ident: Option<&str>,
    source: Option<&str>,
) -> Vec<String> {
    let known = |v: &str| !v.is_empty() && !v.eq_ignore_ascii_case("unknown");
    let offers = |a: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(a));
    let mut out = Vec::new();
    let mut add = |pairs: Vec<(&str, Option<&str>)>| {
        let attrs: Vec<String> = pairs
            .into_iter()
            .filter_map(|(a, v)| Some(format!(" {a}={}", xtext_encode(v?))).filter(|_| offers(a)))
            .collect();
        if !attrs.is_empty() {
            out.push(format!("XFORWARD{}", attrs.concat()));
        }
    };
    let k = |v: &str| -> Option<String> { known(v).then(|| v.to_owned()) };
    let (name, addr, port, proto) = (k(&have.name), k(&have.addr), k(&have.port), k(&have.proto));
    add(vec![
        ("NAME", name.as_deref()),
        ("ADDR", addr.as_deref()),
        ("PORT", port.as_deref()),
    ]);
    let source = source.map(|s| if s == "local" { "LOCAL" } else { "REMOTE" });
    add(vec![
        ("PROTO", proto.as_deref()),
        ("HELO", have.helo.as_deref()),
        ("IDENT", ident),
        ("SOURCE", source),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(args: &str) -> Result<Forwarded, String> {
        let mut f = Forwarded::default();
        f.apply(args).map(|()| f).map_err(|r| r.to_string())
    }

    #[test]
    fn attributes_are_taken_as_postfix_takes_them() {
        let f = applied("NAME=mail.example.com ADDR=192.0.2.1 PORT=4711 PROTO=ESMTP HELO=mail.example.com IDENT=4Xyz1 SOURCE=REMOTE").unwrap();
        let c = f.client().unwrap();
        assert_eq!(c.namaddr(), "mail.example.com[192.0.2.1]");
        assert_eq!((c.port.as_str(), c.proto.as_str()), ("4711", "ESMTP"));
        assert_eq!(
            (f.ident.as_deref(), f.source),
            (Some("4Xyz1"), Some("remote"))
        );
        // xtext, IPv6 with its prefix, unavailable values.
        let f = applied("helo=a+20b ADDR=IPv6:2001:DB8::1 NAME=[UNAVAILABLE]").unwrap();
        let c = f.client().unwrap();
        assert_eq!(c.namaddr(), "unknown[2001:db8::1]");
        assert_eq!(c.helo.as_deref(), Some("a?b"));
        // Only IDENT: no client attribute is forwarded.
        let f = applied("IDENT=ABC").unwrap();
        assert_eq!(f.client(), None);
        let f = applied("ADDR=[UNAVAILABLE]").unwrap();
        assert_eq!(f.client().unwrap().namaddr(), "unknown");
    }

    #[test]
    fn bad_attributes_are_refused_and_change_nothing() {
        for (args, reply) in [
            ("NAME", "501 5.5.4 Error: attribute=value expected"),
            ("NAME=", "501 5.5.4 Error: attribute=value expected"),
            ("NAME=-bad-", "501 5.5.4 Bad NAME syntax: -bad-"),
            ("ADDR=999.1.1.1", "501 5.5.4 Bad ADDR syntax: 999.1.1.1"),
            (
                "ADDR=IPv6:192.0.2.1",
                "501 5.5.4 Bad ADDR syntax: IPv6:192.0.2.1",
            ),
            ("PORT=123456", "501 5.5.4 Bad PORT syntax: 123456"),
            ("SOURCE=ELSEWHERE", "501 5.5.4 Bad SOURCE syntax: ELSEWHERE"),
            ("COLOR=red", "501 5.5.4 Bad XFORWARD attribute name: COLOR"),
        ] {
            let mut f = Forwarded::default();
            let got = f.apply(&format!("IDENT=X {args}")).unwrap_err().to_string();
            assert_eq!(got, reply, "{args}");
            assert_eq!(f, Forwarded::default(), "{args}");
        }
        let long = format!("HELO={}", "a".repeat(256));
        assert_eq!(
            applied(&long).unwrap_err(),
            "501 5.5.4 Error: attribute value too long"
        );
    }

    #[test]
    fn the_client_sends_what_it_has_and_the_server_takes() {
        let have = Client {
            name: "mail.example.com".into(),
            addr: "192.0.2.1".into(),
            port: "unknown".into(),
            proto: "ESMTP".into(),
            helo: Some("helo name".into()),
        };
        let all: Vec<String> = EHLO_LINE.split(' ').skip(1).map(String::from).collect();
        assert_eq!(
            commands(&all, &have, Some("4Xyz1"), Some("remote")),
            [
                "XFORWARD NAME=mail.example.com ADDR=192.0.2.1",
                "XFORWARD PROTO=ESMTP HELO=helo+20name IDENT=4Xyz1 SOURCE=REMOTE"
            ]
        );
        let some = vec!["IDENT".to_owned()];
        assert_eq!(
            commands(&some, &have, Some("4Xyz1"), None),
            ["XFORWARD IDENT=4Xyz1"]
        );
        assert!(commands(&[], &have, None, None).is_empty());
    }
}
