//! One delivery request: each recipient through aliases to mailboxes,
//! files, commands or forwarding, with Postfix's statuses and log lines.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use pfx_config::{BuildError, Config};
use pfx_ipc::proto::{CleanupReply, DeliveryRequest, Origin};
use pfx_maillog::delivery::{Class, Outcome};
use pfx_maps::passwd::{Passwd, User};
use pfx_maps::MapList;
use pfx_queue::file::QueueFile;
use pfx_queue::Queue;
use tracing::{info, warn};

use pfx_mailbox::{Limit, MboxOptions, Message};

/// How deep aliases may nest before we call it a loop.
const MAX_ALIAS_DEPTH: usize = 100;

/// local's view of one configuration version, built once and shared by
/// every delivery (the alias database is re-read only when it changes).
pub(crate) struct Settings {
    queue_dir: PathBuf,
    passwd: Passwd,
    aliases: MapList,
    mydestination: pfx_address::DomainList,
    myorigin: String,
    recipient_delimiter: String,
    /// `mailbox_size_limit`; 0: none.
    mailbox_size_limit: u64,
    home_mailbox: String,
    mail_spool_directory: PathBuf,
    /// Who writes to files and commands named in the alias database.
    default_privs: String,
    /// The alias classes (`alias`, `forward`, `include`) allowed to write
    /// to commands and to files.
    mail_to_commands: Vec<String>,
    mail_to_files: Vec<String>,
    /// `forward_path`: where a user's `.forward` may be (templates).
    forward_path: Vec<String>,
    forward_filter: String,
    /// `mailbox_transport`, `mailbox_command` (run as it is: the shell
    /// sees `$HOME`, `$EXTENSION`... in the environment),
    /// `fallback_transport`, `luser_relay` (the last two for users not in
    /// the passwd database).
    mailbox_transport: String,
    mailbox_command: String,
    fallback_transport: String,
    luser_relay: String,
    /// The per-user forms, looked up by user name first.
    mailbox_transport_maps: MapList,
    mailbox_command_maps: MapList,
    fallback_transport_maps: MapList,
    /// `command_expansion_filter`, `command_time_limit`, and the
    /// environment commands get (`export_environment`, PATH).
    command_filter: String,
    command_time_limit: std::time::Duration,
    command_env: Vec<(String, String)>,
    /// `owner_request_special`, `expand_owner_alias`: a list `name` with an
    /// `owner-name` alias is sent from its owner.
    owner_request_special: bool,
    expand_owner_alias: bool,
    /// `myhostname` and `mail_name`, for the `Received:` header of mail
    /// local sends on.
    myhostname: String,
    mail_name: String,
}

impl Settings {
    pub(crate) fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let passwd = Passwd::new(Some(cfg.get("local_passwd_file")?.into()));
        let raw = |name: &str| cfg.raw(name).unwrap_or_default();
        let postmap = |name: &str| -> Result<MapList, BuildError> {
            Ok(MapList::parse(&cfg.list(name)?, &Passwd::default())?)
        };
        Ok(Self {
            queue_dir: cfg.get("queue_directory")?.into(),
            aliases: MapList::parse(&cfg.list("alias_maps")?, &passwd)?,
            passwd,
            mydestination: pfx_address::DomainList::new(&cfg.list("mydestination")?),
            myorigin: cfg.get("myorigin")?,
            recipient_delimiter: cfg.get("recipient_delimiter")?,
            mailbox_size_limit: cfg.count("mailbox_size_limit")?,
            home_mailbox: cfg.get("home_mailbox")?,
            mail_spool_directory: cfg.get("mail_spool_directory")?.into(),
            default_privs: cfg.get("default_privs")?,
            mail_to_commands: cfg.list("allow_mail_to_commands")?,
            mail_to_files: cfg.list("allow_mail_to_files")?,
            // Expanded per recipient ($home, $user, ...), not as main.cf.
            forward_path: pfx_config::value::split_list(&raw("forward_path")),
            forward_filter: cfg.get("forward_expansion_filter")?,
            mailbox_transport: cfg.get("mailbox_transport")?,
            mailbox_command: raw("mailbox_command"),
            fallback_transport: cfg.get("fallback_transport")?,
            luser_relay: raw("luser_relay"),
            mailbox_transport_maps: postmap("mailbox_transport_maps")?,
            mailbox_command_maps: postmap("mailbox_command_maps")?,
            fallback_transport_maps: postmap("fallback_transport_maps")?,
            command_filter: cfg.get("command_expansion_filter")?,
            command_time_limit: cfg.time("command_time_limit")?,
            command_env: {
                let mut env: Vec<(String, String)> = cfg
                    .list("export_environment")?
                    .into_iter()
                    .filter_map(|n| match n.split_once('=') {
                        Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                        None => std::env::var(&n).ok().map(|v| (n, v)),
                    })
                    .collect();
                env.push(("PATH".into(), "/usr/bin:/bin".into()));
                env
            },
            owner_request_special: cfg.bool("owner_request_special")?,
            expand_owner_alias: cfg.bool("expand_owner_alias")?,
            myhostname: cfg.get("myhostname")?,
            mail_name: cfg.get("mail_name")?,
        })
    }
}

struct Ctx<'a> {
    st: &'a Settings,
    /// The envelope sender: qmgr's request's, or a list's owner.
    sender: String,
    /// Postfix's owner attribute: the owner of the list being expanded
    /// (`owner-name@$myorigin`), or the user whose `.forward` or
    /// `:include:` file it is. Local users it lists, other than itself,
    /// get the message as a new one (`forwarded as ID`).
    owner: Option<String>,
    /// What is being expanded: `alias`, `forward`, `include`, or nothing
    /// at the top.
    class: &'static str,
    /// A list with an owner: its addresses start a new envelope, without
    /// the original recipient or ORCPT.
    fresh: bool,
    qf: &'a QueueFile,
    /// The delivery's queue file, for finding an earlier copy of it.
    origin: pfx_mailbox::Origin<'a>,
    delivered_to: Vec<String>,
    forward: Vec<Forward>,
    /// Each final delivery, for its own log line: (address, outcome).
    leaves: Vec<(String, Outcome)>,
    /// Deliveries handed to another transport (`mailbox_transport`,
    /// `fallback_transport`), made and logged by its agent.
    passes: Vec<Pass>,
    /// Whose rights commands and files get: `None` for alias database
    /// entries (its owner, or `default_privs`), the user for a `.forward`.
    rights: Option<Rights>,
    /// `.forward` files being expanded (a user who names herself there
    /// gets her mailbox).
    forwarding: HashSet<PathBuf>,
    /// Whether the recipient went through an alias or a `.forward`: its
    /// success is then `expanded`, and its addresses do not report theirs.
    expanded: bool,
    /// The recipient is a list with an owner: its success is `delivered`.
    owned: bool,
}

