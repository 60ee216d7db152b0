//! Parsing one SMTP command line (without its line end).
//!
//! Errors are the replies Postfix's smtpd gives. Addresses are returned as
//! the client wrote them between `<` and `>` (or bare, as Postfix accepts);
//! interpreting them is the address resolver's job.

use crate::Reply;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        addr: String,
        params: Vec<Param>,
    },
    Rcpt {
        addr: String,
        params: Vec<Param>,
    },
    /// DATA; `arguments`: something followed it, a syntax error that
    /// smtpd reports only after the command-order checks, as Postfix does.
    Data {
        arguments: bool,
    },
    /// BDAT (RFC 3030): the chunk's size and whether it is the last;
    /// `None` when the arguments are malformed (the client is hung up on,
    /// as the chunk's bytes would follow as commands).
    Bdat(Option<(u64, bool)>),
    Rset,
    Noop,
    Quit,
    /// VRFY with its argument as given (echoed in the 252 reply); the
    /// address in it is checked by [`vrfy_address`].
    Vrfy(String),
    /// ETRN with its argument text as given (checked by [`etrn_domain`]
    /// after the command-order checks).
    Etrn(String),
    /// XFORWARD with its arguments (`attribute=value ...`, see
    /// [`crate::xforward`]).
    Xforward(String),
    /// XCLIENT (`verb` `xclient`): known, and no client is authorized to
    /// use it ([`proxy_reply`]).
    Proxy {
        verb: &'static str,
        arguments: bool,
    },
    /// STARTTLS; `arguments`: something followed it (a syntax error).
    StartTls {
        arguments: bool,
    },
    /// AUTH with its arguments (mechanism and optional initial response).
    Auth(String),
    /// A verb we do not know; the reply is 500 5.5.2.
    Unknown(String),
    /// Not SMTP at all (an HTTP request, a message header, a line that does
    /// not start with a letter): Postfix's `smtpd_forbidden_commands`, answered
    /// with 221 and the end of the session. Holds the whole line.
    NonSmtp(String),
}

impl Command {
    /// The name used in the disconnect statistics and reject logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Helo(_) => "helo",
            Self::Ehlo(_) => "ehlo",
            Self::Mail { .. } => "mail",
            Self::Rcpt { .. } => "rcpt",
            Self::Data { .. } => "data",
            Self::Bdat(_) => "bdat",
            Self::Rset => "rset",
            Self::Noop => "noop",
            Self::Quit => "quit",
            Self::Vrfy(_) => "vrfy",
            Self::Etrn(_) => "etrn",
            Self::StartTls { .. } => "starttls",
            Self::Auth(_) => "auth",
            Self::Proxy { verb, .. } => verb,
            Self::Xforward(_) => "xforward",
            Self::Unknown(_) | Self::NonSmtp(_) => "unknown",
        }
    }
}

/// A MAIL or RCPT parameter: `KEY=VALUE` or `KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// Why a line is not a usable command: the verb (for statistics; empty for
/// a blank line, which Postfix does not count as a command) and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub verb: &'static str,
    pub reply: Reply,
}

fn err(verb: &'static str, reply: Reply) -> CommandError {
    CommandError { verb, reply }
}

