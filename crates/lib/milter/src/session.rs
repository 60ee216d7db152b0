//! One SMTP connection's conversation with each configured milter, as
//! Postfix's milter8 holds it: connected and negotiated in order at the
//! client's connect, each event sent to every milter still taking part
//! (the first that objects has the last word), the message content and
//! end of message with the edits each milter asks for, and a milter that
//! cannot be talked to replaced by its `default_action`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::warn;

use crate::config::{Config, DefaultAction, Endpoint, MacroLists, Milter};
use crate::edit::{bare_address, ContentEdit, EnvelopeEdit, Header, Message};
use crate::wire::{self, step, Command, Family, Response};

/// What the milters say about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No objection.
    Continue,
    /// This SMTP reply (`550 5.7.1 Command rejected`).
    Reply(String),
    Discard,
    /// Quarantine: into the hold queue.
    Hold,
    /// The milter closed the session: `421 4.7.0 Server closing connection`.
    Shutdown,
}

impl Verdict {
    pub fn is_continue(&self) -> bool {
        *self == Self::Continue
    }
}

/// The client, for the connect event.
pub struct Client<'a> {
    /// Its name, `unknown` when it has none.
    pub name: &'a str,
    pub addr: &'a str,
    pub port: u16,
    pub family: Family,
}

/// The values of the macros (names without braces: `j`, `daemon_name`).
pub type Macros<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

const TEMPFAIL: &str = "451 4.7.1 Service unavailable - try again later";
const REJECT: &str = "550 5.7.1 Command rejected";
const CONF_PROBLEM: &str = "451 4.3.5 Server configuration problem - try again later";

/// The events, with their packet code, the step flag that lets a milter
/// leave them out and the one that says it will not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Unknown,
    Header,
    EndOfHeaders,
    Body,
    EndOfMessage,
}

impl Event {
    fn code(self) -> u8 {
        match self {
            Self::Connect => b'C',
            Self::Helo => b'H',
            Self::Mail => b'M',
            Self::Rcpt => b'R',
            Self::Data => b'T',
            Self::Unknown => b'U',
            Self::Header => b'L',
            Self::EndOfHeaders => b'N',
            Self::Body => b'B',
            Self::EndOfMessage => b'E',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Connect => "SMFIC_CONNECT",
            Self::Helo => "SMFIC_HELO",
            Self::Mail => "SMFIC_MAIL",
            Self::Rcpt => "SMFIC_RCPT",
            Self::Data => "SMFIC_DATA",
            Self::Unknown => "SMFIC_UNKNOWN",
            Self::Header => "SMFIC_HEADER",
            Self::EndOfHeaders => "SMFIC_EOH",
            Self::Body => "SMFIC_BODY",
            Self::EndOfMessage => "SMFIC_BODYEOB",
        }
    }

    /// (leave out, no reply).
    fn flags(self) -> (u32, u32) {
        match self {
            Self::Connect => (step::NOCONNECT, step::NR_CONN),
            Self::Helo => (step::NOHELO, step::NR_HELO),
            Self::Mail => (step::NOMAIL, step::NR_MAIL),
            Self::Rcpt => (step::NORCPT, step::NR_RCPT),
            Self::Data => (step::NODATA, step::NR_DATA),
            Self::Unknown => (step::NOUNKNOWN, step::NR_UNKN),
            Self::Header => (step::NOHDRS, step::NR_HDR),
            Self::EndOfHeaders => (step::NOEOH, step::NR_EOH),
            Self::Body => (step::NOBODY, step::NR_BODY),
            Self::EndOfMessage => (0, 0),
        }
    }

    /// The macro class a milter may ask for in negotiation (SMFIM_*).
    fn class(self) -> usize {
        match self {
            Self::Connect => 0,
            Self::Helo => 1,
            Self::Mail => 2,
            Self::Rcpt => 3,
            Self::Data => 4,
            Self::Body | Self::EndOfMessage => 5,
            Self::Header | Self::EndOfHeaders => 6,
            Self::Unknown => 7,
        }
    }

