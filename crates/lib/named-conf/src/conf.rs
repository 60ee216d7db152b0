//! named.conf: the subset of BIND's configuration language that postfix-rs
//! named serves, parsed into [`NamedConf`].
//!
//! The grammar is BIND's: statements end with `;`, blocks are `{ ... }`,
//! strings may be quoted, and `//`, `#` and `/* */` start comments. What
//! named does not implement is never silently dropped: options that only tune
//! BIND (caches, statistics, DNSSEC validation) give a warning naming file and
//! line, anything else an error in the same form BIND prints
//! (`/etc/bind/named.conf:12: unknown option 'foo'`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::acl::{Acl, Element};
use crate::controls::{self, Control, Key};
use crate::logging::{self, Logging};
use crate::remote::{self, JournalSize, Notify, Remote, Server};

/// The default DNS port, used when `listen-on` or `forwarders` name none.
pub const DNS_PORT: u16 = 53;

/// A parsed named.conf with its includes.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedConf {
    /// The file this was read from.
    pub path: PathBuf,
    pub options: Options,
    /// Every zone of every view, each naming its view.
    pub zones: Vec<ZoneConf>,
    /// The views, in order; without `view` statements, the one view
    /// `_default` that every client sees, with the global options.
    pub views: Vec<ViewConf>,
    /// The `logging` statement, if any.
    pub logging: Option<Logging>,
    /// `key` statements.
    pub keys: Vec<Key>,
    /// `server` statements (the keys for talking to other servers).
    pub servers: Vec<Server>,
    /// The control channels of the `controls` statements; `None` when there
    /// is none (BIND's default channels, [`Control::defaults`]).
    pub controls: Option<Vec<Control>>,
    /// `FILE:LINE: text` for each thing accepted but not acted on.
    pub warnings: Vec<String>,
}

/// The `options { ... };` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `listen-on` statements (BIND's default: port 53 on every IPv4 address).
    pub listen_on: Vec<Listen>,
    /// `listen-on-v6` statements (BIND's default: port 53 on every IPv6 address).
    pub listen_on_v6: Vec<Listen>,
    /// Where relative zone file names are looked up.
    pub directory: PathBuf,
    /// Who may query (default: everyone).
    pub allow_query: Acl,
    /// Who may have names outside our zones resolved (default:
    /// `allow-query-cache` if set, else localhost; localnets).
    pub allow_recursion: Acl,
    /// Who may get answers that are not from our zones (default:
    /// `allow-recursion` if set, else localhost; localnets).
    pub allow_query_cache: Acl,
    pub recursion: bool,
    pub forwarders: Vec<SocketAddr>,
    pub pid_file: Option<PathBuf>,
    /// What `version.bind`, `hostname.bind` and `id.server` (class CH)
    /// answer: `version` (default: named's own), `hostname` (default: the
    /// host's name), `server-id` (default: none; `hostname` for the host's
    /// name); `None`: not answered (`none`).
    pub version: Option<String>,
    pub hostname: Option<String>,
    pub server_id: Option<String>,
    /// `querylog`: log every query (rndc querylog turns it on and off).
    pub querylog: bool,
    /// Where `rndc dumpdb` writes (`dump-file`, default `named_dump.db`).
    pub dump_file: PathBuf,
    /// DNS COOKIES: `answer-cookie` (default yes), `require-server-cookie`
    /// (default no) and the first `cookie-secret` (default: random).
    pub answer_cookie: bool,
    pub require_server_cookie: bool,
    pub cookie_secret: Option<[u8; 16]>,
    /// `interface-interval`: minutes between scans for new interface
    /// addresses (default 60; 0: none).
    pub interface_interval: u32,
    /// `dnssec-validation` yes or auto (BIND's default): answers from
    /// outside the zones must be validated, which named cannot do, so it
    /// gives none (see ViewConf::dnssec_validation).
    pub dnssec_validation: bool,
    /// Clients whose queries are dropped unanswered (default none).
    pub blackhole: Acl,
    /// `port`: the port of `listen-on` statements that name none.
    pub port: Option<u16>,
    /// Local addresses on which queries (`allow-query-on`), recursion
    /// and answers from outside the zones are allowed (default any).
    pub allow_query_on: Acl,
    pub allow_recursion_on: Acl,
    pub allow_query_cache_on: Acl,
    /// Who may transfer zones (AXFR, IXFR; default any, as BIND 9.18).
    pub allow_transfer: Acl,
    /// Whom a primary zone's new serial is announced to (default yes).
    pub notify: Notify,
    pub also_notify: Vec<Remote>,
    pub max_journal_size: JournalSize,
    /// Who besides a secondary zone's primaries may NOTIFY it (default none).
    pub allow_notify: Option<Acl>,
}

/// The name of the view named.conf has without `view` statements.
pub const DEFAULT_VIEW: &str = "_default";

/// One `view "name" { match-clients { }; ... zone ...; };`: which queries
/// it answers, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewConf {
    pub name: String,
    /// Clients it answers (default: any).
    pub match_clients: Acl,
    /// Local addresses it answers on (default: any).
    pub match_destinations: Acl,
    /// Only queries that ask for recursion.
    pub match_recursive_only: bool,
    pub recursion: bool,
    /// Validation asked for (yes or auto): named validates nothing, so
    /// such a view neither forwards nor resolves; it refuses names outside
    /// its zones rather than answer unvalidated (fail closed).
    pub dnssec_validation: bool,
    pub allow_query: Acl,
    pub allow_recursion: Acl,
    pub allow_query_cache: Acl,
    pub allow_query_on: Acl,
    pub allow_recursion_on: Acl,
    pub allow_query_cache_on: Acl,
    pub allow_transfer: Acl,
    pub notify: Notify,
    pub also_notify: Vec<Remote>,
    pub max_journal_size: JournalSize,
    pub allow_notify: Option<Acl>,
    pub forwarders: Vec<SocketAddr>,
    /// The root hints file (`zone "." { type hint; file "..."; };`), for recursion.
    pub hints: Option<PathBuf>,
}

/// One `listen-on [port N] { list };`.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub port: Option<u16>,
    pub addresses: Acl,
}

/// One `zone "name" { type primary; file "..."; };`.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConf {
    /// The zone's name, lower case, without the trailing dot (`ywnds.com`).
    pub name: String,
    /// The zone file, relative names already joined to `directory`.
    pub file: PathBuf,
    /// The zone file as named.conf names it (what `rndc zonestatus` shows).
    pub file_name: String,
    /// The zone's own `allow-query`, which replaces the view's.
    pub allow_query: Option<Acl>,
    /// The zone's own `allow-transfer`, which replaces the view's.
    pub allow_transfer: Option<Acl>,
    /// The zone's own `notify` and `also-notify`, which replace the view's.
    pub notify: Option<Notify>,
    pub also_notify: Option<Vec<Remote>>,
    pub max_journal_size: Option<JournalSize>,
    /// `type secondary`: where its data comes from.
    pub secondary: Option<Secondary>,
    /// The view it belongs to ([`DEFAULT_VIEW`] without views).
    pub view: String,
    /// `FILE:LINE` of the statement, for messages.
    pub place: String,
}

/// A secondary zone's `primaries` (`masters`) and `allow-notify` (who
/// besides the primaries, whose NOTIFY is always taken, may send one;
/// default: the view's).
#[derive(Debug, Clone, PartialEq)]
pub struct Secondary {
    pub primaries: Vec<Remote>,
    pub allow_notify: Option<Acl>,
}

/// What is wrong with a named.conf, as BIND says it: `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("open: {}: {reason}", .file.display())]
    Open { file: PathBuf, reason: String },
    #[error("{place}: {message}")]
    At { place: String, message: String },
    #[error(transparent)]
    Acl(#[from] crate::acl::Undefined),
}

