//! The milter protocol's packets, without I/O: a 4-byte big-endian length
//! (the command byte included), a command byte, its data. What the MTA
//! sends ([`Command`]) and what a milter answers ([`Response`]), as
//! Sendmail's libmilter and Postfix's milter8 lay them out.

/// Largest packet a milter may send: Postfix's limit, with room for a
/// body replacement chunk of 1 MB (SMFIP_MDS_1M).
pub const MAX_PACKET: usize = 1024 * 1024 + 64;

/// Body chunk size (MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65535;

/// Actions a milter may take at end of message (SMFIF_*).
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
}

/// Protocol steps a milter may leave out or not answer (SMFIP_*).
pub mod step {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
}

/// The address family of a connect event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Inet6,
    Unix,
    /// No address known (`U`).
    Unknown,
}

/// A packet from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    /// Macros for the command `code` that follows.
    Macros {
        code: u8,
        pairs: Vec<(String, String)>,
    },
    Connect {
        name: String,
        family: Family,
        port: u16,
        addr: String,
    },
    Helo(String),
    /// `<sender>` and its ESMTP parameters.
    Mail(Vec<String>),
    Rcpt(Vec<String>),
    Data,
    Header {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    EndOfHeaders,
    Body(Vec<u8>),
    EndOfMessage,
    Abort,
    Quit,
    /// Quit this message's connection state, keep the connection (v6).
    QuitNewConnection,
    Unknown(String),
}

impl Command {
    /// The command byte.
    pub fn code(&self) -> u8 {
        match self {
            Self::OptNeg { .. } => b'O',
            Self::Macros { .. } => b'D',
            Self::Connect { .. } => b'C',
            Self::Helo(_) => b'H',
            Self::Mail(_) => b'M',
            Self::Rcpt(_) => b'R',
            Self::Data => b'T',
            Self::Header { .. } => b'L',
            Self::EndOfHeaders => b'N',
            Self::Body(_) => b'B',
            Self::EndOfMessage => b'E',
            Self::Abort => b'A',
            Self::Quit => b'Q',
            Self::QuitNewConnection => b'K',
            Self::Unknown(_) => b'U',
        }
    }

    /// The whole packet, length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let cstr = |d: &mut Vec<u8>, s: &[u8]| {
            d.extend_from_slice(s);
            d.push(0);
        };
        match self {
            Self::OptNeg {
                version,
                actions,
                steps,
            } => {
                for n in [version, actions, steps] {
                    data.extend_from_slice(&n.to_be_bytes());
                }
            }
            Self::Macros { code, pairs } => {
                data.push(*code);
                for (k, v) in pairs {
                    cstr(&mut data, k.as_bytes());
                    cstr(&mut data, v.as_bytes());
                }
            }
            Self::Connect {
                name,
                family,
                port,
                addr,
            } => {
                cstr(&mut data, name.as_bytes());
                data.push(match family {
                    Family::Inet => b'4',
                    Family::Inet6 => b'6',
                    Family::Unix => b'L',
                    Family::Unknown => b'U',
                });
                if *family != Family::Unknown {
                    data.extend_from_slice(&port.to_be_bytes());
                    cstr(&mut data, addr.as_bytes());
                }
            }
            Self::Helo(s) | Self::Unknown(s) => cstr(&mut data, s.as_bytes()),
            Self::Mail(args) | Self::Rcpt(args) => {
                for a in args {
                    cstr(&mut data, a.as_bytes());
                }
            }
            Self::Header { name, value } => {
                cstr(&mut data, name);
                cstr(&mut data, value);
            }
            Self::Body(b) => data.extend_from_slice(b),
            Self::Data
            | Self::EndOfHeaders
            | Self::EndOfMessage
            | Self::Abort
            | Self::Quit
            | Self::QuitNewConnection => {}
        }
        let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(data.len() + 5);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(self.code());
        out.extend_from_slice(&data);
        out
    }
}

/// A packet from a milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The milter's side of the negotiation, and (v6) the macros it wants
    /// per stage: (stage index, space-separated names).
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
        macros: Vec<(u32, String)>,
    },
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// `xxx x.x.x text` as the milter wants it sent.
    ReplyCode(String),
    Quarantine(String),
    Progress,
    Skip,
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChangeFrom {
        sender: String,
        args: Option<String>,
    },
    ReplaceBody(Vec<u8>),
    /// The milter ends the connection (SMFIR_CONN_FAIL, SMFIR_SHUTDOWN).
    Shutdown,
}

/// Why a milter's packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The NUL-terminated strings of `data`; the last must be terminated.
fn strings(data: &[u8], what: &str) -> Result<Vec<String>, Malformed> {
    if data.last() != Some(&0) {
        return Err(Malformed(format!("{what}: missing null terminator")));
    }
    Ok(data[..data.len() - 1]
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn u32_at(data: &[u8], at: usize, what: &str) -> Result<u32, Malformed> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Malformed(format!("{what}: packet too short")))
}

/// Exactly `n` strings.
fn exactly(data: &[u8], n: usize, what: &str) -> Result<Vec<String>, Malformed> {
    let v = strings(data, what)?;
    if v.len() != n {
        return Err(Malformed(format!(
            "{what}: expected {n} strings, got {}",
            v.len()
        )));
    }
    Ok(v)
}