/// A delivery for another agent: (address, original, transport, next hop).
type Pass = (String, String, String, String);

/// An address that gets the message as a new one, from `sender`; `fresh`:
/// without the original recipient and ORCPT (a list with an owner).
#[derive(Clone)]
struct Forward {
    sender: String,
    address: String,
    fresh: bool,
}

/// A user's rights and attributes, for commands and files.
#[derive(Clone)]
struct Rights {
    /// The user's own ids: what her `.forward` and `:include:` files are
    /// opened with.
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

impl Rights {
    fn of(user: &User) -> Self {
        Self {
            uid: user.uid,
            gid: user.gid,
            home: user.home.display().to_string(),
            shell: user.shell.clone(),
        }
    }

    /// The ids commands and files run with: a root uid or gid is replaced
    /// by `default_privs`'s, each on its own, as Postfix's local does.
    fn delivery(&self, default_privs: &str) -> (u32, u32) {
        if self.uid != 0 && self.gid != 0 {
            return (self.uid, self.gid);
        }
        let (duid, dgid) = match pfx_sys::users::user(default_privs) {
            Ok(ids) => (ids.uid.as_raw(), ids.gid.as_raw()),
            Err(_) => (65534, 65534),
        };
        (
            if self.uid == 0 { duid } else { self.uid },
            if self.gid == 0 { dgid } else { self.gid },
        )
    }
}

fn sent(text: impl Into<String>) -> Outcome {
    Outcome::sent("local", text)
}

fn bounce(dsn: &str, reason: impl Into<String>) -> Outcome {
    Outcome::failed(false, dsn, "local", reason)
}

/// A deferral with its own status (`4.3.5 mail system configuration error`).
fn defer_dsn(dsn: &str, reason: impl Into<String>) -> Outcome {
    Outcome::failed(true, dsn, "local", reason)
}

fn defer(reason: impl Into<String>) -> Outcome {
    Outcome::failed(true, "4.3.0", "local", reason)
}

/// A mailbox or file write that failed, with `what` in front: a full
/// mailbox is permanent (5.2.2); anything else may clear up.
fn write_failed(what: String, e: &pfx_mailbox::Error) -> Outcome {
    let too_large = e.is_too_large();
    let dsn = if too_large { "5.2.2" } else { "4.2.0" };
    Outcome::failed(!too_large, dsn, "local", format!("{what}{e}"))
}

/// Appends to the mbox file at `path` (the mailbox, or a `/file` alias target).
fn mbox(path: &Path, m: &mut Message<'_>) -> Result<(), Outcome> {
    pfx_mailbox::mbox(path, m, &MboxOptions::default())
        .map_err(|e| write_failed(format!("cannot update mailbox {}. ", path.display()), &e))
}

/// Each final delivery of one recipient, with its outcome.
type Leaves = Vec<(String, Outcome)>;
/// Per recipient: outcome, leaves, passes to other transports and whether
/// it was expanded; per recipient: the addresses that get it anew; the
/// queue file.
type Expanded = (
    Vec<(Outcome, Leaves, Vec<Pass>, (bool, bool))>,
    Vec<Vec<Forward>>,
    QueueFile,
);

/// Opens the queue file and delivers to each recipient's mailbox, alias
/// or forward file: the file work of a request, which blocks its thread.
fn deliver_files(
    st: &Settings,
    req: &DeliveryRequest,
    path: &std::path::Path,
) -> Result<Expanded, String> {
    let qf = QueueFile::open_for_delivery(path).map_err(|e| e.to_string())?;
    let mut ctx = Ctx {
        st,
        sender: req.sender.clone(),
        owner: None,
        class: "",
        fresh: false,
        qf: &qf,
        origin: pfx_mailbox::Origin {
            queue_id: &req.queue_id,
            arrival_us: req.arrival_us,
            recipient: "",
        },
        delivered_to: Vec::new(),
        forward: Vec::new(),
        leaves: Vec::new(),
        passes: Vec::new(),
        rights: None,
        forwarding: HashSet::new(),
        expanded: false,
        owned: false,
    };
    ctx.delivered_to = delivered_to_headers(&qf);
    let mut results = Vec::new();
    let mut forwards = Vec::new();
    for r in &req.recipients {
        ctx.forward.clear();
        ctx.leaves.clear();
        ctx.expanded = false;
        ctx.owned = false;
        ctx.origin.recipient = &r.address;
        let mut seen = HashSet::new();
        // X-Original-To: is the recipient as first given (`hadoop`).
        let top = r.original.as_deref().unwrap_or(&r.address);
        let res = ctx.recipient(&r.address, top, 0, &mut seen);
        forwards.push(std::mem::take(&mut ctx.forward));
        results.push((
            res,
            std::mem::take(&mut ctx.leaves),
            std::mem::take(&mut ctx.passes),
            (ctx.expanded, ctx.owned),
        ));
    }
    Ok((results, forwards, qf))
}

/// Delivers every recipient of the request and logs each outcome.
pub(crate) async fn request(st: &Arc<Settings>, req: &DeliveryRequest) -> Vec<Outcome> {
    let start = SystemTime::now();
    let queue = Queue::new(&st.queue_dir);
    let path = queue.path(req.queue, &req.queue_id);
    // The file work blocks this connection's own thread (and switches its
    // file-system ids, which are per thread): see serve_deliveries_on_threads.
    let work = deliver_files(st, req, &path);
    let (results, forwards, qf) = match work {
        Ok(x) => x,
        Err(e) => {
            warn!("{}: {e}", req.queue_id);
            return req.recipients.iter().map(|_| defer(e.clone())).collect();
        }
    };
    let mut statuses = Vec::new();
    let results = req.recipients.iter().zip(results).zip(forwards);
    for ((r, (res, mut leaves, passes, (expanded, owned))), fwd) in results {
        // An alias's addresses leave NOTIFY=SUCCESS to the alias.
        let notify = if expanded {
            pfx_queue::file::notify::inherited(r.notify)
        } else {
            r.notify
        };
        // Handed to another transport: its agent delivers and logs.
        let mut res = res;
        let passed = !passes.is_empty();
        for (to, orig, transport, nexthop) in passes {
            let v = pass(st, req, r, notify, (&to, &orig), &transport, &nexthop).await;
            if v.class != Class::Sent
                && (res.class == Class::Sent || (v.is_temporary() && !res.is_temporary()))
            {
                res = v;
            } else if v.class == Class::Sent && res.class == Class::Sent && !expanded {
                // The mailbox transport's delivery is the recipient's.
                res = v;
            }
        }
        // Addresses that get the message anew: one new message per
        // sender, as Postfix's local sends them. A bounced address does
        // not stop the others; a deferred one does (the retry sends them),
        // and so does the first new message that cannot be queued.
        let res = if !res.is_temporary() && !fwd.is_empty() {
            let mut res = res;
            let mut senders: Vec<&str> = Vec::new();
            for f in &fwd {
                if !senders.contains(&f.sender.as_str()) {
                    senders.push(&f.sender);
                }
            }
            for sender in senders {
                let group: Vec<&Forward> = fwd.iter().filter(|f| f.sender == sender).collect();
                let v = forward(st, &qf, req, (notify, r), &group).await;
                // One line per new message, for the recipient, as Postfix logs it.
                leaves.push((r.address.clone(), v.clone()));
                if v.class != Class::Sent {
                    if res.class == Class::Sent || v.is_temporary() {
                        res = v;
                    }
                    break;
                }
            }
            res
        } else {
            res
        };
        if leaves.is_empty() && !passed {
            leaves.push((r.address.clone(), res.clone()));
        }
        // One line per final delivery, with the address it was sent to as orig_to.
        let orig = r.original.clone().unwrap_or_else(|| r.address.clone());
        for (to, v) in &leaves {
            let t = req.times(start, start);
            info!("{}: {}", req.queue_id, v.line(to, Some(&orig), t));
        }
        let mut res = res;
        if res.class == Class::Sent && expanded {
            // As Postfix's local: one success for the alias, `expanded`,
            // or `delivered` for a list with an owner (a new envelope).
            res.reason = "alias expanded".into();
            res.relay = "local".into();
            res.action = if owned {
                pfx_maillog::delivery::Action::Delivered
            } else {
                pfx_maillog::delivery::Action::Expanded
            };
        }
        if res.class == Class::Bounced {
            // The notice names the alias target that failed.
            res.final_recipient = leaves
                .iter()
                .find(|(_, v)| v.class == Class::Bounced)
                .map(|(to, _)| to.clone());
        }
        statuses.push(res);
    }
    statuses
}

/// A per-user table's answer (`mailbox_transport_maps`...): a table that
/// cannot answer defers the recipient, as Postfix's local does.
fn lookup(maps: &MapList, user: &str) -> Result<Option<String>, Outcome> {
    if maps.is_empty() {
        return Ok(None);
    }
    maps.lookup(user).map_err(|e| {
        warn!("{e}");
        defer("table lookup failure")
    })
}

/// `Delivered-To:` values in the message header, lowercased (loop detection).
fn delivered_to_headers(qf: &QueueFile) -> Vec<String> {
    let mut head = Vec::new();
    if let Ok(c) = qf.content() {
        let _ = c.take(128 * 1024).read_to_end(&mut head);
    }
    let text = String::from_utf8_lossy(&head);
    let header_end = text.find("\n\n").unwrap_or(text.len());
    text[..header_end]
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("delivered-to"))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        })
        .collect()
}