/// Reads `path` and everything it includes.
pub fn load(path: &Path) -> Result<NamedConf, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Open {
        file: path.to_owned(),
        reason: io_reason(&e),
    })?;
    parse(path, &text)
}

/// Parses named.conf text; `path` names it in messages and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<NamedConf, Error> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut statements = Vec::new();
    read_statements(path, text, &base, &mut statements, 0)?;
    let mut builder = Builder {
        base,
        warnings: Vec::new(),
        acls: Vec::new(),
        remotes: Vec::new(),
    };
    // `acl` and `primaries` statements may come after their use, as in BIND.
    for s in &statements {
        match s.keyword() {
            Some("acl") => builder.acl_statement(s)?,
            Some("primaries" | "masters") => {
                let list = remote::list_statement(s, &builder.remotes)?;
                builder.remotes.push(list);
            }
            _ => {}
        }
    }
    // Views take the global options as defaults, wherever `options` is.
    let mut options = None;
    for s in statements.iter().filter(|s| s.keyword() == Some("options")) {
        if options.is_some() {
            return Err(s.error("'options' redefined"));
        }
        options = Some(builder.options(s)?);
    }
    let mut options = options.unwrap_or_else(|| builder.default_options());
    let mut zones: Vec<ZoneConf> = Vec::new();
    let mut views: Vec<ViewConf> = Vec::new();
    let mut top_hints = None;
    let mut top_zone = None;
    let mut keys = Vec::new();
    let mut servers = Vec::new();
    let mut control_list: Option<Vec<Control>> = None;
    let mut log: Option<Logging> = None;
    for s in &statements {
        match s.keyword().unwrap_or_default() {
            "acl" | "options" | "primaries" | "masters" => {}
            "logging" => {
                if log.is_some() {
                    return Err(s.error("'logging' redefined"));
                }
                log = Some(logging::logging(s)?);
            }
            "key" => controls::add_key(&mut keys, s)?,
            "controls" => control_list
                .get_or_insert_with(Vec::new)
                .extend(controls::controls(&builder, s)?),
            "zone" => {
                top_zone.get_or_insert_with(|| s.place());
                match builder.zone(s, DEFAULT_VIEW)? {
                    ZoneStmt::Served(z) => add_zone(&mut zones, *z, s)?,
                    ZoneStmt::Hints(h) => top_hints = Some(h),
                    ZoneStmt::Skipped => {}
                }
            }
            "view" => {
                let view = builder.view(s, &options, &mut zones)?;
                if let Some(prev) = views.iter().find(|v| v.name == view.name) {
                    return Err(s.error(&format!("view '{}': already exists", prev.name)));
                }
                views.push(view);
            }
            "server" => {
                let mut warnings = Vec::new();
                servers.push(remote::server(s, &mut |o, w| {
                    warnings.push(o.error(&w).to_string())
                })?);
                builder.warnings.extend(warnings);
            }
            "trust-anchors"
            | "managed-keys"
            | "statistics-channels"
            | "dnssec-policy"
            | "tls"
            | "http" => {
                builder.warn(s, &format!("'{}' is not supported; ignored", s.word(0)));
            }
            other => return Err(s.error(&format!("unknown option '{other}'"))),
        }
    }
    if views.is_empty() {
        views.push(ViewConf {
            hints: top_hints,
            ..ViewConf::from_options(DEFAULT_VIEW, &options)
        });
    } else if let Some(place) = top_zone {
        return Err(Error::At {
            place,
            message: "when using 'view' statements, all zones must be in views".into(),
        });
    }
    // Files are named relative to `directory`, known only now.
    for z in &mut zones {
        if !z.file.as_os_str().is_empty() {
            z.file = options.directory.join(&z.file);
        }
    }
    for v in &mut views {
        v.hints = v.hints.take().map(|h| options.directory.join(h));
    }
    options.dump_file = options.directory.join(&options.dump_file);
    if let Some(l) = &mut log {
        l.anchor(&options.directory);
    }
    Ok(NamedConf {
        path: path.to_path_buf(),
        options,
        zones,
        views,
        logging: log,
        keys,
        servers,
        controls: control_list,
        warnings: builder.warnings,
    })
}

/// Adds a zone; one name twice in a view is an error, as in BIND.
fn add_zone(zones: &mut Vec<ZoneConf>, z: ZoneConf, s: &Stmt) -> Result<(), Error> {
    if let Some(prev) = zones.iter().find(|p| p.name == z.name && p.view == z.view) {
        return Err(s.error(&format!(
            "zone '{}': already exists previous definition: {}",
            z.name, prev.place
        )));
    }
    zones.push(z);
    Ok(())
}

impl ViewConf {
    /// A view with the global options' settings.
    fn from_options(name: &str, o: &Options) -> Self {
        Self {
            name: name.to_owned(),
            match_clients: Acl::any(),
            match_destinations: Acl::any(),
            match_recursive_only: false,
            recursion: o.recursion,
            dnssec_validation: o.dnssec_validation,
            allow_query: o.allow_query.clone(),
            allow_recursion: o.allow_recursion.clone(),
            allow_query_cache: o.allow_query_cache.clone(),
            allow_query_on: o.allow_query_on.clone(),
            allow_recursion_on: o.allow_recursion_on.clone(),
            allow_query_cache_on: o.allow_query_cache_on.clone(),
            allow_transfer: o.allow_transfer.clone(),
            notify: o.notify,
            also_notify: o.also_notify.clone(),
            max_journal_size: o.max_journal_size,
            allow_notify: o.allow_notify.clone(),
            forwarders: o.forwarders.clone(),
            hints: None,
        }
    }

    /// The zones of this view.
    pub fn zones<'a>(&'a self, conf: &'a NamedConf) -> impl Iterator<Item = &'a ZoneConf> {
        conf.zones.iter().filter(move |z| z.view == self.name)
    }
}

/// What a `zone` statement is.
enum ZoneStmt {
    /// A zone named serves (primary or secondary).
    Served(Box<ZoneConf>),
    /// The root hint zone's file, as written.
    Hints(PathBuf),
    Skipped,
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Semi,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(file: &Path, text: &str) -> Result<Vec<Token>, Error> {
    let err = |line: usize, what: &str| Error::At {
        place: format!("{}:{line}", file.display()),
        message: what.to_owned(),
    };
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => skip_line(&mut chars, &mut line),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars, &mut line),
            '/' if chars.peek() == Some(&'*') => {
                let start = line;
                chars.next();
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        None => return Err(err(start, "unterminated comment")),
                        Some('/') if prev == '*' => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            prev = c;
                        }
                    }
                }
            }
            '{' => out.push(Token {
                tok: Tok::Open,
                line,
            }),
            '}' => out.push(Token {
                tok: Tok::Close,
                line,
            }),
            ';' => out.push(Token {
                tok: Tok::Semi,
                line,
            }),
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(err(start, "unterminated quoted string")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => s.push(c),
                            None => return Err(err(start, "unterminated quoted string")),
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                out.push(Token {
                    tok: Tok::Word(s),
                    line: start,
                });
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Token {
                    tok: Tok::Word(s),
                    line,
                });
            }
        }
    }
    Ok(out)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, line: &mut usize) {
    for c in chars.by_ref() {
        if c == '\n' {
            *line += 1;
            break;
        }
    }
}

// ---------------------------------------------------------------- statements

/// One statement: words and blocks up to its `;`.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    file: PathBuf,
    line: usize,
    pub(crate) items: Vec<Item>,
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Word(String),
    Block(Vec<Stmt>),
}

impl Stmt {
    pub(crate) fn keyword(&self) -> Option<&str> {
        match self.items.first() {
            Some(Item::Word(w)) => Some(w),
            _ => None,
        }
    }

    pub(crate) fn word(&self, i: usize) -> &str {
        match self.items.get(i) {
            Some(Item::Word(w)) => w,
            _ => "",
        }
    }