impl Response {
    /// A packet's command byte and data (its length already taken off).
    pub fn decode(code: u8, data: &[u8]) -> Result<Self, Malformed> {
        Ok(match code {
            b'O' => {
                let version = u32_at(data, 0, "option negotiation")?;
                let actions = u32_at(data, 4, "option negotiation")?;
                let steps = u32_at(data, 8, "option negotiation")?;
                let mut macros = Vec::new();
                let mut rest = &data[12..];
                while rest.len() >= 4 {
                    let stage = u32_at(rest, 0, "macro list")?;
                    let end = rest[4..]
                        .iter()
                        .position(|b| *b == 0)
                        .ok_or_else(|| Malformed("macro list: missing null terminator".into()))?;
                    let list = String::from_utf8_lossy(&rest[4..4 + end]).into_owned();
                    macros.push((stage, list));
                    rest = &rest[4 + end + 1..];
                }
                Self::OptNeg {
                    version,
                    actions,
                    steps,
                    macros,
                }
            }
            b'a' => Self::Accept,
            b'c' => Self::Continue,
            b'd' => Self::Discard,
            b'r' => Self::Reject,
            b't' => Self::Tempfail,
            b'p' => Self::Progress,
            b's' => Self::Skip,
            b'y' => Self::ReplyCode(exactly(data, 1, "reply code")?.remove(0)),
            b'q' => Self::Quarantine(exactly(data, 1, "quarantine")?.remove(0)),
            b'h' => {
                let mut v = exactly(data, 2, "add header")?;
                let value = v.pop().unwrap_or_default();
                Self::AddHeader {
                    name: v.pop().unwrap_or_default(),
                    value,
                }
            }
            b'i' | b'm' => {
                let index = u32_at(data, 0, "header index")?;
                let mut v = exactly(&data[4..], 2, "header change")?;
                let value = v.pop().unwrap_or_default();
                let name = v.pop().unwrap_or_default();
                if code == b'i' {
                    Self::InsertHeader { index, name, value }
                } else {
                    Self::ChangeHeader { index, name, value }
                }
            }
            b'+' => Self::AddRcpt {
                rcpt: exactly(data, 1, "add recipient")?.remove(0),
                args: None,
            },
            b'2' => {
                let mut v = strings(data, "add recipient")?;
                if v.is_empty() || v.len() > 2 {
                    return Err(Malformed("add recipient: bad arguments".into()));
                }
                let args = (v.len() == 2).then(|| v.pop().unwrap_or_default());
                Self::AddRcpt {
                    rcpt: v.remove(0),
                    args,
                }
            }
            b'-' => Self::DelRcpt(exactly(data, 1, "delete recipient")?.remove(0)),
            b'e' => {
                let mut v = strings(data, "change sender")?;
                if v.is_empty() || v.len() > 2 {
                    return Err(Malformed("change sender: bad arguments".into()));
                }
                let args = (v.len() == 2).then(|| v.pop().unwrap_or_default());
                Self::ChangeFrom {
                    sender: v.remove(0),
                    args,
                }
            }
            b'b' => Self::ReplaceBody(data.to_vec()),
            b'f' | b'4' => Self::Shutdown,
            other => {
                return Err(Malformed(format!(
                    "unknown response code '{}'",
                    char::from(other)
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_laid_out_as_libmilter_reads_them() {
        let c = Command::Connect {
            name: "mail.example".into(),
            family: Family::Inet,
            port: 25,
            addr: "127.0.0.1".into(),
        };
        assert_eq!(
            c.encode(),
            b"\0\0\0\x1bCmail.example\x004\x00\x19127.0.0.1\0".to_vec()
        );
        let m = Command::Macros {
            code: b'M',
            pairs: vec![("i".into(), "ABC".into())],
        };
        assert_eq!(m.encode(), b"\0\0\0\x08DMi\0ABC\0".to_vec());
        assert_eq!(Command::EndOfMessage.encode(), b"\0\0\0\x01E".to_vec());
        let o = Command::OptNeg {
            version: 6,
            actions: 0x1ff,
            steps: 0x1fffff,
        };
        assert_eq!(
            o.encode(),
            b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff".to_vec()
        );
        let u = Command::Connect {
            name: "localhost".into(),
            family: Family::Unknown,
            port: 0,
            addr: String::new(),
        };
        assert_eq!(u.encode(), b"\0\0\0\x0cClocalhost\0U".to_vec());
    }

    #[test]
    fn responses_and_their_mistakes() {
        assert_eq!(
            Response::decode(b'y', b"550 5.7.1 go away\0"),
            Ok(Response::ReplyCode("550 5.7.1 go away".into()))
        );
        assert_eq!(
            Response::decode(b'm', b"\0\0\0\x02Subject\0new\0"),
            Ok(Response::ChangeHeader {
                index: 2,
                name: "Subject".into(),
                value: "new".into()
            })
        );
        assert_eq!(
            Response::decode(b'2', b"<a@b>\0NOTIFY=NEVER\0"),
            Ok(Response::AddRcpt {
                rcpt: "<a@b>".into(),
                args: Some("NOTIFY=NEVER".into())
            })
        );
        let neg = Response::decode(
            b'O',
            b"\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x01{auth_authen} j\0\0\0\0\x05i\0",
        )
        .unwrap();
        assert_eq!(
            neg,
            Response::OptNeg {
                version: 6,
                actions: 1,
                steps: 0,
                macros: vec![(1, "{auth_authen} j".into()), (5, "i".into())]
            }
        );
        assert!(Response::decode(b'h', b"X-A\0").is_err());
        assert!(Response::decode(b'y', b"550 no nul").is_err());
        assert!(Response::decode(b'i', b"\0\0").is_err());
        assert!(Response::decode(b'Z', b"").is_err());
        assert!(Response::decode(b'O', b"\0\0").is_err());
    }
}