    /// Before the message content: a milter's ACCEPT here ends its
    /// part in the whole connection.
    fn per_connection(self) -> bool {
        matches!(self, Self::Connect | Self::Helo)
    }
}

/// Every event a milter may be spared.
const NOSEND: u32 = step::NOCONNECT
    | step::NOHELO
    | step::NOMAIL
    | step::NORCPT
    | step::NOBODY
    | step::NOHDRS
    | step::NOEOH
    | step::NOUNKNOWN
    | step::NODATA;

/// The steps offered for a protocol version.
fn offered(version: u32) -> u32 {
    match version {
        2 => 0x7f,
        3 => 0x17f,
        4 => 0x37f,
        _ => 0x1f_ffff,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Taking part.
    Active,
    /// Said ACCEPT: nothing more about this message.
    AcceptMessage,
    /// Out of the conversation; its lasting answer, if any, stands.
    Done,
}

/// One milter's side of the session.
struct Conn {
    m: Milter,
    io: Option<Box<dyn Io>>,
    state: State,
    /// The milter's steps (what it leaves out, does not answer).
    steps: u32,
    /// Events this protocol version cannot carry.
    not_sent: u32,
    /// Its own macro lists, by class (negotiated, version 6).
    own_macros: [Option<Vec<String>>; 8],
    /// SMFIR_SKIP: the event whose repeats are not sent.
    skip: Option<Event>,
    /// SMFIR_QUARANTINE in this transaction: its message goes on hold.
    quarantined: bool,
    /// An answer that stands for every later event (a rejected connect,
    /// a failure, a quarantine).
    lasting: Option<Verdict>,
}

/// What went wrong talking to a milter.
enum Trouble {
    /// The connection, a timeout, the protocol: `default_action` applies.
    Comm(String),
    /// A request that makes no sense (a malformed reply code).
    Conf(String),
}

impl Conn {
    fn lead_space(&self) -> bool {
        self.steps & step::HDR_LEADSPC != 0
    }

    /// Shuts the connection and puts `default_action` in its place.
    fn fail(&mut self, t: Trouble) -> Verdict {
        self.io = None;
        self.state = State::Done;
        let v = match t {
            Trouble::Comm(why) => {
                if why.starts_with("connect to Milter service") {
                    warn!("{why}");
                } else {
                    warn!("milter {}: {why}", self.m.name);
                }
                match self.m.default_action {
                    DefaultAction::Accept => Verdict::Continue,
                    DefaultAction::Tempfail => Verdict::Reply(TEMPFAIL.into()),
                    DefaultAction::Reject => Verdict::Reply("550 5.5.0 Service unavailable".into()),
                    DefaultAction::Quarantine => Verdict::Hold,
                }
            }
            Trouble::Conf(why) => {
                warn!("milter {}: {why}", self.m.name);
                match self.m.default_action {
                    DefaultAction::Accept => Verdict::Continue,
                    DefaultAction::Quarantine => Verdict::Hold,
                    _ => Verdict::Reply(CONF_PROBLEM.into()),
                }
            }
        };
        self.lasting = Some(v.clone()).filter(|v| !v.is_continue());
        v
    }

    async fn write(&mut self, cmd: &Command, timeout: Duration) -> Result<(), Trouble> {
        let io = self
            .io
            .as_mut()
            .ok_or_else(|| Trouble::Comm("not connected".into()))?;
        let bytes = cmd.encode();
        match tokio::time::timeout(timeout, io.write_all(&bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Trouble::Comm(format!("error writing command: {e}"))),
            Err(_) => Err(Trouble::Comm(
                "error writing command: Connection timed out".into(),
            )),
        }
    }

    async fn read(&mut self, timeout: Duration, after: &str) -> Result<Response, Trouble> {
        let io = self
            .io
            .as_mut()
            .ok_or_else(|| Trouble::Comm("not connected".into()))?;
        let packet = async {
            let mut len = [0u8; 4];
            io.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if !(1..=wire::MAX_PACKET).contains(&len) {
                return Err(std::io::Error::other(format!("bad packet length: {len}")));
            }
            let mut data = vec![0u8; len];
            io.read_exact(&mut data).await?;
            Ok(data)
        };
        let data = match tokio::time::timeout(timeout, packet).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                return Err(Trouble::Comm(format!(
                    "can't read {after} reply packet header: {e}"
                )))
            }
            Err(_) => {
                return Err(Trouble::Comm(format!(
                    "can't read {after} reply packet header: Connection timed out"
                )))
            }
        };
        Response::decode(data[0], &data[1..]).map_err(|e| Trouble::Comm(e.0))
    }

    /// Connects and negotiates.
    async fn open(&mut self) -> Result<(), Trouble> {
        let connect = async {
            let io: Box<dyn Io> = match &self.m.endpoint {
                Endpoint::Inet { host, port } => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(io)
        };
        let refused =
            |e: String| Trouble::Comm(format!("connect to Milter service {}: {e}", self.m.name));
        let io = match tokio::time::timeout(self.m.connect_timeout, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(refused(describe(&e))),
            Err(_) => return Err(refused("Connection timed out".into())),
        };
        self.io = Some(io);
        let mut offer = offered(self.m.version);
        if self.m.no_header_reply {
            offer |= step::NR_HDR;
        }
        let t = self.m.command_timeout;
        self.write(
            &Command::OptNeg {
                version: self.m.version,
                actions: 0x1ff,
                steps: offer,
            },
            t,
        )
        .await?;
        let Response::OptNeg {
            version,
            actions,
            steps,
            macros,
        } = self.read(t, "SMFIC_OPTNEG").await?
        else {
            return Err(Trouble::Comm(
                "unexpected reply in initial handshake".into(),
            ));
        };
        if version > self.m.version {
            return Err(Trouble::Comm(format!(
                "protocol version {version} conflict with MTA protocol version {}",
                self.m.version
            )));
        }
        if actions & 0x1ff != actions {
            return Err(Trouble::Comm(format!(
                "request mask 0x{actions:x} conflict with MTA request mask 0x1ff"
            )));
        }
        self.steps = steps;
        self.not_sent = NOSEND & !offer;
        if version < self.m.version && version >= 2 {
            let v = [6, 4, 3, 2]
                .into_iter()
                .find(|v| *v <= version)
                .unwrap_or(2);
            self.not_sent |= NOSEND & !offered(v);
        }
        for (class, list) in macros {
            match self.own_macros.get_mut(class as usize) {
                Some(slot) if class < 7 && !list.trim().is_empty() => {
                    *slot = Some(list.split_whitespace().map(str::to_owned).collect());
                }
                Some(_) if class < 7 => {}
                _ => warn!(
                    "milter {}: ignoring unknown macro type {class}",
                    self.m.name
                ),
            }
        }
        Ok(())
    }

    /// The macro packet for `event`.
    fn macros(&self, event: Event, lists: &MacroLists, values: Macros<'_>) -> Command {
        let global = match event {
            Event::Connect => &lists.connect,
            Event::Helo => &lists.helo,
            Event::Mail => &lists.mail,
            Event::Rcpt => &lists.rcpt,
            Event::Data => &lists.data,
            Event::Unknown => &lists.unknown,
            Event::Header | Event::EndOfHeaders => &lists.end_of_header,
            Event::Body | Event::EndOfMessage => &lists.end_of_data,
        };
        let names = self.own_macros[event.class()].as_ref().unwrap_or(global);
        let pairs = names
            .iter()
            .filter_map(|n| {
                let key = n.trim_start_matches('{').trim_end_matches('}');
                values(key).map(|v| (n.clone(), v))
            })
            .collect();
        Command::Macros {
            code: event.code(),
            pairs,
        }
    }

    /// Sends one event and reads the milter's answer; `edits` collects
    /// the changes it asks for at the end of the message.
    async fn event(
        &mut self,
        event: Event,
        cmd: Command,
        lists: &MacroLists,
        values: Macros<'_>,
        edits: &mut Vec<Response>,
    ) -> Verdict {
        match self.state {
            State::Done => return self.lasting.clone().unwrap_or(Verdict::Continue),
            State::AcceptMessage if !event.per_connection() => return Verdict::Continue,
            _ => {}
        }
        let (leave_out, no_reply) = event.flags();
        if self.not_sent & leave_out != 0 {
            return Verdict::Continue;
        }
        if self.skip == Some(event) {
            return Verdict::Continue;
        }
        self.skip = None;
        let timeout = match event {
            Event::Header | Event::EndOfHeaders | Event::Body | Event::EndOfMessage => {
                self.m.content_timeout
            }
            _ => self.m.command_timeout,
        };
        let sent = async {
            let m = self.macros(event, lists, values);
            self.write(&m, timeout).await?;
            if self.steps & leave_out != 0 {
                return Ok(None);
            }
            self.write(&cmd, timeout).await?;
            if self.steps & no_reply != 0 {
                return Ok(None);
            }
            Ok(Some(()))
        };
        match sent.await {
            Ok(Some(())) => {}
            Ok(None) => return self.standing(),
            Err(t) => return self.fail(t),
        }
        loop {
            let r = match self.read(timeout, event.name()).await {
                Ok(r) => r,
                Err(t) => return self.fail(t),
            };
            let lasting = event.per_connection();
            let v = match r {
                Response::Progress => continue,
                Response::Continue => self.standing(),
                Response::Accept => {
                    if lasting {
                        self.io = None;
                        self.state = State::Done;
                    } else {
                        self.state = State::AcceptMessage;
                    }
                    self.standing()
                }
                Response::Discard if lasting => {
                    warn!(
                        "milter {}: DISCARD action is not allowed for connect or helo",
                        self.m.name
                    );
                    Verdict::Continue
                }
                Response::Discard => {
                    self.state = State::AcceptMessage;
                    Verdict::Discard
                }
                Response::Reject => self.answer(Verdict::Reply(REJECT.into()), lasting),
                Response::Tempfail => self.answer(Verdict::Reply(TEMPFAIL.into()), lasting),
                Response::ReplyCode(text) => match reply_code(&text) {
                    Some(reply) => self.answer(Verdict::Reply(reply), lasting),
                    None => return self.fail(Trouble::Conf(format!("malformed reply: {text}"))),
                },
                Response::Shutdown => {
                    self.io = None;
                    self.state = State::Done;
                    self.lasting = Some(Verdict::Shutdown);
                    Verdict::Shutdown
                }
                Response::Quarantine(_) => {
                    self.quarantined = true;
                    continue;
                }
                Response::Skip => {
                    self.skip = Some(event);
                    self.standing()
                }
                r @ (Response::AddHeader { .. }
                | Response::InsertHeader { .. }
                | Response::ChangeHeader { .. }
                | Response::AddRcpt { .. }
                | Response::DelRcpt(_)
                | Response::ChangeFrom { .. }
                | Response::ReplaceBody(_))
                    if event == Event::EndOfMessage =>
                {
                    edits.push(r);
                    continue;
                }
                other => {
                    return self.fail(Trouble::Comm(format!(
                        "unexpected filter response {other:?} after event {}",
                        event.name()
                    )))
                }
            };
            return v;
        }
    }

    /// What a milter's "go on" means: its lasting answer, or the hold a
    /// quarantine asked for.
    fn standing(&self) -> Verdict {
        match &self.lasting {
            Some(v) => v.clone(),
            None if self.quarantined => Verdict::Hold,
            None => Verdict::Continue,
        }
    }

    /// A refusal; at connect or HELO it stands for the whole session and
    /// the milter is done.
    fn answer(&mut self, v: Verdict, lasting: bool) -> Verdict {
        if lasting {
            self.io = None;
            self.state = State::Done;
            self.lasting = Some(v.clone());
        }
        v
    }

    /// Writes ABORT or QUIT if the milter is still talking.
    async fn say(&mut self, cmd: Command) {
        if self.state != State::Done && self.io.is_some() {
            let t = self.m.command_timeout;
            if let Err(t) = self.write(&cmd, t).await {
                self.fail(t);
            }
        }
        if self.state == State::AcceptMessage {
            self.state = State::Active;
        }
        self.quarantined = false;
    }
}

