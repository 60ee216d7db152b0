//! One delivery request: each recipient through aliases to mailboxes,
//! files, commands or forwarding, with Postfix's statuses and log lines.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use pfx_config::{BuildError, Config};
use pfx_ipc::proto::{DeliveryRequest, Origin};
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
}

impl Settings {
    pub(crate) fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let passwd = Passwd::new(Some(cfg.get("local_passwd_file")?.into()));
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
        })
    }
}

struct Ctx<'a> {
    st: &'a Settings,
    /// The envelope sender, as qmgr's request gives it.
    sender: &'a str,
    qf: &'a QueueFile,
    delivered_to: Vec<String>,
    forward: Vec<String>,
    /// Each final delivery, for its own log line: (address, outcome).
    leaves: Vec<(String, Outcome)>,
}

fn sent(text: impl Into<String>) -> Outcome {
    Outcome::sent("local", text)
}

fn bounce(dsn: &str, reason: impl Into<String>) -> Outcome {
    Outcome::failed(false, dsn, "local", reason)
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
/// Per recipient: outcome and leaves; per recipient: remote targets; the queue file.
type Expanded = (Vec<(Outcome, Leaves)>, Vec<String>, QueueFile);

/// Delivers every recipient of the request and logs each outcome.
pub(crate) async fn request(st: &Arc<Settings>, req: &DeliveryRequest) -> Vec<Outcome> {
    let start = SystemTime::now();
    let queue = Queue::new(&st.queue_dir);
    let path = queue.path(req.queue, &req.queue_id);
    // File work (and the recipient's privileges, which are per thread)
    // happens on a thread of the blocking pool, so that deliveries run side
    // by side while this one thread keeps serving qmgr's connections.
    let st2 = st.clone();
    let req2 = req.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<Expanded, String> {
        let st = &*st2;
        let req = &req2;
        let qf = QueueFile::open(&path).map_err(|e| e.to_string())?;
        let mut ctx = Ctx {
            st,
            sender: &req.sender,
            qf: &qf,
            delivered_to: Vec::new(),
            forward: Vec::new(),
            leaves: Vec::new(),
        };
        ctx.delivered_to = delivered_to_headers(&qf);
        let mut results = Vec::new();
        let mut forwards = Vec::new();
        for r in &req.recipients {
            ctx.forward.clear();
            ctx.leaves.clear();
            let mut seen = HashSet::new();
            // X-Original-To: is the recipient as first given (`hadoop`).
            let top = r.original.as_deref().unwrap_or(&r.address);
            let res = ctx.recipient(&r.address, top, 0, &mut seen);
            forwards.push(ctx.forward.join(","));
            results.push((res, std::mem::take(&mut ctx.leaves)));
        }
        Ok((results, forwards, qf))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (results, forwards, qf) = match work {
        Ok(x) => x,
        Err(e) => {
            warn!("{}: {e}", req.queue_id);
            return req.recipients.iter().map(|_| defer(e.clone())).collect();
        }
    };
    let mut statuses = Vec::new();
    for ((r, (res, mut leaves)), fwd) in req.recipients.iter().zip(results).zip(forwards) {
        // Remote alias targets travel as one new message.
        let res = match (res, fwd.is_empty()) {
            (sent, true) if sent.class == Class::Sent => sent,
            (sent, false) if sent.class == Class::Sent => {
                let v = match forward(st, &qf, req, &r.address, &fwd).await {
                    Ok(id) => self::sent(format!("forwarded as {id}")),
                    Err(e) => defer(format!("forward to {fwd}: {e}")),
                };
                leaves.push((r.address.clone(), v.clone()));
                v
            }
            (failed, _) => failed,
        };
        if leaves.is_empty() {
            leaves.push((r.address.clone(), res.clone()));
        }
        // One line per final delivery, with the address it was sent to as orig_to.
        let orig = r.original.clone().unwrap_or_else(|| r.address.clone());
        for (to, v) in &leaves {
            let t = req.times(start, start);
            info!("{}: {}", req.queue_id, v.line(to, Some(&orig), t));
        }
        let mut res = res;
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

/// Writes `prepend` and the content to a command's stdin. Errors writing
/// (the command closed its input) end the feed quietly; an error reading the
/// queue file is returned.
fn feed(
    mut stdin: std::process::ChildStdin,
    prepend: &[u8],
    content: &mut impl Read,
) -> std::io::Result<()> {
    use std::io::Write;
    if stdin.write_all(prepend).is_err() {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = content.read(&mut buf)?;
        if n == 0 || stdin.write_all(&buf[..n]).is_err() {
            return Ok(());
        }
    }
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
            let found = match self.st.aliases.lookup(&name) {
                Ok(Some(v)) => Some(v),
                Ok(None) => match &base {
                    Some(b) => self
                        .st
                        .aliases
                        .lookup(b)
                        .map_err(|e| defer(format!("alias database unavailable: {e}")))
                        .ok()
                        .flatten(),
                    None => None,
                },
                Err(e) => return defer(format!("alias database unavailable: {e}")),
            };
            if let Some(value) = found {
                return self.expand(&value, top, depth, seen, "alias");
            }
        }
        let user_name = base.unwrap_or(name);
        let v = match self.st.passwd.lookup(&user_name) {
            Ok(Some(user)) => return self.mailbox(&user, addr, top),
            // smtpd always takes these; without an alias, as Postfix, the
            // mail is dropped with a warning rather than bounced.
            Ok(None) if pfx_address::is_required_local_name(&user_name) => {
                warn!("required alias not found: {user_name}");
                sent("discarded")
            }
            Ok(None) => bounce("5.1.1", format!("unknown user: \"{user_name}\"")),
            Err(e) => defer(format!("user lookup: {e}")),
        };
        let to = self.qualify(addr);
        self.leaves.push((to, v.clone()));
        v
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
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let list: Vec<String> = text
                            .lines()
                            .filter(|l| !l.trim_start().starts_with('#'))
                            .map(str::to_owned)
                            .collect();
                        self.expand(&list.join(","), top, depth + 1, seen, "include")
                    }
                    Err(e) => defer(format!("cannot open include file {path}: {e}")),
                }
            } else if target.starts_with('/') {
                if allowed(&self.st.mail_to_files, class) {
                    self.file(Path::new(&target), top)
                } else {
                    bounce("5.7.1", format!("mail to file is restricted: \"{target}\""))
                }
            } else {
                let dests = &self.st.mydestination;
                let r = pfx_address::resolve(&target, &|d| dests.contains(d));
                if r.is_local {
                    self.recipient(&r.address(), top, depth + 1, seen)
                } else {
                    self.forward.push(r.address());
                    sent(String::new())
                }
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
        if self.delivered_to.contains(&rcpt.to_ascii_lowercase()) {
            return bounce("5.4.6", format!("mail forwarding loop for {rcpt}"));
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
            sender: self.sender,
            limit: Limit::message(self.limit()),
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

    fn file(&mut self, path: &Path, top: &str) -> Outcome {
        let (uid, gid) = self.alias_owner();
        let v = match self.write_as(uid, gid, top, top, |m| mbox(path, m)) {
            Ok(()) => sent(format!("delivered to file: {}", path.display())),
            Err(f) => f,
        };
        self.leaves.push((top.to_owned(), v.clone()));
        v
    }

    /// `|command`: the message on standard input of `/bin/sh -c command`,
    /// as the alias owner; exit 0 delivered, 75 (EX_TEMPFAIL) deferred, else bounced.
    fn command(&mut self, cmd: &str, top: &str) -> Outcome {
        let v = self.run_command(cmd, top);
        self.leaves.push((top.to_owned(), v.clone()));
        v
    }

    fn run_command(&self, cmd: &str, top: &str) -> Outcome {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = self.alias_owner();
        let (local, domain) = self.local_part(top);
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(cmd)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SHELL", "/bin/sh");
        c.env("SENDER", self.sender)
            .env("RECIPIENT", top)
            .env("LOCAL", &local)
            .env("DOMAIN", &domain)
            .env("ORIGINAL_RECIPIENT", top);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if pfx_sys::users::is_root() {
            c.uid(uid).gid(gid);
        }
        let mut content = match self.qf.content() {
            Ok(c) => c,
            Err(e) => return defer(format!("read queue file: {e}")),
        };
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => return defer(format!("command {cmd}: {e}")),
        };
        let prepend = self.prepend(top, top);
        if let Some(stdin) = child.stdin.take() {
            // A command that stops reading early is its own business (its
            // exit status decides); a queue file that cannot be read means
            // the command saw a cut message, so the delivery is deferred.
            if let Err(e) = feed(stdin, &prepend, &mut content) {
                let _ = child.kill();
                let _ = child.wait();
                return defer(format!("read queue file: {e}"));
            }
        }
        match child.wait_with_output() {
            Ok(out) if out.status.success() => sent(format!("delivered to command: {cmd}")),
            Ok(out) if out.status.code() == Some(75) => defer(format!(
                "temporary failure. Command output: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(out) => bounce(
                "5.3.0",
                format!(
                    "Command died with status {}: \"{cmd}\". Command output: {}",
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ),
            Err(e) => defer(format!("command {cmd}: {e}")),
        }
    }
}

/// Re-submits the message to remote alias targets, as Postfix's local does:
/// a new queue file with a `Delivered-To:` header for loop detection.
async fn forward(
    st: &Settings,
    qf: &QueueFile,
    req: &DeliveryRequest,
    rcpt: &str,
    targets: &str,
) -> Result<String, String> {
    let recipients = targets.split(',').map(|t| (t.to_owned(), None)).collect();
    let head = format!("Delivered-To: {rcpt}\n").into_bytes();
    let content = qf.content().map_err(|e| e.to_string())?;
    let chunks = std::iter::once(Ok(head)).chain(pfx_ipc::client::chunks(content));
    let attrs = vec![
        ("origin".into(), "local".into()),
        ("forwarded_from".into(), req.queue_id.clone()),
    ];
    let envelope = pfx_ipc::cleanup::Envelope {
        sender: req.sender.clone(),
        recipients,
        attrs,
        origin: Origin::Forward,
    };
    pfx_ipc::cleanup::Cleanup::under(&st.queue_dir)
        .submit(envelope, chunks, |_| {})
        .await
        .map_err(|e| e.to_string())
}