/// Parses one command line (line end already removed).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    // Postfix with smtputf8_enable (its default): malformed UTF-8 is refused
    // before the command is looked at, never turned into some other address.
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(err(
            "unknown",
            Reply::new(500, "5.5.2", "Error: bad UTF-8 syntax"),
        ));
    };
    let line = line.trim_end_matches([' ', '\t']);
    if line.trim_start_matches([' ', '\t']).is_empty() {
        return Err(err("", Reply::new(500, "5.5.2", "Error: bad syntax")));
    }
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" | "EHLO" => {
            let ehlo = verb.eq_ignore_ascii_case("EHLO");
            let name = if ehlo { "EHLO" } else { "HELO" };
            let vname = if ehlo { "ehlo" } else { "helo" };
            if rest.is_empty() {
                return Err(err(
                    vname,
                    Reply::plain(501, format!("Syntax: {name} hostname")),
                ));
            }
            let host = rest.to_owned();
            Ok(if ehlo {
                Command::Ehlo(host)
            } else {
                Command::Helo(host)
            })
        }
        "MAIL" => {
            let syntax = || {
                err(
                    "mail",
                    Reply::new(501, "5.5.4", "Syntax: MAIL FROM:<address>"),
                )
            };
            let arg = strip_keyword(rest, "FROM:").ok_or_else(syntax)?;
            let (addr, params) = address_and_params(arg).ok_or_else(|| {
                err(
                    "mail",
                    Reply::new(501, "5.1.7", "Bad sender address syntax"),
                )
            })?;
            Ok(Command::Mail { addr, params })
        }
        "RCPT" => {
            let syntax = || {
                err(
                    "rcpt",
                    Reply::new(501, "5.5.4", "Syntax: RCPT TO:<address>"),
                )
            };
            let arg = strip_keyword(rest, "TO:").ok_or_else(syntax)?;
            let (addr, params) = address_and_params(arg).ok_or_else(|| {
                err(
                    "rcpt",
                    Reply::new(501, "5.1.3", "Bad recipient address syntax"),
                )
            })?;
            if addr.is_empty() {
                return Err(err(
                    "rcpt",
                    Reply::new(501, "5.1.3", "Bad recipient address syntax"),
                ));
            }
            Ok(Command::Rcpt { addr, params })
        }
        // Postfix ignores what follows NOOP and QUIT.
        "RSET" if !rest.is_empty() => Err(err("rset", Reply::new(501, "5.5.4", "Syntax: RSET"))),
        "DATA" => Ok(Command::Data {
            arguments: !rest.is_empty(),
        }),
        "BDAT" => {
            let mut args = rest.split_ascii_whitespace();
            let size = args
                .next()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok());
            let last = match args.next() {
                None => Some(false),
                Some(l) if l.eq_ignore_ascii_case("LAST") => Some(true),
                Some(_) => None,
            };
            let chunk = match (size, last, args.next()) {
                (Some(size), Some(last), None) => Some((size, last)),
                _ => None,
            };
            Ok(Command::Bdat(chunk))
        }
        "ETRN" => Ok(Command::Etrn(rest.to_owned())),
        "XCLIENT" => Ok(Command::Proxy {
            verb: "xclient",
            arguments: !rest.is_empty(),
        }),
        "XFORWARD" => Ok(Command::Xforward(rest.to_owned())),
        "RSET" => Ok(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "VRFY" => {
            if rest.is_empty() {
                return Err(err(
                    "vrfy",
                    Reply::new(501, "5.5.4", "Syntax: VRFY address [SMTPUTF8]"),
                ));
            }
            // `VRFY address SMTPUTF8`: the option is not part of the address.
            let text = match rest.rsplit_once([' ', '\t']) {
                Some((head, opt)) if opt.eq_ignore_ascii_case("SMTPUTF8") => head.trim_end(),
                _ => rest,
            };
            Ok(Command::Vrfy(text.to_owned()))
        }
        "STARTTLS" => Ok(Command::StartTls {
            arguments: !rest.is_empty(),
        }),
        "AUTH" => Ok(Command::Auth(rest.to_owned())),
        _ if non_smtp(verb) => Ok(Command::NonSmtp(line.to_owned())),
        _ => Ok(Command::Unknown(verb.to_owned())),
    }
}