/// A milter's reply text as smtpd sends it: `4xx`/`5xx`, a space or `-`,
/// an enhanced status code of the same class if any; `%%` is `%`.
fn reply_code(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let ok = b.len() >= 4
        && matches!(b[0], b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && matches!(b[3], b' ' | b'-')
        && (b.len() < 5 || !b[4].is_ascii_digit() || b[4] == b[0]);
    if !ok {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn describe(e: &std::io::Error) -> String {
    e.raw_os_error().map_or_else(
        || e.to_string(),
        |n| nix::errno::Errno::from_raw(n).desc().to_owned(),
    )
}

/// The milters of one SMTP connection.
pub struct Session {
    conns: Vec<Conn>,
    macros: MacroLists,
}

impl Session {
    /// Connects to each milter in order and tells it about the client;
    /// stops at the first that objects (the later ones are never asked).
    pub async fn connect(cfg: &Config, client: &Client<'_>, values: Macros<'_>) -> (Self, Verdict) {
        let mut s = Self {
            conns: Vec::new(),
            macros: cfg.macros.clone(),
        };
        for m in &cfg.milters {
            let mut c = Conn {
                m: m.clone(),
                io: None,
                state: State::Active,
                steps: 0,
                not_sent: 0,
                own_macros: Default::default(),
                skip: None,
                quarantined: false,
                lasting: None,
            };
            let v = match c.open().await {
                Err(t) => c.fail(t),
                Ok(()) => {
                    let name = if client.name == "unknown" && client.addr != "unknown" {
                        format!("[{}]", client.addr)
                    } else {
                        client.name.to_owned()
                    };
                    let cmd = Command::Connect {
                        name,
                        family: client.family,
                        port: client.port,
                        addr: client.addr.to_owned(),
                    };
                    c.event(Event::Connect, cmd, &s.macros, values, &mut Vec::new())
                        .await
                }
            };
            s.conns.push(c);
            if !v.is_continue() {
                return (s, v);
            }
        }
        (s, Verdict::Continue)
    }

    /// Whether any milter still takes part (or has a lasting answer).
    pub fn is_empty(&self) -> bool {
        self.conns
            .iter()
            .all(|c| c.state == State::Done && c.lasting.is_none())
    }

    async fn each(&mut self, event: Event, cmd: &Command, values: Macros<'_>) -> Verdict {
        for c in &mut self.conns {
            let v = c
                .event(event, cmd.clone(), &self.macros, values, &mut Vec::new())
                .await;
            if !v.is_continue() {
                return v;
            }
        }
        Verdict::Continue
    }

    pub async fn helo(&mut self, helo: &str, values: Macros<'_>) -> Verdict {
        self.each(Event::Helo, &Command::Helo(helo.to_owned()), values)
            .await
    }

    /// `args`: the address as the client gave it (`<a@b>`) and its
    /// parameters.
    pub async fn mail(&mut self, args: Vec<String>, values: Macros<'_>) -> Verdict {
        self.each(Event::Mail, &Command::Mail(args), values).await
    }

    pub async fn rcpt(&mut self, args: Vec<String>, values: Macros<'_>) -> Verdict {
        self.each(Event::Rcpt, &Command::Rcpt(args), values).await
    }

    pub async fn data(&mut self, values: Macros<'_>) -> Verdict {
        self.each(Event::Data, &Command::Data, values).await
    }

    /// A command smtpd does not know: its verb.
    pub async fn unknown(&mut self, verb: &str, values: Macros<'_>) -> Verdict {
        self.each(Event::Unknown, &Command::Unknown(verb.to_owned()), values)
            .await
    }

    /// The answer that stands for commands milters are not told about
    /// (AUTH, STARTTLS, VRFY, ETRN): a refused connect or HELO.
    pub fn lasting(&self) -> Option<Verdict> {
        self.conns.iter().find_map(|c| c.lasting.clone())
    }

    /// The message to each milter in turn (headers, end of headers, body,
    /// end of message), each seeing the edits of those before it, which
    /// are made to `msg`. Returns the verdict, the content changes in the
    /// order they were made, and the envelope changes.
    pub async fn message(
        &mut self,
        msg: &mut Message,
        values: Macros<'_>,
    ) -> (Verdict, Vec<ContentEdit>, Vec<EnvelopeEdit>) {
        let mut envelope = Vec::new();
        let mut changes = Vec::new();
        let lists = self.macros.clone();
        for c in &mut self.conns {
            let mut edits = Vec::new();
            let v = Self::content(c, msg, &lists, values, &mut edits).await;
            let lead = c.lead_space();
            let header = |name: &str, value: &str| Header::from_milter(name, value, lead).0;
            let mut mine = Vec::new();
            let mut new_body: Option<Vec<u8>> = None;
            for e in edits {
                match e {
                    Response::AddHeader { name, value } => {
                        mine.push(ContentEdit::Add(header(&name, &value)));
                    }
                    Response::InsertHeader { index, name, value } => {
                        mine.push(ContentEdit::Insert {
                            index,
                            header: header(&name, &value),
                        });
                    }
                    Response::ChangeHeader { index, name, value } => {
                        if name.is_empty() {
                            let v = c.fail(Trouble::Conf("null change header name".into()));
                            return (v, changes, envelope);
                        }
                        let new = (!value.is_empty()).then(|| header(&name, &value));
                        mine.push(ContentEdit::Change {
                            index,
                            name,
                            header: new,
                        });
                    }
                    // Several packets make one new body.
                    Response::ReplaceBody(b) => new_body.get_or_insert_with(Vec::new).extend(b),
                    Response::AddRcpt { rcpt, args } => envelope.push(EnvelopeEdit::AddRcpt {
                        rcpt: bare_address(&rcpt),
                        args,
                    }),
                    Response::DelRcpt(r) => envelope.push(EnvelopeEdit::DelRcpt(bare_address(&r))),
                    Response::ChangeFrom { sender, args } => {
                        envelope.push(EnvelopeEdit::ChangeFrom {
                            sender: bare_address(&sender),
                            args,
                        });
                    }
                    _ => {}
                }
            }
            mine.extend(new_body.map(ContentEdit::Body));
            for e in mine {
                msg.apply(&e);
                changes.push(e);
            }
            if !v.is_continue() {
                return (v, changes, envelope);
            }
        }
        (Verdict::Continue, changes, envelope)
    }

    async fn content(
        c: &mut Conn,
        msg: &Message,
        lists: &MacroLists,
        values: Macros<'_>,
        edits: &mut Vec<Response>,
    ) -> Verdict {
        let lead = c.lead_space();
        for h in msg.shown() {
            let cmd = Command::Header {
                name: h.name().to_vec(),
                value: h.value(lead).to_vec(),
            };
            let v = c.event(Event::Header, cmd, lists, values, edits).await;
            if !v.is_continue() {
                return v;
            }
        }
        let v = c
            .event(
                Event::EndOfHeaders,
                Command::EndOfHeaders,
                lists,
                values,
                edits,
            )
            .await;
        if !v.is_continue() {
            return v;
        }
        for chunk in msg.body_crlf().chunks(wire::BODY_CHUNK) {
            let v = c
                .event(
                    Event::Body,
                    Command::Body(chunk.to_vec()),
                    lists,
                    values,
                    edits,
                )
                .await;
            if !v.is_continue() {
                return v;
            }
        }
        c.event(
            Event::EndOfMessage,
            Command::EndOfMessage,
            lists,
            values,
            edits,
        )
        .await
    }

    /// The transaction is over (done, refused, RSET): ABORT to each.
    pub async fn abort(&mut self) {
        for c in &mut self.conns {
            c.say(Command::Abort).await;
        }
    }

    /// The connection is over: QUIT to each.
    pub async fn quit(mut self) {
        for c in &mut self.conns {
            c.say(Command::Quit).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_are_checked_as_postfix_checks_them() {
        assert_eq!(
            reply_code("554 5.7.1 100%% spam").as_deref(),
            Some("554 5.7.1 100% spam")
        );
        assert_eq!(reply_code("421 go").as_deref(), Some("421 go"));
        for bad in ["250 ok", "55 x", "554x", "554 4.7.1 mixed", ""] {
            assert_eq!(reply_code(bad), None, "{bad}");
        }
    }
}