/// A class in `allow_mail_to_commands` / `allow_mail_to_files`.
fn allowed(classes: &[String], class: &str) -> bool {
    classes.iter().any(|c| c == class)
}

impl Ctx<'_> {
    fn local_part(&self, addr: &str) -> (String, String) {
        let (local, domain) = pfx_address::split(addr);
        (pfx_address::unquote(local), domain.to_ascii_lowercase())
    }

    fn recipient(
        &mut self,
        addr: &str,
        top: &str,
        depth: usize,
        seen: &mut HashSet<String>,
    ) -> Outcome {
        if depth > MAX_ALIAS_DEPTH {
            return bounce("5.4.6", format!("mail forwarding loop for {top}"));
        }
        // At every level, as Postfix's local: an address the message was
        // delivered to before (a `Delivered-To:` header) is a loop.
        let to = self.qualify(addr);
        if self.delivered_to.contains(&to.to_ascii_lowercase()) {
            let v = bounce("5.4.6", format!("mail forwarding loop for {to}"));
            self.leaves.push((to, v.clone()));
            return v;
        }
        let (local, _) = self.local_part(addr);
        let name = local.to_ascii_lowercase();
        let delim = &self.st.recipient_delimiter;
        let base = delim
            .chars()
            .next()
            .and_then(|d| name.split_once(d))
            .map(|(b, _)| b.to_owned());
        // An alias that includes itself means the user's own mailbox.
        if seen.insert(name.clone()) {
            let found = match self.st.aliases.lookup_owned(&name) {
                Ok(Some(v)) => Some((name.clone(), v)),
                Ok(None) => match &base {
                    Some(b) => match self.st.aliases.lookup_owned(b) {
                        Ok(v) => v.map(|v| (b.clone(), v)),
                        Err(e) => return defer(format!("alias database unavailable: {e}")),
                    },
                    None => None,
                },
                Err(e) => return defer(format!("alias database unavailable: {e}")),
            };
            if let Some((matched, (value, table_owner, table))) = found {
                self.expanded = true;
                let rights = match self.alias_rights(table_owner, table) {
                    Ok(r) => r,
                    Err(v) => return v,
                };
                let list_owner = match self.list_owner(&matched) {
                    Ok(o) => o,
                    Err(v) => return v,
                };
                let saved = (
                    std::mem::replace(&mut self.rights, rights),
                    self.sender.clone(),
                    self.owner.clone(),
                    self.class,
                    self.fresh,
                );
                self.class = "alias";
                if let Some(o) = list_owner {
                    // A list with an owner: sent from its owner, as new mail.
                    self.owned |= depth == 0;
                    self.sender = o.clone();
                    self.owner = Some(o);
                    self.fresh = true;
                }
                let v = self.expand(&value, top, depth, seen, "alias");
                (self.rights, self.sender, self.owner, self.class, self.fresh) = saved;
                return v;
            }
        }
        let user_name = base.unwrap_or(name);
        // As Postfix's local: a user listed by a list with an owner, by
        // another user's `.forward`, or in an `:include:` file gets the
        // message as a new one, so that each has its own queue file record.
        let listed_by_other = self
            .owner
            .as_deref()
            .is_some_and(|o| !o.eq_ignore_ascii_case(&user_name));
        if self.class == "include" || listed_by_other {
            return self.send_on(self.qualify(addr));
        }
        let v = match self.st.passwd.lookup(&user_name) {
            Ok(Some(user)) => {
                if let Some(v) = self.dot_forward(&user, addr, top, depth, seen) {
                    return v;
                }
                return self.mailbox(&user, addr, top);
            }
            Ok(None) => {
                // Postfix's mailbox transport takes every recipient, known
                // to the passwd database or not.
                match self.mailbox_transport(&user_name) {
                    Ok(Some(spec)) => return self.pass(&spec, &to, top),
                    Ok(None) => return self.unknown(addr, top, &user_name, depth, seen),
                    Err(v) => v,
                }
            }
            Err(e) => defer(format!("user lookup: {e}")),
        };
        self.leaves.push((to, v.clone()));
        v
    }

    /// The recipient's attributes for `$name` expansion.
    fn attrs(
        &self,
        addr: &str,
        user: &str,
        rights: Option<&Rights>,
    ) -> Vec<(&'static str, String)> {
        let (local, domain) = self.local_part(addr);
        let delim = &self.st.recipient_delimiter;
        let mut v = vec![
            ("user", user.to_owned()),
            ("local", local.clone()),
            ("mailbox", local.clone()),
            ("domain", domain),
            ("recipient", self.qualify(addr)),
        ];
        let rest = &local[user.len().min(local.len())..];
        if let Some(d) = rest.chars().next().filter(|d| delim.contains(*d)) {
            v.push(("recipient_delimiter", d.to_string()));
            let ext = &rest[d.len_utf8()..];
            // `$extension` goes into paths (`forward_path`): never a `/`.
            if ext.contains('/') {
                warn!("address with illegal extension: {local}");
            } else {
                v.push(("extension", ext.to_owned()));
            }
        } else if let Some(d) = delim.chars().next() {
            v.push(("recipient_delimiter", d.to_string()));
        }
        if let Some(r) = rights {
            v.push(("home", r.home.clone()));
            v.push(("shell", r.shell.clone()));
        }
        v
    }

    /// The user's `.forward` (the first file of `forward_path` that
    /// exists): its addresses, files and commands, with the user's rights,
    /// instead of the mailbox. `None`: no forward file applies (none, not
    /// a regular file, bad owner, world-writable, empty, or the user is
    /// already being expanded from it: then her mailbox).
    fn dot_forward(
        &mut self,
        user: &User,
        addr: &str,
        top: &str,
        depth: usize,
        seen: &mut HashSet<String>,
    ) -> Option<Outcome> {
        use std::os::unix::fs::MetadataExt;
        // Opened with the user's own ids (root's as root), as Postfix does.
        let rights = Rights::of(user);
        let attrs = self.attrs(addr, &user.name, Some(&rights));
        let lookup = |n: &str| attrs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        let (path, meta) = self.st.forward_path.iter().find_map(|t| {
            let path = crate::expand::expand(t, &lookup, &self.st.forward_filter).ok()?;
            let meta =
                pfx_mailbox::as_user(rights.uid, rights.gid, || std::fs::symlink_metadata(&path));
            meta.ok().map(|m| (PathBuf::from(path), m))
        })?;
        if !self.forwarding.insert(path.clone()) {
            return None;
        }
        let shown = path.display();
        let text = if !meta.file_type().is_file() {
            warn!("file {shown} is not a regular file");
            None
        } else if meta.uid() != 0 && meta.uid() != user.uid {
            warn!("file {shown} has bad owner uid {}", meta.uid());
            None
        } else if meta.mode() & 0o002 != 0 {
            warn!("file {shown} is world writable");
            None
        } else {
            match pfx_mailbox::as_user(rights.uid, rights.gid, || std::fs::read_to_string(&path)) {
                Ok(t) => Some(t),
                Err(e) => {
                    let why = e.raw_os_error().map_or_else(
                        || e.to_string(),
                        |n| nix::errno::Errno::from_raw(n).desc().to_owned(),
                    );
                    warn!("cannot open file {shown}: {why}");
                    None
                }
            }
        };
        let targets: Vec<String> = text
            .iter()
            .flat_map(|t| t.lines())
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(pfx_maps::aliases::targets)
            .collect();
        if targets.is_empty() {
            self.forwarding.remove(&path);
            return None;
        }
        self.expanded = true;
        let saved = (
            self.rights.replace(rights),
            self.owner.replace(user.name.clone()),
            self.class,
        );
        self.class = "forward";
        let v = self.expand(&targets.join(","), top, depth + 1, seen, "forward");
        (self.rights, self.owner, self.class) = saved;
        Some(v)
    }

    /// A user the passwd database does not know: `fallback_transport`,
    /// else `luser_relay`, else a bounce.
    fn unknown(
        &mut self,
        addr: &str,
        top: &str,
        user_name: &str,
        depth: usize,
        seen: &mut HashSet<String>,
    ) -> Outcome {
        let to = self.qualify(addr);
        // Each unknown user once (a luser_relay that comes back here).
        if !seen.insert(format!("\0unknown {user_name}")) {
            return sent(String::new());
        }
        match lookup(&self.st.fallback_transport_maps, user_name) {
            Ok(Some(spec)) => return self.pass(&spec, &to, top),
            Ok(None) => {}
            Err(v) => {
                self.leaves.push((to, v.clone()));
                return v;
            }
        }
        if !self.st.fallback_transport.is_empty() {
            return self.pass(&self.st.fallback_transport.clone(), &to, top);
        }
        if !self.st.luser_relay.is_empty() {
            let attrs = self.attrs(addr, user_name, None);
            let lookup = |n: &str| attrs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
            // Expanded without a filter, as Postfix does; one address,
            // never a `|command`, `/file` or `:include:`.
            return match crate::expand::expand(&self.st.luser_relay, &lookup, "") {
                Ok(relay) if self.qualify(relay.trim()) == to => {
                    let v = bounce("5.1.1", format!("unknown user: \"{user_name}\""));
                    self.leaves.push((to, v.clone()));
                    v
                }
                Ok(relay) => self.address(relay.trim(), top, depth, seen),
                Err(_) => {
                    warn!(
                        "bad parameter value syntax for luser_relay: {}",
                        self.st.luser_relay
                    );
                    let v = defer_dsn("4.3.5", "mail system configuration error");
                    self.leaves.push((to, v.clone()));
                    v
                }
            };
        }
        // smtpd always takes these; without an alias, as Postfix, the mail
        // is dropped with a warning rather than bounced.
        if pfx_address::is_required_local_name(user_name) {
            warn!("required alias not found: {user_name}");
            let v = sent("discarded");
            self.leaves.push((to, v.clone()));
            return v;
        }
        let v = bounce("5.1.1", format!("unknown user: \"{user_name}\""));
        self.leaves.push((to, v.clone()));
        v
    }

    /// `mailbox_transport_maps` (by user name), else `mailbox_transport`.
    fn mailbox_transport(&self, user: &str) -> Result<Option<String>, Outcome> {
        Ok(lookup(&self.st.mailbox_transport_maps, user)?
            .or_else(|| Some(self.st.mailbox_transport.clone()).filter(|t| !t.is_empty())))
    }

    /// Hands `to` to the agent of `spec` (`transport[:nexthop]`), as
    /// Postfix's local does with `mailbox_transport`: the agent delivers
    /// and logs; its outcome comes back once the other work is done.
    fn pass(&mut self, spec: &str, to: &str, top: &str) -> Outcome {
        let (transport, nexthop) = match spec.split_once(':') {
            Some((t, n)) => (t.to_owned(), n.to_owned()),
            None => (spec.to_owned(), String::new()),
        };
        self.passes
            .push((to.to_owned(), top.to_owned(), transport, nexthop));
        sent(String::new())
    }

    /// `to` gets the message as a new one, from the current sender.
    fn send_on(&mut self, to: String) -> Outcome {
        self.forward.push(Forward {
            sender: self.sender.clone(),
            address: to,
            fresh: self.fresh,
        });
        sent(String::new())
    }

    /// `owner-NAME` from the alias tables, as the list's sender
    /// (`owner-NAME@$myorigin`, or what it expands to with
    /// `expand_owner_alias`).
    fn list_owner(&self, name: &str) -> Result<Option<String>, Outcome> {
        if !self.st.owner_request_special {
            return Ok(None);
        }
        let alias = format!("owner-{name}");
        match self.st.aliases.lookup(&alias) {
            Ok(None) => Ok(None),
            Ok(Some(rhs)) => {
                let owner = if self.st.expand_owner_alias {
                    rhs.trim().to_owned()
                } else {
                    alias
                };
                Ok(Some(self.qualify(&owner)))
            }
            Err(e) => Err(defer(format!("alias database unavailable: {e}"))),
        }
    }

    /// `user` becomes `user@$myorigin`, as the address is shown in logs.
    fn qualify(&self, addr: &str) -> String {
        pfx_address::qualify(addr, &self.st.myorigin)
    }

    /// Delivers to every target of an alias (or include file); the worst outcome wins.
    fn expand(
        &mut self,
        value: &str,
        top: &str,
        depth: usize,
        seen: &mut HashSet<String>,
        class: &str,
    ) -> Outcome {
        let mut worst: Option<Outcome> = None;
        let mut texts = Vec::new();
        for target in pfx_maps::aliases::targets(value) {
            let res = if let Some(cmd) = target.strip_prefix('|') {
                if allowed(&self.st.mail_to_commands, class) {
                    self.command(cmd, top)
                } else {
                    bounce("5.7.1", format!("mail to command is restricted: \"{cmd}\""))
                }
            } else if let Some(path) = target.strip_prefix(":include:") {
                self.include(path, top, depth, seen)
            } else if target.starts_with('/') {
                if allowed(&self.st.mail_to_files, class) {
                    self.file(Path::new(&target), top)
                } else {
                    bounce("5.7.1", format!("mail to file is restricted: \"{target}\""))
                }
            } else {
                self.address(&target, top, depth, seen)
            };
            if res.class == Class::Sent {
                if !res.reason.is_empty() {
                    texts.push(res.reason);
                }
            } else if worst
                .as_ref()
                // Temporary beats permanent: retrying may still deliver.
                .is_none_or(|w| res.is_temporary() && !w.is_temporary())
            {
                worst = Some(res);
            }
        }
        match worst {
            Some(f) => f,
            None => sent(
                texts
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "forwarded".into()),
            ),
        }
    }

    /// One address of an alias, `.forward` or include file: a local one is
    /// delivered here, a remote one forwarded.
    fn address(
        &mut self,
        target: &str,
        top: &str,
        depth: usize,
        seen: &mut HashSet<String>,
    ) -> Outcome {
        let dests = &self.st.mydestination;
        let r = pfx_address::resolve(target, &|d| dests.contains(d));
        if r.is_local {
            self.recipient(&r.address(), top, depth + 1, seen)
        } else {
            self.send_on(r.address())
        }
    }

    /// The addresses, files and commands listed in an `:include:` file, as
    /// Postfix's local takes them: an absolute path, looked at and opened
    /// with the current delivery's ids, a regular file that is not world
    /// writable (else the recipient bounces with a configuration error);
    /// listed in the alias database, its commands and files run with the
    /// file owner's rights (`default_privs` for root's).
    fn include(
        &mut self,
        path: &str,
        top: &str,
        depth: usize,
        seen: &mut HashSet<String>,
    ) -> Outcome {
        use std::os::unix::fs::MetadataExt;
        let config_error = |why: String| {
            warn!("{why}");
            bounce("5.3.5", "mail system configuration error")
        };
        let os_error = |e: &std::io::Error| {
            e.raw_os_error().map_or_else(
                || e.to_string(),
                |n| nix::errno::Errno::from_raw(n).desc().to_owned(),
            )
        };
        if !path.starts_with('/') {
            return config_error(format!(":include:{path} uses a relative path"));
        }
        let (uid, gid) = self.open_ids();
        // Each include file once per user, as Postfix's been_here.
        if !seen.insert(format!("\0include {uid} {path}")) {
            return sent(String::new());
        }
        let meta = match pfx_mailbox::as_user(uid, gid, || std::fs::metadata(path)) {
            Ok(m) => m,
            Err(e) => {
                let why = os_error(&e);
                return config_error(format!("unable to lookup :include: file {path}: {why}"));
            }
        };
        if !meta.is_file() {
            return config_error(format!(":include: file {path} is not a regular file"));
        }
        if meta.mode() & 0o002 != 0 {
            return config_error(format!(":include: file {path} is world writable"));
        }
        let saved = self.rights.clone();
        if uid == 0 && meta.uid() != 0 {
            match self.st.passwd.lookup_uid(meta.uid()) {
                Ok(Some(owner)) => self.rights = Some(Rights::of(&owner)),
                found => {
                    if let Err(e) = found {
                        warn!("cannot find username for uid {}: {e}", meta.uid());
                    } else {
                        warn!("cannot find username for uid {}", meta.uid());
                    }
                    warn!("{path}: cannot find :include: file owner username");
                    return defer_dsn("4.3.5", "mail system configuration error");
                }
            }
        }
        let v = match pfx_mailbox::as_user(uid, gid, || std::fs::read_to_string(path)) {
            Ok(text) => {
                let list: Vec<String> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .map(str::to_owned)
                    .collect();
                let outer = (self.owner.clone(), self.class);
                if self.owner.is_none() {
                    self.owner = Some(top.to_owned());
                }
                self.class = "include";
                let v = self.expand(&list.join(","), top, depth + 1, seen, "include");
                (self.owner, self.class) = outer;
                v
            }
            Err(e) => config_error(format!("cannot open include file {path}: {}", os_error(&e))),
        };
        self.rights = saved;
        v
    }

    fn prepend(&self, rcpt: &str, top: &str) -> Vec<u8> {
        format!(
            "Return-Path: <{}>\nX-Original-To: {top}\nDelivered-To: {rcpt}\n",
            self.sender
        )
        .into_bytes()
    }

    fn limit(&self) -> u64 {
        self.st.mailbox_size_limit
    }

    fn mailbox(&mut self, user: &User, addr: &str, top: &str) -> Outcome {
        let rcpt = self.qualify(addr);
        match self.mailbox_transport(&user.name) {
            Ok(Some(spec)) => return self.pass(&spec, &rcpt, top),
            Ok(None) => {}
            Err(v) => {
                self.leaves.push((rcpt, v.clone()));
                return v;
            }
        }
        let command = match lookup(&self.st.mailbox_command_maps, &user.name) {
            Ok(Some(c)) => Some(c),
            Ok(None) => Some(self.st.mailbox_command.clone()).filter(|c| !c.is_empty()),
            Err(v) => {
                self.leaves.push((rcpt, v.clone()));
                return v;
            }
        };
        if let Some(cmd) = command {
            // As in Postfix, not subject to $name expansion: the shell sees
            // $HOME, $EXTENSION... in the environment.
            let rights = Rights::of(user);
            let v = self.run_command(&cmd, addr, &rcpt, top, &user.name, Some(&rights));
            self.leaves.push((rcpt, v.clone()));
            return v;
        }
        let home_mailbox = &self.st.home_mailbox;
        let (path, maildir): (PathBuf, bool) = if home_mailbox.is_empty() {
            (self.st.mail_spool_directory.join(&user.name), false)
        } else {
            (user.home.join(home_mailbox), home_mailbox.ends_with('/'))
        };
        let written = self.write_as(user.uid, user.gid, &rcpt, top, |m| {
            if maildir {
                pfx_mailbox::maildir(&path, m)
                    .map_err(|e| write_failed("maildir delivery failed: ".into(), &e))
            } else {
                mbox(&path, m)
            }
        });
        let v = match written {
            Ok(()) => sent(if maildir {
                "delivered to maildir"
            } else {
                "delivered to mailbox"
            }),
            Err(f) => f,
        };
        self.leaves.push((rcpt, v.clone()));
        v
    }

    /// Writes the message, with the delivery headers for `rcpt`, through
    /// `write`, using the file-system ids `uid`/`gid`.
    fn write_as(
        &self,
        uid: u32,
        gid: u32,
        rcpt: &str,
        top: &str,
        write: impl FnOnce(&mut Message<'_>) -> Result<(), Outcome>,
    ) -> Result<(), Outcome> {
        let prepend = self.prepend(rcpt, top);
        let mut content = self
            .qf
            .content()
            .map_err(|e| defer(format!("read queue file: {e}")))?;
        let mut msg = Message {
            prepend: &prepend,
            content: &mut content,
            sender: &self.sender,
            limit: Limit::message(self.limit()),
            origin: Some(self.origin),
        };
        pfx_mailbox::as_user(uid, gid, || write(&mut msg))
    }

    /// The account alias commands and files run as: the owner of the alias
    /// database, or `default_privs` when that is root (as Postfix does).
    fn alias_owner(&self) -> (u32, u32) {
        let me = pfx_sys::users::current();
        if !pfx_sys::users::is_root() {
            return (me.uid.as_raw(), me.gid.as_raw());
        }
        match pfx_sys::users::user(&self.st.default_privs) {
            Ok(ids) => (ids.uid.as_raw(), ids.gid.as_raw()),
            Err(_) => (65534, 65534),
        }
    }

    /// The rights an alias's commands, files and `:include:` files get:
    /// default ones (`None`) for a root-owned table, else its owner's; a
    /// table without an owner to go by (a server, `proxy:`, tables of
    /// different users joined) defers the recipient, as Postfix does.
    fn alias_rights(&self, owner: pfx_maps::Owner, table: &str) -> Result<Option<Rights>, Outcome> {
        let uid = match owner {
            pfx_maps::Owner::Trusted => return Ok(None),
            pfx_maps::Owner::Untrusted(uid) => uid,
            pfx_maps::Owner::Unknown => {
                warn!("deliver_alias: no owner UID for alias database {table}");
                return Err(defer("mail system configuration error"));
            }
        };
        match self.st.passwd.lookup_uid(uid) {
            Ok(Some(user)) => Ok(Some(Rights::of(&user))),
            found => {
                match found {
                    Err(e) => warn!("cannot find alias database owner for {table}: {e}"),
                    _ => warn!("cannot find alias database owner for {table}"),
                }
                Err(defer("cannot find alias database owner"))
            }
        }
    }

    /// Whose rights a file or command from the current expansion gets.
    fn ids(&self) -> (u32, u32) {
        match &self.rights {
            Some(r) => r.delivery(&self.st.default_privs),
            None => self.alias_owner(),
        }
    }

    /// Whose ids `:include:` files are looked at and opened with: the
    /// current user's own (a `.forward`'s, or a non-root alias table
    /// owner's), or root's for a root-owned alias table.
    fn open_ids(&self) -> (u32, u32) {
        match &self.rights {
            Some(r) => (r.uid, r.gid),
            None => (0, 0),
        }
    }

    fn file(&mut self, path: &Path, top: &str) -> Outcome {
        let (uid, gid) = self.ids();
        let v = match self.write_as(uid, gid, top, top, |m| mbox(path, m)) {
            Ok(()) => sent(format!("delivered to file: {}", path.display())),
            Err(f) => f,
        };
        self.leaves.push((top.to_owned(), v.clone()));
        v
    }

    /// `|command` from an alias or `.forward`.
    fn command(&mut self, cmd: &str, top: &str) -> Outcome {
        let (local, _) = self.local_part(top);
        let user = local
            .find(|c| self.st.recipient_delimiter.contains(c))
            .map_or(local.as_str(), |i| &local[..i])
            .to_owned();
        let rights = self.rights.clone();
        let v = self.run_command(cmd, top, top, top, &user, rights.as_ref());
        self.leaves.push((top.to_owned(), v.clone()));
        v
    }

    /// Runs `/bin/sh -c cmd` as Postfix's local runs a command: with the
    /// given rights (the alias owner's when `None`), the message after a
    /// `From ` line and the delivery headers on its input, Postfix's
    /// environment (HOME, LOGNAME, USER, SENDER, RECIPIENT, LOCAL, SHELL,
    /// DOMAIN, EXTENSION, ORIGINAL_RECIPIENT, CLIENT_*, SASL_*, values
    /// censored by `command_expansion_filter`), `command_time_limit`; its
    /// exit status read as pipe_command reads it.
    fn run_command(
        &self,
        cmd: &str,
        addr: &str,
        rcpt: &str,
        top: &str,
        user: &str,
        rights: Option<&Rights>,
    ) -> Outcome {
        let (uid, gid) = match rights {
            Some(r) => r.delivery(&self.st.default_privs),
            None => self.alias_owner(),
        };
        let attrs = self.attrs(addr, user, rights);
        let attr = |n: &str| attrs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        let mut env = self.st.command_env.clone();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                let v = v
                    .chars()
                    .map(|c| {
                        if self.st.command_filter.contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                env.push((k.to_owned(), v));
            }
        };
        add("HOME", attr("home"));
        add("LOGNAME", Some(user.to_owned()));
        add("USER", Some(user.to_owned()));
        add("SENDER", Some(self.sender.to_owned()));
        add("RECIPIENT", Some(self.qualify(addr)));
        add("LOCAL", attr("local"));
        add("SHELL", attr("shell"));
        add("DOMAIN", attr("domain"));
        add("EXTENSION", attr("extension"));
        add("ORIGINAL_RECIPIENT", Some(top.to_owned()));
        for (name, a) in [
            ("CLIENT_HOSTNAME", "client_name"),
            ("CLIENT_ADDRESS", "client_address"),
            ("CLIENT_HELO", "helo_name"),
            ("CLIENT_PROTOCOL", "protocol_name"),
            ("SASL_METHOD", "sasl_method"),
            ("SASL_SENDER", "sasl_sender"),
            ("SASL_USERNAME", "sasl_username"),
        ] {
            add(name, self.qf.attr(a).map(str::to_owned));
        }
        let mut input = pfx_mailbox::from_line(&self.sender).into_bytes();
        input.extend(self.prepend(rcpt, top));
        if let Err(e) = self
            .qf
            .content()
            .and_then(|mut c| c.read_to_end(&mut input))
        {
            return defer(format!("read queue file: {e}"));
        }
        let argv = ["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()];
        let spec = pfx_command::Spec {
            argv: &argv,
            env: &env,
            cwd: &self.st.queue_dir,
            uid: nix::unistd::Uid::from_raw(uid),
            gid: nix::unistd::Gid::from_raw(gid),
            time_limit: self.st.command_time_limit,
        };
        // This thread is inside its connection's runtime (see
        // serve_deliveries_on_threads), which cannot be blocked on again:
        // the command runs on a thread and a runtime of its own meanwhile.
        let ran = std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?
                    .block_on(pfx_command::run(&spec, input))
            })
            .join()
            .unwrap_or_else(|_| Err("command runner panicked".into()))
        });
        match ran {
            Ok((ended, output)) => pfx_command::failure(ended, cmd, &output)
                .map(|mut v| {
                    v.relay = "local".into();
                    v
                })
                .unwrap_or_else(|| sent(format!("delivered to command: {cmd}"))),
            Err(e) => defer(format!("command {cmd}: {e}")),
        }
    }
}