/// The address a VRFY argument names (`<>` optional, a missing `>`
/// forgiven, as Postfix's sloppy parse), or Postfix's reply to a bad one.
pub fn vrfy_address(text: &str) -> Result<String, Reply> {
    let inner = text.strip_prefix('<').unwrap_or(text);
    let addr = inner.strip_suffix('>').unwrap_or(inner);
    if addr.is_empty() || !valid_address(addr) {
        return Err(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
    }
    Ok(addr.to_owned())
}

/// The reply to DATA with arguments once the command order is right.
pub fn data_syntax() -> Reply {
    Reply::new(501, "5.5.4", "Syntax: DATA")
}

/// The domain an ETRN argument names (RFC 1985: `@` asks for its
/// subdomains too, `#` names a queue; both are taken as the domain), or
/// Postfix's reply to a malformed one. Replies to ETRN carry no enhanced
/// status code, as Postfix's.
pub fn etrn_domain(arg: &str) -> Result<&str, Reply> {
    let mut words = arg.split_whitespace();
    let (Some(word), None) = (words.next(), words.next()) else {
        return Err(Reply::plain(500, "Syntax: ETRN domain"));
    };
    let domain = word.strip_prefix(['@', '#']).unwrap_or(word);
    if valid_literal(domain) || valid_hostname(domain) {
        Ok(domain)
    } else {
        Err(Reply::plain(501, "Error: invalid parameter syntax"))
    }
}

/// The reply to XCLIENT or XFORWARD: refused as Postfix refuses them to a
/// client outside `smtpd_authorized_xclient_hosts` (empty by default).
pub fn proxy_reply(verb: &str, arguments: bool, in_transaction: bool) -> Reply {
    if in_transaction {
        Reply::new(503, "5.5.1", "Error: MAIL transaction in progress")
    } else if !arguments {
        Reply::new(
            501,
            "5.5.4",
            format!("Syntax: {} attribute=value...", verb.to_ascii_uppercase()),
        )
    } else {
        Reply::new(550, "5.7.0", "Error: insufficient authorization")
    }
}

/// The answer to [`Command::NonSmtp`], after which the session ends.
pub fn non_smtp_goodbye() -> Reply {
    Reply::new(221, "2.7.0", "Error: I can break rules, too. Goodbye.")
}

/// Postfix 3.7's `smtpd_forbidden_commands` (`CONNECT GET POST` and lines
/// that do not start with a letter) and its header names (`Subject:`): a
/// web client or a confused one talking to the SMTP port.
fn non_smtp(verb: &str) -> bool {
    ["CONNECT", "GET", "POST"]
        .iter()
        .any(|v| verb.eq_ignore_ascii_case(v))
        || !verb.starts_with(|c: char| c.is_ascii_alphabetic())
        || (verb.len() > 1 && verb.ends_with(':'))
}

/// `FROM:<a>` / `FROM: <a>` with the keyword in any case.
fn strip_keyword<'a>(rest: &'a str, kw: &str) -> Option<&'a str> {
    let head = rest.get(..kw.len())?;
    head.eq_ignore_ascii_case(kw)
        .then(|| rest[kw.len()..].trim_start())
}

/// Splits `<address> PARAM=VALUE ...`; `None` for a malformed address.
fn address_and_params(arg: &str) -> Option<(String, Vec<Param>)> {
    let (addr, rest) = if let Some(inner) = arg.strip_prefix('<') {
        let end = closing_bracket(inner)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        // Postfix accepts a bare address (not RFC 5321 strict).
        match arg.find([' ', '\t']) {
            Some(i) => (&arg[..i], &arg[i..]),
            None => (arg, ""),
        }
    };
    if !valid_address(addr) {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let params = rest
        .split_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Param {
                key: k.to_owned(),
                value: Some(v.to_owned()),
            },
            None => Param {
                key: p.to_owned(),
                value: None,
            },
        })
        .collect();
    Some((addr.to_owned(), params))
}

/// Index of the `>` that closes the address, skipping quoted parts.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// White space and control characters only inside quotes; `<>` and `>`
/// only as delimiters.
fn valid_address(addr: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for c in addr.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '<' | '>' if !quoted => return false,
            c if (c.is_whitespace() || c.is_control()) && !quoted => return false,
            _ => {}
        }
    }
    !quoted && valid_domain_part(addr)
}