    pub(crate) fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    pub(crate) fn error(&self, what: &str) -> Error {
        Error::At {
            place: self.place(),
            message: what.to_owned(),
        }
    }

    /// The words of a statement that must be `keyword value;`.
    pub(crate) fn single(&self) -> Result<&str, Error> {
        match self.items.as_slice() {
            [Item::Word(_), Item::Word(v)] => Ok(v),
            _ => Err(self.error(&format!("'{}' takes one value", self.word(0)))),
        }
    }

    /// The block of a statement that must be `keyword [words] { ... }`.
    pub(crate) fn block(&self) -> Result<&[Self], Error> {
        match self.items.last() {
            Some(Item::Block(b)) => Ok(b),
            _ => Err(self.error(&format!("'{}' expects a {{ }} block", self.word(0)))),
        }
    }
}

pub(crate) fn read_statements(
    file: &Path,
    text: &str,
    base: &Path,
    out: &mut Vec<Stmt>,
    depth: usize,
) -> Result<(), Error> {
    let tokens = lex(file, text)?;
    let mut pos = 0;
    let stmts = parse_block(file, &tokens, &mut pos, false)?;
    expand_includes(stmts, base, out, depth)
}

/// `include "file";` anywhere, at the top or inside a block, replaced by
/// the statements of that file, as BIND reads it.
fn expand_includes(
    stmts: Vec<Stmt>,
    base: &Path,
    out: &mut Vec<Stmt>,
    depth: usize,
) -> Result<(), Error> {
    for mut s in stmts {
        if s.keyword() == Some("include") {
            let name = s.single()?;
            if depth > 16 {
                return Err(s.error("include nesting too deep"));
            }
            let inc = base.join(name);
            let text = std::fs::read_to_string(&inc)
                .map_err(|e| s.error(&format!("open: {}: {}", inc.display(), io_reason(&e))))?;
            read_statements(&inc, &text, base, out, depth + 1)?;
            continue;
        }
        for item in &mut s.items {
            if let Item::Block(inner) = item {
                let mut expanded = Vec::new();
                expand_includes(std::mem::take(inner), base, &mut expanded, depth)?;
                *inner = expanded;
            }
        }
        out.push(s);
    }
    Ok(())
}

fn parse_block(
    file: &Path,
    tokens: &[Token],
    pos: &mut usize,
    nested: bool,
) -> Result<Vec<Stmt>, Error> {
    let err = |line: usize, what: &str| Error::At {
        place: format!("{}:{line}", file.display()),
        message: what.to_owned(),
    };
    let mut out = Vec::new();
    let mut cur: Option<Stmt> = None;
    loop {
        let Some(t) = tokens.get(*pos) else {
            let line = tokens.last().map_or(1, |t| t.line);
            if nested {
                return Err(err(line, "'}' expected near end of file"));
            }
            if cur.is_some() {
                return Err(err(line, "';' expected near end of file"));
            }
            return Ok(out);
        };
        *pos += 1;
        match &t.tok {
            Tok::Word(w) => cur
                .get_or_insert_with(|| Stmt {
                    file: file.to_path_buf(),
                    line: t.line,
                    items: Vec::new(),
                })
                .items
                .push(Item::Word(w.clone())),
            Tok::Open => {
                let inner = parse_block(file, tokens, pos, true)?;
                let stmt = cur.get_or_insert_with(|| Stmt {
                    file: file.to_path_buf(),
                    line: t.line,
                    items: Vec::new(),
                });
                stmt.items.push(Item::Block(inner));
                // A block ends its statement, but in the clauses of
                // `controls` (`inet ... allow { } keys { };`).
                let close = tokens.get(*pos - 1).map_or(t.line, |c| c.line);
                let continues = matches!(stmt.keyword(), Some("inet" | "unix"));
                match tokens.get(*pos).map(|t| &t.tok) {
                    Some(Tok::Semi) => {}
                    Some(Tok::Word(_)) if continues => {}
                    _ => return Err(err(close, "missing ';' after '}'")),
                }
            }
            // An empty statement (`;;`) is harmless.
            Tok::Semi => out.extend(cur.take()),
            Tok::Close => {
                if !nested {
                    return Err(err(t.line, "unexpected '}'"));
                }
                if cur.is_some() {
                    return Err(err(t.line, "missing ';' before '}'"));
                }
                return Ok(out);
            }
        }
    }
}

// ---------------------------------------------------------------- meaning

pub(crate) struct Builder {
    base: PathBuf,
    warnings: Vec<String>,
    acls: Vec<(String, Acl)>,
    /// `primaries` (`masters`) lists, by name.
    remotes: Vec<(String, Vec<Remote>)>,
}

/// BIND 9.18's options (its `named-checkconf -p` grammar) that change no
/// answer and no access here, accepted with a warning naming file and
/// line: tuning and limits, files BIND writes, zone transfers and NOTIFY
/// (transfers and updates are always refused here, which is stricter),
/// signing and validation settings (nothing is signed or validated here),
/// zone load checks, and the deprecated and unconfigured ones.
const IGNORED_OPTIONS: &[&str] = &[
    "allow-new-zones",
    "allow-update",
    "allow-update-forwarding",
    "alt-transfer-source",
    "alt-transfer-source-v6",
    "attach-cache",
    "auth-nxdomain",
    "auto-dnssec",
    "automatic-interface-scan",
    "avoid-v4-udp-ports",
    "avoid-v6-udp-ports",
    "bindkeys-file",
    "check-dup-records",
    "check-integrity",
    "check-mx",
    "check-mx-cname",
    "check-names",
    "check-sibling",
    "check-spf",
    "check-srv-cname",
    "check-wildcard",
    "clients-per-query",
    "coresize",
    "datasize",
    "dialup",
    "disable-algorithms",
    "disable-ds-digests",
    "disable-empty-zone",
    "dns64-contact",
    "dns64-server",
    "dnskey-sig-validity",
    "dnsrps-enable",
    "dnsrps-options",
    "dnssec-accept-expired",
    "dnssec-dnskey-kskonly",
    "dnssec-loadkeys-interval",
    "dnssec-must-be-secure",
    "dnssec-policy",
    "dnssec-secure-to-insecure",
    "dnssec-update-mode",
    "dnstap",
    "dnstap-identity",
    "dnstap-output",
    "dnstap-version",
    "dscp",
    "dual-stack-servers",
    "edns-udp-size",
    "empty-contact",
    "empty-server",
    "empty-zones-enable",
    "fetch-quota-params",
    "fetches-per-server",
    "fetches-per-zone",
    "files",
    "flush-zones-on-shutdown",
    "fstrm-set-buffer-hint",
    "fstrm-set-flush-timeout",
    "fstrm-set-input-queue-size",
    "fstrm-set-output-notify-threshold",
    "fstrm-set-output-queue-model",
    "fstrm-set-output-queue-size",
    "fstrm-set-reopen-interval",
    "geoip-directory",
    "glue-cache",
    "heartbeat-interval",
    "http-listener-clients",
    "http-port",
    "http-streams-per-connection",
    "https-port",
    "ipv4only-contact",
    "ipv4only-enable",
    "ipv4only-server",
    "ixfr-from-differences",
    "keep-response-order",
    "key-directory",
    "lame-ttl",
    "lmdb-mapsize",
    "lock-file",
    "managed-keys-directory",
    "masterfile-format",
    "masterfile-style",
    "match-mapped-addresses",
    "max-cache-size",
    "max-cache-ttl",
    "max-clients-per-query",
    "max-ixfr-ratio",
    "max-ncache-ttl",
    "max-query-count",
    "max-query-restarts",
    "max-records",
    "max-records-per-type",
    "max-recursion-depth",
    "max-recursion-queries",
    "max-refresh-time",
    "max-retry-time",
    "max-rsa-exponent-size",
    "max-stale-ttl",
    "max-transfer-idle-in",
    "max-transfer-idle-out",
    "max-transfer-time-in",
    "max-transfer-time-out",
    "max-types-per-name",
    "max-udp-size",
    "max-zone-ttl",
    "memstatistics",
    "memstatistics-file",
    "message-compression",
    "min-cache-ttl",
    "min-ncache-ttl",
    "min-refresh-time",
    "min-retry-time",
    "multi-master",
    "new-zones-directory",
    "no-case-compress",
    "nocookie-udp-size",
    "notify-delay",
    "notify-rate",
    "notify-source",
    "notify-source-v6",
    "notify-to-soa",
    "nsec3-test-zone",
    "nta-lifetime",
    "nta-recheck",
    "parental-source",
    "parental-source-v6",
    "preferred-glue",
    "prefetch",
    "provide-ixfr",
    "qname-minimization",
    "query-source",
    "query-source-v6",
    "random-device",
    "recursing-file",
    "recursive-clients",
    "request-expire",
    "request-ixfr",
    "request-nsid",
    "reserved-sockets",
    "resolver-nonbackoff-tries",
    "resolver-query-timeout",
    "resolver-retry-interval",
    "response-padding",
    "reuseport",
    "root-delegation-only",
    "root-key-sentinel",
    "rrset-order",
    "secroots-file",
    "send-cookie",
    "serial-query-rate",
    "serial-update-method",
    "servfail-ttl",
    "session-keyalg",
    "session-keyfile",
    "session-keyname",
    "sig-signing-nodes",
    "sig-signing-signatures",
    "sig-signing-type",
    "sig-validity-interval",
    "sortlist",
    "stacksize",
    "stale-answer-client-timeout",
    "stale-answer-enable",
    "stale-answer-ttl",
    "stale-cache-enable",
    "stale-refresh-time",
    "startup-notify-rate",
    "statistics-file",
    "suppress-initial-notify",
    "synth-from-dnssec",
    "tcp-advertised-timeout",
    "tcp-clients",
    "tcp-idle-timeout",
    "tcp-initial-timeout",
    "tcp-keepalive-timeout",
    "tcp-listen-queue",
    "tcp-receive-buffer",
    "tcp-send-buffer",
    "tkey-dhkey",
    "tkey-domain",
    "tkey-gssapi-credential",
    "tkey-gssapi-keytab",
    "tls-port",
    "transfer-format",
    "transfer-message-size",
    "transfer-source",
    "transfer-source-v6",
    "transfers-in",
    "transfers-out",
    "transfers-per-ns",
    "trust-anchor-telemetry",
    "try-tcp-refresh",
    "udp-receive-buffer",
    "udp-send-buffer",
    "update-check-ksk",
    "update-quota",
    "use-alt-transfer-source",
    "use-v4-udp-ports",
    "use-v6-udp-ports",
    "v6-bias",
    "validate-except",
    "zero-no-soa-ttl",
    "zero-no-soa-ttl-cache",
    "zone-statistics",
];