/// Hands one recipient to another transport's agent, as qmgr would, and
/// returns its outcome (the agent logs the delivery).
async fn pass(
    st: &Settings,
    req: &DeliveryRequest,
    rcpt: &pfx_ipc::proto::DeliveryRecipient,
    notify: u32,
    (to, orig): (&str, &str),
    transport: &str,
    nexthop: &str,
) -> Outcome {
    use pfx_ipc::proto::{self, conversation, DeliveryRecipient, DeliveryReply};
    let request = DeliveryRequest {
        nexthop: if nexthop.is_empty() {
            req.nexthop.clone()
        } else {
            nexthop.to_owned()
        },
        recipients: vec![DeliveryRecipient {
            address: to.to_owned(),
            original: (orig != to).then(|| orig.to_owned()),
            notify,
            orcpt: rcpt.orcpt.clone(),
        }],
        ..req.clone()
    };
    let socket = proto::transport_socket(&st.queue_dir, transport);
    let asked = async {
        let mut ch = pfx_ipc::client::connect(&socket, conversation::DELIVER).await?;
        ch.send(&request).await?;
        ch.expect::<DeliveryReply>().await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3600), asked).await {
        Ok(Ok(reply)) if reply.statuses.len() == 1 => reply.statuses[0].clone(),
        Ok(Ok(_)) => defer("delivery agent protocol error"),
        Ok(Err(e)) => {
            warn!("{}: {transport}: {e}", req.queue_id);
            defer("mail transport unavailable")
        }
        Err(_) => defer("delivery agent timed out"),
    }
}