/// As Postfix: after the last `@` outside quotes comes a host name or an
/// address literal (`[192.0.2.1]`, `[IPv6:...]`); `user@` and
/// `user@example..org` are bad syntax.
fn valid_domain_part(addr: &str) -> bool {
    let (local, domain) = pfx_address::split(addr);
    if local.len() == addr.len() {
        return true; // no `@`
    }
    if domain.starts_with('[') {
        return valid_literal(domain);
    }
    valid_hostname(domain.strip_suffix('.').unwrap_or(domain))
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn valid_literal(domain: &str) -> bool {
    let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    match literal.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPv6:") => {
            literal[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => literal.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// Labels of letters, digits, `-` and `_` (and UTF-8, for SMTPUTF8), none
/// empty, longer than 63 or with a hyphen at either end; not all digits.
fn valid_hostname(name: &str) -> bool {
    name.len() <= 255
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
        })
        && name.bytes().any(|b| b != b'.' && !b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes()).unwrap()
    }

    fn bad(line: &str) -> String {
        parse_command(line.as_bytes())
            .unwrap_err()
            .reply
            .to_string()
    }

    #[test]
    fn commands_in_any_case_with_arguments() {
        assert_eq!(
            ok("EHLO client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(ok("helo x"), Command::Helo("x".into()));
        assert_eq!(
            ok("MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME"),
            Command::Mail {
                addr: "a@b.c".into(),
                params: vec![
                    Param {
                        key: "SIZE".into(),
                        value: Some("100".into())
                    },
                    Param {
                        key: "BODY".into(),
                        value: Some("8BITMIME".into())
                    }
                ]
            }
        );
        assert_eq!(
            ok("mail from: <>"),
            Command::Mail {
                addr: "".into(),
                params: vec![]
            }
        );
        assert_eq!(
            ok("MAIL FROM:a@b"),
            Command::Mail {
                addr: "a@b".into(),
                params: vec![]
            }
        );
        assert_eq!(
            ok("RCPT TO:<\"user@163.com\"@ywnds.com>"),
            Command::Rcpt {
                addr: "\"user@163.com\"@ywnds.com".into(),
                params: vec![]
            }
        );
        assert_eq!(
            ok("rcpt to:<@ywnds.com:user@163.com>"),
            Command::Rcpt {
                addr: "@ywnds.com:user@163.com".into(),
                params: vec![]
            }
        );
        assert_eq!(ok("DATA"), Command::Data { arguments: false });
        assert_eq!(ok("BDAT 100"), Command::Bdat(Some((100, false))));
        assert_eq!(ok("bdat 0 last"), Command::Bdat(Some((0, true))));
        for bad in ["BDAT", "BDAT -1", "BDAT 1 FIRST", "BDAT 1 LAST x", "BDAT x"] {
            assert_eq!(ok(bad), Command::Bdat(None), "{bad}");
        }
        assert_eq!(ok("etrn ywnds.com"), Command::Etrn("ywnds.com".into()));
        assert_eq!(ok("XFORWARD NAME=x"), Command::Xforward("NAME=x".into()));
        assert_eq!(
            ok("XCLIENT NAME=x"),
            Command::Proxy {
                verb: "xclient",
                arguments: true
            }
        );
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(
            ok("VRFY <postmaster>"),
            Command::Vrfy("<postmaster>".into())
        );
        assert_eq!(ok("VRFY a@b.c SMTPUTF8"), Command::Vrfy("a@b.c".into()));
        assert_eq!(ok("FOO bar"), Command::Unknown("FOO".into()));
    }

    #[test]
    fn malformed_commands_get_postfix_replies() {
        assert_eq!(bad("HELO"), "501 Syntax: HELO hostname");
        assert_eq!(bad("EHLO   "), "501 Syntax: EHLO hostname");
        assert_eq!(
            bad("MAIL TO:<a@b>"),
            "501 5.5.4 Syntax: MAIL FROM:<address>"
        );
        assert_eq!(bad("MAIL"), "501 5.5.4 Syntax: MAIL FROM:<address>");
        assert_eq!(
            bad("MAIL FROM:<a b@b>"),
            "501 5.1.7 Bad sender address syntax"
        );
        assert_eq!(bad("MAIL FROM:<a@b"), "501 5.1.7 Bad sender address syntax");
        assert_eq!(bad("RCPT TO:<>"), "501 5.1.3 Bad recipient address syntax");
        assert_eq!(
            bad("RCPT FROM:<a@b>"),
            "501 5.5.4 Syntax: RCPT TO:<address>"
        );
        assert_eq!(ok("DATA now"), Command::Data { arguments: true });
        assert_eq!(bad(""), "500 5.5.2 Error: bad syntax");
        assert_eq!(bad("   "), "500 5.5.2 Error: bad syntax");
        assert_eq!(parse_command(b" \t").unwrap_err().verb, "");
        assert_eq!(bad("VRFY"), "501 5.5.4 Syntax: VRFY address [SMTPUTF8]");
        for a in [
            "a@",
            "@",
            "a@example..org",
            "a@-example.org",
            "a@[999.2.3.4]",
            "a@1.2.3.4",
        ] {
            assert_eq!(
                bad(&format!("MAIL FROM:<{a}>")),
                "501 5.1.7 Bad sender address syntax",
                "{a}"
            );
            assert_eq!(
                bad(&format!("RCPT TO:<{a}>")),
                "501 5.1.3 Bad recipient address syntax",
                "{a}"
            );
        }
    }

    #[test]
    fn domains_postfix_accepts_pass() {
        for a in [
            "user@example.org",
            "user@example.org.",
            "user@mx_1.example.org",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "\"a@b\"@example.org",
            "postmaster",
            "@ywnds.com:user@163.com",
        ] {
            assert!(
                matches!(ok(&format!("RCPT TO:<{a}>")), Command::Rcpt { .. }),
                "{a}"
            );
        }
    }

    #[test]
    fn non_smtp_lines_and_unoffered_extensions_are_told_apart() {
        for l in [
            "GET / HTTP/1.0",
            "post /",
            "CONNECT 1.2.3.4:25",
            "Subject: hi",
            "X-Foo: bar",
            "123",
            "\u{16}\u{3}",
        ] {
            assert_eq!(ok(l), Command::NonSmtp(l.to_owned()), "{l}");
        }
        assert_eq!(ok("USER bob"), Command::Unknown("USER".into()));
        assert_eq!(
            parse_command(b"MAIL FROM:<a@exa\xe9mple.org>")
                .unwrap_err()
                .reply
                .to_string(),
            "500 5.5.2 Error: bad UTF-8 syntax"
        );
        assert!(matches!(
            ok("MAIL FROM:<a@exa\u{e9}mple.org> SMTPUTF8"),
            Command::Mail { .. }
        ));
        assert_eq!(ok("QUIT now"), Command::Quit);
        assert!(matches!(
            ok("STARTTLS"),
            Command::StartTls { arguments: false }
        ));
        assert!(matches!(ok("AUTH PLAIN AGFhAGI="), Command::Auth(a) if a == "PLAIN AGFhAGI="));
    }

    #[test]
    fn vrfy_addresses_as_postfix_checks_them() {
        assert_eq!(vrfy_address("<postmaster>").as_deref(), Ok("postmaster"));
        assert_eq!(vrfy_address("<a@b.c").as_deref(), Ok("a@b.c"));
        assert_eq!(vrfy_address("a@b.c").as_deref(), Ok("a@b.c"));
        for bad in ["<>", "a@", "a b", "a@example..org", "a@b.c FOO"] {
            assert_eq!(
                vrfy_address(bad).unwrap_err().to_string(),
                "501 5.1.3 Bad recipient address syntax",
                "{bad}"
            );
        }
    }

    #[test]
    fn etrn_arguments_as_postfix_checks_them() {
        assert_eq!(etrn_domain("ywnds.com"), Ok("ywnds.com"));
        assert_eq!(etrn_domain("@ywnds.com"), Ok("ywnds.com"));
        assert_eq!(etrn_domain("#x"), Ok("x"));
        assert_eq!(etrn_domain("[192.0.2.1]"), Ok("[192.0.2.1]"));
        assert_eq!(etrn_domain("[IPv6:2001:db8::1]"), Ok("[IPv6:2001:db8::1]"));
        for bad in ["", "a b"] {
            assert_eq!(
                etrn_domain(bad).unwrap_err().to_string(),
                "500 Syntax: ETRN domain"
            );
        }
        for bad in ["a..b", "-x", "ywnds.com.", "@@x", "[1.2.3]"] {
            assert_eq!(
                etrn_domain(bad).unwrap_err().to_string(),
                "501 Error: invalid parameter syntax",
                "{bad}"
            );
        }
    }

    #[test]
    fn xclient_and_xforward_are_refused_as_postfix_refuses_them() {
        assert_eq!(
            proxy_reply("xclient", true, true).to_string(),
            "503 5.5.1 Error: MAIL transaction in progress"
        );
        assert_eq!(
            proxy_reply("xforward", false, false).to_string(),
            "501 5.5.4 Syntax: XFORWARD attribute=value..."
        );
        assert_eq!(
            proxy_reply("xclient", true, false).to_string(),
            "550 5.7.0 Error: insufficient authorization"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for line in [
            &b"\xff\xfe\x00MAIL FROM:<\xc3>"[..],
            b"",
            b" ",
            b"<",
            b"MAIL FROM:<\"",
            b"RCPT TO:<a\\",
        ] {
            let _ = parse_command(line);
        }
    }
}