/// BIND options that would change answers or who gets them, which named
/// does not implement: refused at start and reload (fail closed), each
/// with why.
const REFUSED_OPTIONS: &[(&str, &str)] = &[
    ("catalog-zones", "catalog zones are not supported"),
    ("deny-answer-addresses", "answer filtering is not supported"),
    ("deny-answer-aliases", "answer filtering is not supported"),
    ("dns64", "DNS64 synthesis is not supported"),
    ("nxdomain-redirect", "NXDOMAIN redirection is not supported"),
    ("rate-limit", "response rate limiting is not supported"),
    ("response-policy", "response policy zones are not supported"),
];

/// The options of `options` a view may set for itself (besides those
/// accepted with a warning).
const VIEW_OPTIONS: &[&str] = &[
    "dnssec-validation",
    "allow-query",
    "allow-recursion",
    "allow-query-cache",
    "allow-query-on",
    "allow-recursion-on",
    "allow-query-cache-on",
    "allow-transfer",
    "notify",
    "also-notify",
    "max-journal-size",
    "allow-notify",
    "minimal-responses",
    "minimal-any",
    "recursion",
    "forwarders",
    "forward",
];

/// Zone options accepted with a warning.
const IGNORED_ZONE_OPTIONS: &[&str] = &[
    "allow-update",
    "min-refresh-time",
    "max-refresh-time",
    "min-retry-time",
    "max-retry-time",
    "transfer-source",
    "transfer-source-v6",
    "notify-source",
    "notify-source-v6",
    "request-ixfr",
    "max-transfer-time-in",
    "max-transfer-idle-in",
    "check-names",
    "journal",
    "zone-statistics",
];

impl Builder {
    fn warn(&mut self, s: &Stmt, what: &str) {
        self.warnings.push(s.error(what).to_string());
    }

    fn default_options(&self) -> Options {
        Options {
            listen_on: vec![Listen {
                port: None,
                addresses: Acl::any(),
            }],
            listen_on_v6: vec![Listen {
                port: None,
                addresses: Acl::any(),
            }],
            directory: self.base.clone(),
            allow_query: Acl::any(),
            allow_recursion: local_default(),
            allow_query_cache: local_default(),
            recursion: true,
            forwarders: Vec::new(),
            pid_file: None,
            version: Some(format!("postfix-rs named {}", env!("CARGO_PKG_VERSION"))),
            hostname: host_name(),
            server_id: None,
            querylog: false,
            dump_file: PathBuf::from("named_dump.db"),
            answer_cookie: true,
            require_server_cookie: false,
            cookie_secret: None,
            interface_interval: 60,
            dnssec_validation: true,
            blackhole: Acl::new(Vec::new()),
            port: None,
            allow_query_on: Acl::any(),
            allow_recursion_on: Acl::any(),
            allow_query_cache_on: Acl::any(),
            allow_transfer: Acl::any(),
            notify: Notify::Yes,
            also_notify: Vec::new(),
            max_journal_size: JournalSize::Default,
            allow_notify: None,
        }
    }

    fn acl_statement(&mut self, s: &Stmt) -> Result<(), Error> {
        let name = s.word(1).to_owned();
        if name.is_empty() || s.items.len() != 3 {
            return Err(s.error("expected: acl NAME { address_match_list };"));
        }
        if matches!(name.as_str(), "any" | "none" | "localhost" | "localnets") {
            return Err(s.error(&format!("cannot redefine builtin acl '{name}'")));
        }
        // Named lists inside this one are resolved when it is used.
        let list = self.address_list(s.block()?, true)?;
        self.acls.push((name, list));
        Ok(())
    }

    fn options(&mut self, s: &Stmt) -> Result<Options, Error> {
        let mut o = self.default_options();
        let mut acls = (None, None);
        let mut listen = Vec::new();
        let mut listen6 = Vec::new();
        for opt in s.block()? {
            match opt.keyword().unwrap_or_default() {
                "listen-on" => listen.push(self.listen(opt)?),
                "listen-on-v6" => listen6.push(self.listen(opt)?),
                "directory" => o.directory = self.base.join(opt.single()?),
                "version" => o.version = none_or(opt.single()?, |v| v.to_owned()),
                "hostname" => o.hostname = none_or(opt.single()?, |v| v.to_owned()),
                "server-id" => {
                    o.server_id = none_or(opt.single()?, |v| match v {
                        "hostname" => host_name().unwrap_or_default(),
                        v => v.to_owned(),
                    })
                }
                "querylog" => o.querylog = yes_no(opt)?,
                "blackhole" => o.blackhole = self.address_list(opt.block()?, false)?,
                "port" => o.port = Some(port(opt, opt.single()?)?),
                "dump-file" => o.dump_file = PathBuf::from(opt.single()?),
                "interface-interval" => {
                    o.interface_interval = duration_minutes(opt)?;
                }
                "answer-cookie" => o.answer_cookie = yes_no(opt)?,
                "require-server-cookie" => o.require_server_cookie = yes_no(opt)?,
                "cookie-secret" => {
                    // The first one makes cookies (BIND checks with the others too).
                    let secret = cookie_secret(opt)?;
                    o.cookie_secret.get_or_insert(secret);
                }
                "cookie-algorithm" => match opt.single()? {
                    "siphash24" => {}
                    "aes" => self.warn(
                        opt,
                        "cookie-algorithm aes is not supported; siphash24 is used",
                    ),
                    v => {
                        return Err(opt.error(&format!("cookie-algorithm: unknown algorithm '{v}'")))
                    }
                },
                "pid-file" => {
                    o.pid_file = match opt.single()? {
                        "none" => None,
                        f => Some(self.base.join(f)),
                    }
                }
                _ => self.option(&mut o, opt, &mut acls)?,
            }
        }
        self.recursion_acls(&mut o, acls);
        if !listen.is_empty() {
            o.listen_on = listen;
        }
        if !listen6.is_empty() {
            o.listen_on_v6 = listen6;
        }
        Ok(o)
    }