/// Sends the message on to `group` (one sender) as a new message, as
/// Postfix's local does: Postfix's `Received: by` and a `Delivered-To:`
/// header with the recipient (for loop detection) in front; ENVID and RET
/// kept; each address with `notify`, and the recipient's original address
/// and ORCPT unless the list has an owner.
async fn forward(
    st: &Settings,
    qf: &QueueFile,
    req: &DeliveryRequest,
    (notify, rcpt): (u32, &pfx_ipc::proto::DeliveryRecipient),
    group: &[&Forward],
) -> Outcome {
    let to = &group[0].address;
    match queue_forward(st, qf, req, (notify, rcpt), group).await {
        Ok(CleanupReply::Committed { queue_id }) => sent(format!("forwarded as {queue_id}")),
        // What cleanup refuses for good bounces the recipient: retrying
        // would meet the same refusal until the message expires.
        Ok(CleanupReply::TooManyHops) => bounce("5.4.6", "too many hops"),
        Ok(CleanupReply::TooBig) => bounce("5.3.4", "message too big for system"),
        Ok(CleanupReply::Rejected { reason, .. }) => {
            let (dsn, text) = reason.split_once(' ').unwrap_or(("5.7.1", &reason));
            let text = text.to_owned();
            if dsn.starts_with('4') {
                defer_dsn(dsn, text)
            } else {
                bounce(dsn, text)
            }
        }
        Ok(CleanupReply::Failed {
            temporary: false,
            reason,
        }) => bounce("5.3.0", format!("forward to {to}: {reason}")),
        Ok(other) => defer(format!("forward to {to}: {other:?}")),
        Err(e) => defer(format!("forward to {to}: {e}")),
    }
}

