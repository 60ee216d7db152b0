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
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    /// A verb we do not know; the reply is 500 5.5.2.
    Unknown(String),
}

impl Command {
    /// The name used in the disconnect statistics and reject logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Helo(_) => "helo",
            Self::Ehlo(_) => "ehlo",
            Self::Mail { .. } => "mail",
            Self::Rcpt { .. } => "rcpt",
            Self::Data => "data",
            Self::Rset => "rset",
            Self::Noop => "noop",
            Self::Quit => "quit",
            Self::Vrfy(_) => "vrfy",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// A MAIL or RCPT parameter: `KEY=VALUE` or `KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// Why a line is not a usable command: the verb (for statistics) and the reply.
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
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches([' ', '\t']);
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
        "DATA" | "RSET" | "NOOP" | "QUIT"
            if !rest.is_empty() && !verb.eq_ignore_ascii_case("NOOP") =>
        {
            let v = verb.to_ascii_uppercase();
            let vname = match v.as_str() {
                "DATA" => "data",
                "RSET" => "rset",
                _ => "quit",
            };
            Err(err(vname, Reply::new(501, "5.5.4", format!("Syntax: {v}"))))
        }
        "DATA" => Ok(Command::Data),
        "RSET" => Ok(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "VRFY" => {
            if rest.is_empty() {
                return Err(err(
                    "vrfy",
                    Reply::new(501, "5.5.4", "Syntax: VRFY address"),
                ));
            }
            Ok(Command::Vrfy(
                rest.trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            ))
        }
        _ => Ok(Command::Unknown(verb.to_owned())),
    }
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
    !quoted
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
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(ok("VRFY <postmaster>"), Command::Vrfy("postmaster".into()));
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
        assert_eq!(bad("DATA now"), "501 5.5.4 Syntax: DATA");
        assert_eq!(bad("VRFY"), "501 5.5.4 Syntax: VRFY address");
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