    /// An option a view may set too (or one only accepted with a warning).
    /// `acls` keeps `allow-recursion` and `allow-query-cache` as given, for
    /// [`Self::recursion_acls`].
    fn option(
        &mut self,
        o: &mut Options,
        opt: &Stmt,
        acls: &mut (Option<Acl>, Option<Acl>),
    ) -> Result<(), Error> {
        match opt.keyword().unwrap_or_default() {
            "allow-query" => o.allow_query = self.address_list(opt.block()?, false)?,
            "allow-transfer" => o.allow_transfer = self.address_list(opt.block()?, false)?,
            "notify" => o.notify = remote::notify(opt)?,
            "also-notify" => o.also_notify = remote::servers(opt, 1, &self.remotes, 53)?,
            "max-journal-size" => o.max_journal_size = remote::journal_size(opt)?,
            "allow-notify" => o.allow_notify = Some(self.address_list(opt.block()?, false)?),
            "allow-recursion" => acls.0 = Some(self.address_list(opt.block()?, false)?),
            "allow-query-cache" => acls.1 = Some(self.address_list(opt.block()?, false)?),
            "recursion" => o.recursion = yes_no(opt)?,
            "dnssec-validation" => {
                o.dnssec_validation = match opt.single()? {
                    "auto" | "yes" | "true" | "1" => true,
                    "no" | "false" | "0" => false,
                    v => {
                        return Err(opt.error(&format!(
                            "'dnssec-validation': expected yes, no or auto, not '{v}'"
                        )))
                    }
                }
            }
            "forwarders" => o.forwarders = forwarders(opt)?,
            "forward" => match opt.single()? {
                "only" | "first" => {}
                v => return Err(opt.error(&format!("'forward' must be only or first, not '{v}'"))),
            },
            "allow-query-on" => o.allow_query_on = self.address_list(opt.block()?, false)?,
            "allow-recursion-on" => {
                o.allow_recursion_on = self.address_list(opt.block()?, false)?
            }
            "allow-query-cache-on" => {
                o.allow_query_cache_on = self.address_list(opt.block()?, false)?
            }
            // BIND's defaults are what named does; anything else would change answers.
            "minimal-responses" => match opt.single()? {
                "no-auth-recursive" => {}
                v => {
                    return Err(opt.error(&format!(
                    "minimal-responses {v} is not supported (only no-auth-recursive, the default)"
                )))
                }
            },
            "minimal-any" => {
                if yes_no(opt)? {
                    return Err(opt.error("minimal-any yes is not supported"));
                }
            }
            k if IGNORED_OPTIONS.contains(&k) => {
                self.warn(opt, &format!("option '{k}' is not supported; ignored"))
            }
            k => match REFUSED_OPTIONS.iter().find(|(name, _)| *name == k) {
                Some((_, why)) => return Err(opt.error(&format!("option '{k}': {why}"))),
                None => return Err(opt.error(&format!("unknown option '{k}'"))),
            },
        }
        Ok(())
    }

    /// `allow-recursion` and `allow-query-cache`: each defaults to the other
    /// when only one is set.
    fn recursion_acls(&self, o: &mut Options, (recursion, cache): (Option<Acl>, Option<Acl>)) {
        if let Some(acl) = recursion.clone().or_else(|| cache.clone()) {
            o.allow_recursion = acl;
        }
        if let Some(acl) = cache.or(recursion) {
            o.allow_query_cache = acl;
        }
    }

    fn listen(&self, s: &Stmt) -> Result<Listen, Error> {
        let port = match s.items.as_slice() {
            [Item::Word(_), Item::Block(_)] => None,
            [Item::Word(_), Item::Word(p), Item::Word(n), Item::Block(_)] if p == "port" => {
                Some(port(s, n)?)
            }
            _ => {
                return Err(s.error(&format!(
                    "expected: {} [port N] {{ address_match_list }};",
                    s.word(0)
                )))
            }
        };
        Ok(Listen {
            port,
            addresses: self.address_list(s.block()?, false)?,
        })
    }