/// Queues the new message of [`forward`]; cleanup's last reply.
async fn queue_forward(
    st: &Settings,
    qf: &QueueFile,
    req: &DeliveryRequest,
    (notify, rcpt): (u32, &pfx_ipc::proto::DeliveryRecipient),
    group: &[&Forward],
) -> Result<CleanupReply, String> {
    let top = rcpt
        .original
        .clone()
        .unwrap_or_else(|| rcpt.address.clone());
    let recipients = group
        .iter()
        .map(|f| pfx_queue::file::NewRecipient {
            address: f.address.clone(),
            original: (!f.fresh).then(|| top.clone()),
            notify,
            orcpt: rcpt.orcpt.clone().filter(|_| !f.fresh),
        })
        .collect();
    let mut attrs = vec![
        ("origin".into(), "local".into()),
        ("forwarded_from".into(), req.queue_id.clone()),
    ];
    for name in ["envelope_id", "ret_flags"] {
        if let Some(v) = qf.attr(name).filter(|v| !v.is_empty()) {
            attrs.push((name.into(), v.to_owned()));
        }
    }
    let envelope = pfx_ipc::cleanup::Envelope {
        receive: Default::default(),
        arrival: None,
        sender: group[0].sender.clone(),
        recipients,
        attrs,
        origin: Origin::Forward,
    };
    let cleanup = pfx_ipc::cleanup::Cleanup::under(&st.queue_dir);
    let mut msg = cleanup
        .begin(envelope)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let head = format!(
        "Received: by {} ({})\n\tid {}; {}\nDelivered-To: {}\n",
        st.myhostname,
        st.mail_name,
        msg.queue_id(),
        pfx_sys::time::rfc2822(SystemTime::now()),
        rcpt.address.to_lowercase()
    );
    let sent = async {
        msg.write(head.as_bytes()).await?;
        let content = qf.content().map_err(pfx_ipc::Error::from)?;
        for piece in pfx_ipc::client::chunks(content) {
            msg.write(&piece.map_err(pfx_ipc::Error::from)?).await?;
        }
        Ok::<_, pfx_ipc::Error>(())
    };
    if let Err(e) = sent.await {
        msg.abort().await;
        return Err(e.to_string());
    }
    msg.end().await.map_err(|e| e.to_string())
}