    fn zone(&mut self, s: &Stmt, view: &str) -> Result<ZoneStmt, Error> {
        let name = s.word(1);
        let (class_ok, block) = match s.items.as_slice() {
            [_, Item::Word(_), Item::Block(b)] => (true, b),
            [_, Item::Word(_), Item::Word(c), Item::Block(b)] => (c.eq_ignore_ascii_case("IN"), b),
            _ => return Err(s.error("expected: zone \"NAME\" [IN] { ... };")),
        };
        if !class_ok {
            return Err(s.error(&format!("zone '{name}': only class IN is supported")));
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut kind = None;
        let mut file = None;
        let mut allow_query = None;
        let mut allow_transfer = None;
        let mut notify = None;
        let mut also_notify = None;
        let mut primaries = None;
        let mut allow_notify = None;
        let mut max_journal_size = None;
        for opt in block {
            let key = opt.keyword().unwrap_or_default();
            match key {
                "type" => kind = Some(opt.single()?.to_ascii_lowercase()),
                "primaries" | "masters" => {
                    primaries = Some(remote::servers(opt, 1, &self.remotes, 53)?)
                }
                "allow-notify" => allow_notify = Some(self.address_list(opt.block()?, false)?),
                "max-journal-size" => max_journal_size = Some(remote::journal_size(opt)?),
                "masterfile-format" => match opt.single()? {
                    "text" => {}
                    other => self.warn(
                        opt,
                        &format!("zone '{name}': masterfile-format {other}: named writes and reads zone files as text"),
                    ),
                },
                "file" => file = Some(PathBuf::from(opt.single()?)),
                "allow-query" => allow_query = Some(self.address_list(opt.block()?, false)?),
                "allow-transfer" => allow_transfer = Some(self.address_list(opt.block()?, false)?),
                "notify" => notify = Some(remote::notify(opt)?),
                "also-notify" => also_notify = Some(remote::servers(opt, 1, &self.remotes, 53)?),
                k if IGNORED_ZONE_OPTIONS.contains(&k) => self.warn(
                    opt,
                    &format!("zone '{name}': option '{k}' is not supported; ignored"),
                ),
                other => return Err(opt.error(&format!("zone '{name}': unknown option '{other}'"))),
            }
        }
        let shown = if name.is_empty() { "." } else { &name };
        let mut secondary = None;
        match kind.as_deref() {
            Some("master" | "primary") => {}
            Some("secondary" | "slave") => {
                let Some(primaries) = primaries.filter(|p| !p.is_empty()) else {
                    return Err(s.error(&format!("zone '{shown}': missing 'primaries' entry")));
                };
                secondary = Some(Secondary {
                    primaries,
                    allow_notify,
                });
            }
            Some("hint") if name.is_empty() => {
                let Some(file) = file else {
                    return Err(s.error("zone '.': missing 'file' entry"));
                };
                return Ok(ZoneStmt::Hints(file));
            }
            Some("hint") => {
                self.warn(
                    s,
                    &format!("zone '{shown}': hints are only used for the root zone; ignored"),
                );
                return Ok(ZoneStmt::Skipped);
            }
            Some(t) => return Err(s.error(&format!("zone '{shown}': type {t} is not supported"))),
            None => return Err(s.error(&format!("zone '{shown}': type not present"))),
        }
        // A secondary zone may be kept in memory only.
        let file = match file {
            Some(f) => f,
            None if secondary.is_some() => PathBuf::new(),
            None => return Err(s.error(&format!("zone '{shown}': missing 'file' entry"))),
        };
        Ok(ZoneStmt::Served(Box::new(ZoneConf {
            secondary,
            name,
            file_name: file.display().to_string(),
            file,
            allow_query,
            allow_transfer,
            notify,
            also_notify,
            max_journal_size,
            view: view.to_owned(),
            place: s.place(),
        })))
    }

    /// A `view` statement: its matching rules, options (the global ones
    /// by default) and zones, which go to `zones`.
    fn view(
        &mut self,
        s: &Stmt,
        global: &Options,
        zones: &mut Vec<ZoneConf>,
    ) -> Result<ViewConf, Error> {
        let (name, block) = match s.items.as_slice() {
            [_, Item::Word(n), Item::Block(b)] => (n.clone(), b),
            [_, Item::Word(n), Item::Word(c), Item::Block(b)] if c.eq_ignore_ascii_case("IN") => {
                (n.clone(), b)
            }
            [_, Item::Word(n), Item::Word(c), Item::Block(_)] => {
                return Err(s.error(&format!("view '{n}': class {c} is not supported")))
            }
            _ => return Err(s.error("expected: view \"NAME\" [IN] { ... };")),
        };
        let mut o = global.clone();
        let mut view = ViewConf::from_options(&name, global);
        let mut acls = (None, None);
        for opt in block {
            match opt.keyword().unwrap_or_default() {
                "match-clients" => view.match_clients = self.address_list(opt.block()?, false)?,
                "match-destinations" => {
                    view.match_destinations = self.address_list(opt.block()?, false)?
                }
                "match-recursive-only" => view.match_recursive_only = yes_no(opt)?,
                "zone" => match self.zone(opt, &name)? {
                    ZoneStmt::Served(z) => add_zone(zones, *z, opt)?,
                    ZoneStmt::Hints(h) => view.hints = Some(h),
                    ZoneStmt::Skipped => {}
                },
                key if VIEW_OPTIONS.contains(&key) || IGNORED_OPTIONS.contains(&key) => {
                    self.option(&mut o, opt, &mut acls)?
                }
                other => return Err(opt.error(&format!("view '{name}': unknown option '{other}'"))),
            }
        }
        self.recursion_acls(&mut o, acls);
        view.recursion = o.recursion;
        view.dnssec_validation = o.dnssec_validation;
        view.allow_query = o.allow_query;
        view.allow_recursion = o.allow_recursion;
        view.allow_query_cache = o.allow_query_cache;
        view.allow_query_on = o.allow_query_on;
        view.allow_recursion_on = o.allow_recursion_on;
        view.allow_query_cache_on = o.allow_query_cache_on;
        view.allow_transfer = o.allow_transfer;
        view.notify = o.notify;
        view.also_notify = o.also_notify;
        view.max_journal_size = o.max_journal_size;
        view.allow_notify = o.allow_notify;
        view.forwarders = o.forwarders;
        Ok(view)
    }

    /// An address match list; `defining` leaves unknown names for later (acl statements).
    pub(crate) fn address_list(&self, block: &[Stmt], defining: bool) -> Result<Acl, Error> {
        let mut elems = Vec::new();
        for s in block {
            let key = match s.items.as_slice() {
                [Item::Word(k), Item::Word(n)] if k == "key" => Some((false, n)),
                [Item::Word(k), Item::Word(n)] if k == "!key" => Some((true, n)),
                [Item::Word(b), Item::Word(k), Item::Word(n)] if b == "!" && k == "key" => {
                    Some((true, n))
                }
                _ => None,
            };
            if let Some((negated, name)) = key {
                elems.push((negated, Element::Key(name.clone())));
                continue;
            }
            let (negated, item) = match s.items.as_slice() {
                [Item::Word(w)] if w == "!" => return Err(s.error("'!' needs an element")),
                [Item::Word(w), Item::Block(b)] if w == "!" => (true, Item::Block(b.clone())),
                [Item::Word(w)] => match w.strip_prefix('!') {
                    Some(rest) => (true, Item::Word(rest.to_owned())),
                    None => (false, Item::Word(w.clone())),
                },
                [Item::Block(b)] => (false, Item::Block(b.clone())),
                _ => return Err(s.error("bad address match list element")),
            };
            let elem = match item {
                Item::Block(b) => Element::Nested(self.address_list(&b, defining)?),
                Item::Word(w) => match w.as_str() {
                    "any" => Element::Any,
                    "none" => Element::None,
                    "localhost" => Element::Localhost,
                    "localnets" => Element::Localnets,
                    w => match parse_net(w) {
                        Some(net) => Element::Net(net),
                        None => match self.acls.iter().find(|(n, _)| n == w) {
                            Some((_, acl)) => Element::Nested(acl.clone()),
                            None if defining => Element::Named(w.to_owned()),
                            None => return Err(s.error(&format!("undefined ACL '{w}'"))),
                        },
                    },
                },
            };
            elems.push((negated, elem));
        }
        let mut acl = Acl::new(elems);
        if !defining {
            acl = acl.resolve(&self.acls).map_err(|n| match block.first() {
                Some(s) => s.error(&n.to_string()),
                None => Error::Acl(n),
            })?;
        }
        Ok(acl)
    }
}

fn parse_net(w: &str) -> Option<ipnet::IpNet> {
    if let Ok(n) = w.parse::<ipnet::IpNet>() {
        return Some(n.trunc());
    }
    // BIND also takes short IPv4 prefixes: 10/8, 192.168/16.
    if let Some((addr, len)) = w.split_once('/') {
        let parts: Vec<&str> = addr.split('.').collect();
        if parts.len() < 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
            let mut full = parts.join(".");
            for _ in parts.len()..4 {
                full.push_str(".0");
            }
            return format!("{full}/{len}")
                .parse::<ipnet::IpNet>()
                .ok()
                .map(|n| n.trunc());
        }
    }
    w.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
}

/// A duration in minutes as BIND takes it: a number, or an ISO 8601
/// duration (`PT30M`, `P1D`); at most 28 days.
fn duration_minutes(s: &Stmt) -> Result<u32, Error> {
    let v = s.single()?;
    let bad = || s.error(&format!("'{}': invalid duration '{v}'", s.word(0)));
    let minutes = match v.parse::<u32>() {
        Ok(m) => m,
        Err(_) => {
            let upper = v.to_ascii_uppercase();
            let rest = upper.strip_prefix('P').ok_or_else(bad)?;
            let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
            let mut secs: u64 = 0;
            for (part, units) in [
                (date, &[('W', 604_800u64), ('D', 86_400)][..]),
                (time, &[('H', 3600), ('M', 60), ('S', 1)][..]),
            ] {
                let mut num = String::new();
                for c in part.chars() {
                    if c.is_ascii_digit() {
                        num.push(c);
                    } else {
                        let unit = units.iter().find(|(u, _)| *u == c).ok_or_else(bad)?.1;
                        secs += num.parse::<u64>().map_err(|_| bad())? * unit;
                        num.clear();
                    }
                }
                if !num.is_empty() {
                    return Err(bad());
                }
            }
            u32::try_from(secs / 60).map_err(|_| bad())?
        }
    };
    if minutes > 28 * 24 * 60 {
        return Err(s.error(&format!("'{}' is too large", s.word(0))));
    }
    Ok(minutes)
}

/// A `cookie-secret`: 128 bits in hex, as SipHash-2-4 needs.
fn cookie_secret(s: &Stmt) -> Result<[u8; 16], Error> {
    let hex = s.single()?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    bytes
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| s.error("cookie-secret: incorrect length"))
}

/// BIND's default for `allow-recursion` and `allow-query-cache`.
fn local_default() -> Acl {
    Acl::new(vec![
        (false, Element::Localhost),
        (false, Element::Localnets),
    ])
}

/// A value whose `none` turns the feature off.
fn none_or(v: &str, value: impl FnOnce(&str) -> String) -> Option<String> {
    (v != "none").then(|| value(v))
}

/// The host's name, as BIND takes it for `hostname.bind`.
fn host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
}

fn yes_no(s: &Stmt) -> Result<bool, Error> {
    match s.single()? {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        v => Err(s.error(&format!("'{}': expected yes or no, not '{v}'", s.word(0)))),
    }
}

fn port(s: &Stmt, n: &str) -> Result<u16, Error> {
    n.parse()
        .map_err(|_| s.error(&format!("invalid port '{n}'")))
}

/// `forwarders [port N] { addr [port N]; ... };`
fn forwarders(s: &Stmt) -> Result<Vec<SocketAddr>, Error> {
    let default_port = match s.items.as_slice() {
        [Item::Word(_), Item::Block(_)] => DNS_PORT,
        [Item::Word(_), Item::Word(p), Item::Word(n), Item::Block(_)] if p == "port" => port(s, n)?,
        _ => return Err(s.error("expected: forwarders [port N] { address [port N]; ... };")),
    };
    let mut out = Vec::new();
    for f in s.block()? {
        let addr = f.word(0);
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| f.error(&format!("'{addr}' is not an IP address")))?;
        let p = match f.items.as_slice() {
            [Item::Word(_)] => default_port,
            [Item::Word(_), Item::Word(k), Item::Word(n)] if k == "port" => port(f, n)?,
            _ => return Err(f.error("expected: address [port N];")),
        };
        out.push(SocketAddr::new(ip, p));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Result<NamedConf, Error> {
        parse(Path::new("/etc/named.conf"), text)
    }

    #[test]
    fn the_seed_configuration() {
        let c = conf(
            r#"
// comment
options {
    listen-on port 5353 { 127.0.0.1; };   # another
    listen-on-v6 { none; };
    directory "/var/named";
    allow-query { any; };
    recursion no;
    pid-file "/run/named.pid";
};
/* a
   block comment */
zone "ywnds.com" IN {
    type master;
    file "ywnds.com.zone";
    allow-query { 127.0.0.0/8; !10/8; };
};
zone "0.0.127.in-addr.arpa." { type primary; file "/abs/reverse.zone"; };
"#,
        )
        .unwrap();
        let o = &c.options;
        assert_eq!(o.listen_on.len(), 1);
        assert_eq!(o.listen_on[0].port, Some(5353));
        assert_eq!(o.directory, PathBuf::from("/var/named"));
        assert!(!o.recursion);
        assert_eq!(o.pid_file, Some(PathBuf::from("/run/named.pid")));
        assert_eq!(c.zones.len(), 2);
        assert_eq!(c.zones[0].name, "ywnds.com");
        assert_eq!(c.zones[0].file, PathBuf::from("/var/named/ywnds.com.zone"));
        assert_eq!(c.zones[0].place, "/etc/named.conf:13");
        assert_eq!(c.zones[1].name, "0.0.127.in-addr.arpa");
        assert_eq!(c.zones[1].file, PathBuf::from("/abs/reverse.zone"));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn forwarders_and_ports() {
        let c = conf(
            "options { recursion yes; forwarders port 5300 { 127.0.0.2; 127.0.0.3 port 54; }; forward only; };",
        )
        .unwrap();
        assert_eq!(
            c.options.forwarders,
            vec![
                "127.0.0.2:5300".parse().unwrap(),
                "127.0.0.3:54".parse().unwrap()
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("options {\n  bogus yes;\n};", "/etc/named.conf:2: unknown option 'bogus'"),
            ("options {\n  recursion no\n};", "/etc/named.conf:3: missing ';' before '}'"),
            ("zone \"x\" {\n type slave; file \"f\"; };", "/etc/named.conf:1: zone 'x': missing 'primaries' entry"),
            ("zone \"x\" {\n type stub; file \"f\"; };", "/etc/named.conf:1: zone 'x': type stub is not supported"),
            ("zone \"x\" { type master; };", "/etc/named.conf:1: zone 'x': missing 'file' entry"),
            ("options {\n recursion maybe; };", "/etc/named.conf:2: 'recursion': expected yes or no, not 'maybe'"),
            ("options { allow-query { friends; }; };", "/etc/named.conf:1: undefined ACL 'friends'"),
            ("options {\n", "/etc/named.conf:1: '}' expected near end of file"),
            ("\n\n\"open", "/etc/named.conf:3: unterminated quoted string"),
            ("zone \"x\" { type master; file \"a\"; };\nzone \"X.\" { type master; file \"b\"; };",
             "/etc/named.conf:2: zone 'x': already exists previous definition: /etc/named.conf:1"),
            ("zone \"a\" { type master; file \"a\"; }\nzone \"b\" { type master; file \"b\"; };",
             "/etc/named.conf:1: missing ';' after '}'"),
        ];
        for (text, want) in cases {
            assert_eq!(conf(text).unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn unsupported_but_harmless_options_warn() {
        let c = conf(
            "options {\n dnssec-validation auto;\n};\nlogging { channel x { stderr; }; };\nzone \".\" { type hint; file \"root.hints\"; };",
        )
        .unwrap();
        assert_eq!(c.warnings, Vec::<String>::new());
        assert!(c.zones.is_empty());
        assert_eq!(c.views[0].hints, Some(PathBuf::from("/etc/root.hints")));
        let c = conf(
            "options { allow-query-cache { 10/8; }; };
zone \"x\" { type hint; file \"h\"; };",
        )
        .unwrap();
        // allow-recursion follows allow-query-cache when only that is set.
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        let local = crate::acl::Local::default();
        assert!(c.options.allow_recursion.allows(ten, &local));
        assert!(c.options.allow_query_cache.allows(ten, &local));
        assert_eq!(
            c.warnings,
            vec!["/etc/named.conf:2: zone 'x': hints are only used for the root zone; ignored"]
        );
    }

    #[test]
    fn views_take_their_zones_and_the_global_options() {
        let c = conf(
            "options { directory \"/var/named\"; recursion no; allow-query { 127.0.0.0/8; }; };\n\
             view \"internal\" {\n match-clients { 127.0.0.1; };\n recursion yes;\n allow-recursion { any; };\n\
             zone \"ywnds.com\" { type master; file \"internal.zone\"; };\n zone \".\" { type hint; file \"root.hints\"; };\n};\n\
             view external IN {\n match-destinations { 127.0.0.3; };\n match-recursive-only yes;\n\
             zone \"ywnds.com\" { type master; file \"external.zone\"; };\n};\n",
        )
        .unwrap();
        assert_eq!(c.views.len(), 2);
        let (i, e) = (&c.views[0], &c.views[1]);
        let local = crate::acl::Local::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(i.name, "internal");
        assert!(i.match_clients.allows(ip("127.0.0.1"), &local));
        assert!(!i.match_clients.allows(ip("127.0.0.2"), &local));
        assert!(i.recursion && !e.recursion);
        assert!(i.allow_recursion.allows(ip("10.0.0.1"), &local));
        assert!(i.allow_query_cache.allows(ip("10.0.0.1"), &local));
        assert!(!i.allow_query.allows(ip("10.0.0.1"), &local));
        assert_eq!(i.hints, Some(PathBuf::from("/var/named/root.hints")));
        assert!(e.match_recursive_only);
        assert!(e.match_destinations.allows(ip("127.0.0.3"), &local));
        assert!(!e.match_destinations.allows(ip("127.0.0.1"), &local));
        let files: Vec<_> = e.zones(&c).map(|z| z.file.clone()).collect();
        assert_eq!(files, [PathBuf::from("/var/named/external.zone")]);
        assert_eq!(c.zones.len(), 2);

        let d = conf("zone \"x\" { type master; file \"x\"; };").unwrap();
        assert_eq!(d.views.len(), 1);
        assert_eq!(d.views[0].name, DEFAULT_VIEW);
        assert_eq!(d.zones[0].view, DEFAULT_VIEW);

        let cases = [
            ("zone \"x\" { type master; file \"x\"; };\nview v { };", "/etc/named.conf:1: when using 'view' statements, all zones must be in views"),
            ("view v { };\nview v { };", "/etc/named.conf:2: view 'v': already exists"),
            ("view v {\n listen-on { any; };\n};", "/etc/named.conf:2: view 'v': unknown option 'listen-on'"),
            ("view v { zone x { type master; file a; };\n zone x { type master; file b; }; };", "/etc/named.conf:2: zone 'x': already exists previous definition: /etc/named.conf:1"),
        ];
        for (text, want) in cases {
            assert_eq!(conf(text).unwrap_err().to_string(), want, "{text}");
        }
        // One zone name in two views is fine.
        assert!(conf("view a { zone x { type master; file a; }; };\nview b { zone x { type master; file b; }; };").is_ok());
    }

    #[test]
    fn interface_interval_in_minutes_or_iso_8601() {
        let m = |t: &str| conf(t).map(|c| c.options.interface_interval);
        assert_eq!(m("").unwrap(), 60);
        assert_eq!(m("options { interface-interval 5; };").unwrap(), 5);
        assert_eq!(m("options { interface-interval 0; };").unwrap(), 0);
        assert_eq!(m("options { interface-interval PT2H30M; };").unwrap(), 150);
        assert_eq!(m("options { interface-interval P1D; };").unwrap(), 1440);
        assert_eq!(
            m("options {\n interface-interval soon;\n};")
                .unwrap_err()
                .to_string(),
            "/etc/named.conf:2: 'interface-interval': invalid duration 'soon'"
        );
    }

    #[test]
    fn options_that_would_change_answers_are_refused_and_tuning_is_not() {
        let cases = [
            ("options {\n response-policy { zone \"rpz\"; };\n};", "/etc/named.conf:2: option 'response-policy': response policy zones are not supported"),
            ("options {\n rate-limit { responses-per-second 5; };\n};", "/etc/named.conf:2: option 'rate-limit': response rate limiting is not supported"),
            ("options {\n minimal-responses yes;\n};", "/etc/named.conf:2: minimal-responses yes is not supported (only no-auth-recursive, the default)"),
            ("options {\n minimal-any yes;\n};", "/etc/named.conf:2: minimal-any yes is not supported"),
            ("options {\n dns64 64:ff9b::/96 { };\n};", "/etc/named.conf:2: option 'dns64': DNS64 synthesis is not supported"),
        ];
        for (text, want) in cases {
            assert_eq!(conf(text).unwrap_err().to_string(), want, "{text}");
        }
        let c = conf(
            "options { max-cache-ttl 60; tcp-idle-timeout 100; blackhole { 10/8; }; port 5300; allow-query-on { 127.0.0.1; }; };",
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2);
        assert_eq!(c.options.port, Some(5300));
        let local = crate::acl::Local::default();
        assert!(c
            .options
            .blackhole
            .allows("10.1.1.1".parse().unwrap(), &local));
        assert!(!conf("")
            .unwrap()
            .options
            .blackhole
            .allows("10.1.1.1".parse().unwrap(), &local));
        assert!(!c
            .options
            .allow_query_on
            .allows("127.0.0.2".parse().unwrap(), &local));
    }

    #[test]
    fn dnssec_validation_defaults_to_on_as_in_bind() {
        let v =
            |t: &str| conf(t).map(|c| (c.options.dnssec_validation, c.views[0].dnssec_validation));
        assert_eq!(v("").unwrap(), (true, true));
        assert_eq!(
            v("options { dnssec-validation no; };").unwrap(),
            (false, false)
        );
        assert_eq!(
            v("options { dnssec-validation auto; };").unwrap(),
            (true, true)
        );
        let c = conf("view a { dnssec-validation no; };").unwrap();
        assert!(!c.views[0].dnssec_validation);
        assert_eq!(
            v("options {\n dnssec-validation maybe;\n};")
                .unwrap_err()
                .to_string(),
            "/etc/named.conf:2: 'dnssec-validation': expected yes, no or auto, not 'maybe'"
        );
    }

    #[test]
    fn cookie_options() {
        let c = conf(
            "options {\n answer-cookie no;\n require-server-cookie yes;\n\
             cookie-secret \"000102030405060708090a0b0c0d0e0f\";\n cookie-secret \"ffffffffffffffffffffffffffffffff\";\n};",
        )
        .unwrap();
        let o = &c.options;
        assert!(!o.answer_cookie && o.require_server_cookie);
        assert_eq!(o.cookie_secret.unwrap()[15], 0x0f);
        let d = conf("").unwrap().options;
        assert!(d.answer_cookie && !d.require_server_cookie && d.cookie_secret.is_none());
        assert_eq!(
            conf("options {\n cookie-secret \"0011\";\n};")
                .unwrap_err()
                .to_string(),
            "/etc/named.conf:2: cookie-secret: incorrect length"
        );
    }

    #[test]
    fn version_hostname_and_server_id_answer_or_not() {
        let c = conf("options {\n version \"9.18\";\n hostname none;\n server-id \"ns1\";\n};")
            .unwrap();
        let o = &c.options;
        assert_eq!(
            (
                o.version.as_deref(),
                o.hostname.as_deref(),
                o.server_id.as_deref()
            ),
            (Some("9.18"), None, Some("ns1"))
        );
        let d = conf("").unwrap();
        assert!(d.options.version.unwrap().starts_with("postfix-rs named "));
        assert_eq!(d.options.server_id, None);
    }

    #[test]
    fn includes_and_acls() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("zones.conf"),
            "zone \"ywnds.com\" { type master; file \"z\"; allow-query { trusted; }; };",
        )
        .unwrap();
        let main = dir.path().join("named.conf");
        std::fs::write(
            &main,
            "include \"zones.conf\";\nacl trusted { 127.0.0.0/8; ::1; };\noptions { directory \".\"; };",
        )
        .unwrap();
        let c = load(&main).unwrap();
        assert_eq!(c.zones[0].file, dir.path().join("./z"));
        let acl = c.zones[0].allow_query.as_ref().unwrap();
        let local = crate::acl::Local::default();
        assert!(acl.allows("127.0.0.9".parse().unwrap(), &local));
        assert!(!acl.allows("10.0.0.1".parse().unwrap(), &local));

        // include inside a block; controls as rndc-confgen prints it.
        std::fs::write(dir.path().join("opts.conf"), "recursion no;\n").unwrap();
        std::fs::write(
            &main,
            "options {\n directory \".\";\n include \"opts.conf\";\n};\n\
             key \"rndc-key\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };\n\
             controls {\n inet 127.0.0.1 port 953\n  allow { 127.0.0.1; } keys { \"rndc-key\"; };\n};\n",
        )
        .unwrap();
        let c = load(&main).unwrap();
        assert!(!c.options.recursion);

        std::fs::write(&main, "include \"missing.conf\";").unwrap();
        let e = load(&main).unwrap_err().to_string();
        assert!(e.ends_with("missing.conf: file not found"), "{e}");
        assert!(
            e.starts_with(&format!("{}:1: open: ", main.display())),
            "{e}"
        );
    }
}
