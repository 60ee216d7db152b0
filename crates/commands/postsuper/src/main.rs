//! postsuper(1): queue maintenance for the superuser, safe while the mail
//! system runs.
//!
//! - `-d ID` delete, `-h ID` hold, `-H ID` release from hold, `-r ID`
//!   requeue, `-e ID` force expiration (qmgr returns the message to its
//!   sender at its next delivery attempt), `-f ID` force expiration and
//!   release from hold; each may be repeated and they act in the order
//!   given, `ALL` means every message and `-` reads IDs from standard input;
//!   trailing arguments name the queues to look in.
//! - `-s` structure check: files in the wrong (hashed) directory are moved,
//!   status logs of messages that no longer exist are removed.
//! - `-p` purge temporary files left by crashes.
//! - no operation: `-s` and `-p`, as Postfix's postsuper.
//!
//! Every change is a rename or an unlink, which qmgr notices: it never hands
//! out a message whose file has left `active/`. Messages are logged one by one
//! (`ID: removed`, `ID: placed on hold`...) and summed up at the end, in
//! Postfix's order (`Requeued: 1 message`, `Deleted: 3 messages`...), on
//! stderr and in the mail log.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;
use pfx_maillog::fatal;
use pfx_queue::file::{self, QueueFile, Readiness};
use pfx_queue::statuslog::{self, Log};
use pfx_queue::{Queue, QueueName};
use tracing::{info, warn};

const USAGE: &str = "postsuper [-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)] [-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] [-H queue_id (un-hold)] [-p (purge temporary files)] [-r queue_id (requeue)] [-s (structure fix)] [-v (verbose)] [queue...]";

#[derive(Parser, Debug)]
#[command(
    name = "postsuper",
    version,
    about = "postfix-rs queue maintenance (superuser only)",
    disable_help_flag = true
)]
struct Args {
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Delete a message (ALL: every message; -: IDs from stdin).
    #[arg(short = 'd', value_name = "QUEUE_ID")]
    delete: Vec<String>,
    /// Force a message to expire: qmgr returns it to the sender at its
    /// next delivery attempt (never while it is on hold).
    #[arg(short = 'e', value_name = "QUEUE_ID")]
    expire: Vec<String>,
    /// Force a message to expire, and release it if it is on hold.
    #[arg(short = 'f', value_name = "QUEUE_ID")]
    expire_release: Vec<String>,
    /// Put a message on hold.
    #[arg(short = 'h', value_name = "QUEUE_ID")]
    hold: Vec<String>,
    /// Release a message from hold.
    #[arg(short = 'H', value_name = "QUEUE_ID")]
    release: Vec<String>,
    /// Requeue a message: it goes through pickup and cleanup again, with the
    /// current configuration, under a new queue ID.
    #[arg(short = 'r', value_name = "QUEUE_ID")]
    requeue: Vec<String>,
    /// Purge temporary files left over after crashes.
    #[arg(short = 'p')]
    purge: bool,
    /// Check and repair the queue's structure.
    #[arg(short = 's')]
    structure: bool,
    /// Verbose logging.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Queues to operate on (default depends on the operation).
    queues: Vec<String>,
}

/// One of the message operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Delete,
    Expire,
    /// `-f`: expire, then release from hold.
    ExpireRelease,
    Hold,
    Release,
    Requeue,
}

/// A directory postsuper may be told to work in, as Postfix's postsuper
/// knows them: a message queue, or a directory of per-message files (which
/// only `-d ALL` empties; the other operations pass over it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Queue(QueueName),
    Logs(&'static str),
}

impl Dir {
    fn parse(s: &str) -> Option<Self> {
        QueueName::parse(s)
            .filter(|q| *q != QueueName::Corrupt)
            .map(Self::Queue)
            .or_else(|| {
                ["trace", "defer", "bounce", "flush"]
                    .into_iter()
                    .find(|d| *d == s)
                    .map(Self::Logs)
            })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Queue(q) => q.as_str(),
            Self::Logs(d) => d,
        }
    }
}

/// What `ALL` walks when no directory is named: Postfix's list, the logs
/// before the messages (trace/ is not in it).
const ALL_DIRS: [Dir; 8] = [
    Dir::Logs("defer"),
    Dir::Logs("bounce"),
    Dir::Queue(QueueName::Maildrop),
    Dir::Queue(QueueName::Incoming),
    Dir::Queue(QueueName::Active),
    Dir::Queue(QueueName::Deferred),
    Dir::Queue(QueueName::Hold),
    Dir::Logs("flush"),
];

impl Op {
    fn default_queues(self) -> &'static [QueueName] {
        use QueueName::*;
        match self {
            Self::Delete => &[Maildrop, Hold, Incoming, Active, Deferred],
            Self::Expire | Self::ExpireRelease => &[Incoming, Active, Deferred, Hold],
            Self::Requeue => &[Hold, Incoming, Active, Deferred],
            Self::Hold => &[Incoming, Active, Deferred],
            Self::Release => &[Hold],
        }
    }

    /// (per-message log text, summary verb).
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Self::Delete => ("removed", "Deleted"),
            Self::Expire | Self::ExpireRelease => ("expired", "Force-expired"),
            Self::Hold => ("placed on hold", "Placed on hold"),
            Self::Release => ("released from hold", "Released from hold"),
            Self::Requeue => ("requeued", "Requeued"),
        }
    }
}

fn main() {
    let args: Args = pfx_cli::parse_args("postsuper", USAGE);
    let dir = args.config.dir();
    let cfg = pfx_cli::load_config(&dir);
    let _ = pfx_maillog::init(
        &cfg,
        pfx_maillog::Options {
            service: "postsuper".into(),
            stderr_name: Some("postsuper".into()),
            stderr_info: true,
            verbose: args.verbose > 0,
        },
    );
    let queue_dir = PathBuf::from(cfg.get("queue_directory").unwrap_or_else(|e| fatal(e)));
    become_queue_owner(&cfg, &queue_dir);
    let queue = Queue::new(&queue_dir);
    let named: Vec<Dir> = args
        .queues
        .iter()
        .map(|q| Dir::parse(q).unwrap_or_else(|| fatal(format!("invalid directory name: {q}"))))
        .collect();
    // Each -d/-e/-f/-h/-H/-r in the order given, as Postfix's postsuper
    // acts on them one by one (`-h ID -d ID` deletes the held message).
    let mut given: Vec<(usize, Op, String)> = Vec::new();
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    for (op, name) in [
        (Op::Delete, "delete"),
        (Op::Expire, "expire"),
        (Op::ExpireRelease, "expire_release"),
        (Op::Hold, "hold"),
        (Op::Release, "release"),
        (Op::Requeue, "requeue"),
    ] {
        if let (Some(at), Some(values)) =
            (matches.indices_of(name), matches.get_many::<String>(name))
        {
            given.extend(at.zip(values).map(|(i, v)| (i, op, v.clone())));
        }
    }
    given.sort_by_key(|(i, _, _)| *i);
    // No operation given: -s and -p, as Postfix's postsuper does.
    let default = !args.structure && !args.purge && given.is_empty();
    if args.structure || default {
        structure(&queue);
    }
    if args.purge || default {
        purge(&queue);
    }
    let mut done: Vec<(Op, usize)> = Vec::new();
    let mut count = |op: Op, n: usize| match done.iter_mut().find(|(o, _)| *o == op) {
        Some((_, total)) => *total += n,
        None => done.push((op, n)),
    };
    let queues_for = |op: Op| -> Vec<QueueName> {
        if named.is_empty() {
            return op.default_queues().to_vec();
        }
        named
            .iter()
            .filter_map(|d| match d {
                Dir::Queue(q) => Some(*q),
                Dir::Logs(_) => None,
            })
            .collect()
    };
    let all_dirs: &[Dir] = if named.is_empty() { &ALL_DIRS } else { &named };
    for (_, op, value) in given {
        let t = targets(&value);
        match (op, &t) {
            (Op::Delete, Targets::All) => count(op, delete_all(&queue, all_dirs)),
            (_, Targets::All) => {
                let (n, released) = mass(&queue, op, all_dirs);
                match op {
                    Op::ExpireRelease => {
                        count(Op::Expire, n);
                        count(Op::Release, released);
                    }
                    _ => count(op, n),
                }
            }
            // Expired where it is, then released if it is on hold.
            (Op::ExpireRelease, Targets::Ids(ids)) => {
                count(Op::Expire, apply(&queue, Op::Expire, ids, &queues_for(op)));
                let held: Vec<QueueName> = queues_for(op)
                    .into_iter()
                    .filter(|q| *q == QueueName::Hold)
                    .collect();
                count(Op::Release, apply(&queue, Op::Release, ids, &held));
            }
            (_, Targets::Ids(ids)) => count(op, apply(&queue, op, ids, &queues_for(op))),
        }
    }
    // The summaries in Postfix's order, whatever the options' order.
    for op in [Op::Requeue, Op::Delete, Op::Expire, Op::Hold, Op::Release] {
        let Some(&(_, n)) = done.iter().find(|(o, _)| *o == op) else {
            continue;
        };
        let (_, verb) = op.words();
        info!("{verb}: {n} message{}", if n == 1 { "" } else { "s" });
        if n > 0 {
            match op {
                Op::Release => wake(&queue, "qmgr", b"ID"),
                Op::Requeue => wake(&queue, "pickup", b"W"),
                // As Postfix: returned at the message's next delivery
                // attempt, not sooner.
                Op::Delete | Op::Expire | Op::ExpireRelease | Op::Hold => {}
            }
        }
    }
}

/// Only the superuser may use postsuper (or the owner of an instance run by
/// an ordinary user); as root it works as `$mail_owner`, so any directory
/// it creates belongs to the mail system.
fn become_queue_owner(cfg: &pfx_config::Config, queue_dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::getuid();
    let instance_owner = std::fs::metadata(queue_dir.join("active"))
        .map(|m| m.uid() == uid.as_raw())
        .unwrap_or(false);
    if uid.is_root() {
        let owner = cfg.get("mail_owner").unwrap_or_else(|e| fatal(e));
        let ids = pfx_sys::users::user(&owner).unwrap_or_else(|e| fatal(e));
        pfx_sys::users::drop_privileges(ids).unwrap_or_else(|e| fatal(e));
    } else if !instance_owner {
        fatal("use of this command is reserved for the superuser");
    }
}

/// What to operate on: every message, or these IDs (`-` reads them from stdin).
enum Targets {
    All,
    Ids(Vec<String>),
}

/// One option's value: `ALL`, `-` (IDs from standard input), or an ID. A
/// malformed ID is passed over with a warning, as Postfix's postsuper does.
fn targets(value: &str) -> Targets {
    if value == "ALL" {
        return Targets::All;
    }
    let mut ids = Vec::new();
    if value == "-" {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            ids.extend(line.split_whitespace().map(str::to_owned));
        }
    } else {
        ids.push(value.to_owned());
    }
    ids.retain(|id| {
        let ok = pfx_queue::is_queue_id(id);
        if !ok {
            warn!("invalid mail queue id: {id}");
        }
        ok
    });
    Targets::Ids(ids)
}

/// Applies `op` to the messages named by `ids` found in `queues`, each
/// logged (`ID: placed on hold`); returns how many it changed.
fn apply(queue: &Queue, op: Op, ids: &[String], queues: &[QueueName]) -> usize {
    let mut done = 0;
    for &q in queues {
        // Files cleanup named ahead of time (in incoming/ only) are not messages.
        let here = ids.iter().filter(|id| {
            std::fs::metadata(queue.path(q, id)).is_ok_and(|m| {
                q != QueueName::Incoming || QueueFile::readiness(&m) != Readiness::Reserved
            })
        });
        for id in here {
            if outcome(q, id, act(queue, op, q, id)) {
                done += 1;
                info!("{id}: {}", op.words().0);
            }
        }
    }
    done
}

/// Applies `op` to the message `id` in queue `q`; whether it changed it
/// (a message in a queue the operation does not concern is left as it is,
/// as Postfix's postsuper leaves it).
fn act(queue: &Queue, op: Op, q: QueueName, id: &str) -> std::io::Result<bool> {
    let changed = |r: std::io::Result<()>| r.map(|()| true);
    match op {
        Op::Delete => changed(std::fs::remove_file(queue.path(q, id)).map(|()| {
            statuslog::remove(queue.root(), Log::Defer, id);
            statuslog::remove(queue.root(), Log::Bounce, id);
            statuslog::remove(queue.root(), Log::Trace, id);
        })),
        // Mail in maildrop/ has not been checked by cleanup yet.
        Op::Expire | Op::ExpireRelease | Op::Requeue if q == QueueName::Maildrop => Ok(false),
        // A file being written, or marked already, is passed over.
        Op::Expire | Op::ExpireRelease => file::force_expire(&queue.path(q, id)),
        Op::Hold if q == QueueName::Hold => Ok(false),
        Op::Hold => changed(queue.move_to(id, q, QueueName::Hold).map(drop)),
        Op::Release if q != QueueName::Hold => Ok(false),
        // Released mail is due at once (its mtime is the retry time).
        Op::Release => changed(queue.defer_until(id, q, SystemTime::now())),
        // As Postfix: through pickup and cleanup again (so new address
        // mappings apply), under a new queue ID, dated now; its logs stay,
        // lest qmgr bounce it in a race (postsuper -s removes them later).
        Op::Requeue => changed(requeue(queue, q, id)),
    }
}

/// Moves a message to maildrop/, dated now, for pickup to run it through
/// cleanup again.
fn requeue(queue: &Queue, q: QueueName, id: &str) -> std::io::Result<()> {
    let path = queue.move_to(id, q, QueueName::Maildrop)?;
    let now = SystemTime::now();
    std::fs::File::open(path)?.set_times(
        std::fs::FileTimes::new()
            .set_accessed(now)
            .set_modified(now),
    )
}

/// `-d ALL` as Postfix's postsuper does it: each directory emptied whole,
/// in the order given; no message is looked up by its ID or logged by
/// itself, and a message queue named alone loses its files, not their logs.
fn delete_all(queue: &Queue, dirs: &[Dir]) -> usize {
    dirs.iter()
        .map(|&d| {
            let q = match d {
                Dir::Queue(q) => Some(q),
                Dir::Logs(_) => None,
            };
            empty_dir(&queue.root().join(d.name()), q)
        })
        .sum()
}

/// `-e`, `-f`, `-h`, `-H` or `-r ALL` as Postfix's postsuper does them:
/// each directory walked whole (hash subdirectories too), an object that is
/// no file removed, a name that is no queue ID warned about (`bogus file
/// name: flush/example.com`), and the operation applied to each message it
/// concerns, none logged by itself. Returns how many messages it changed,
/// and for `-f` how many of them it released from hold.
fn mass(queue: &Queue, op: Op, dirs: &[Dir]) -> (usize, usize) {
    let mut done = (0, 0);
    for &d in dirs {
        let q = match d {
            Dir::Queue(q) if q != QueueName::Maildrop => Some(q),
            _ => None,
        };
        // Each file as the directory is read: a deep queue is never held whole.
        walk(
            &queue.root().join(d.name()),
            d.name(),
            d != Dir::Queue(QueueName::Maildrop),
            &mut |id| {
                if let Some(q) = q {
                    let (changed, released) = mass_one(queue, op, q, id);
                    done.0 += usize::from(changed);
                    done.1 += usize::from(released);
                }
            },
        );
    }
    done
}

/// One message of [`mass`]: whether `op` changed it, and whether `-f`
/// released it from hold.
fn mass_one(queue: &Queue, op: Op, q: QueueName, id: &str) -> (bool, bool) {
    let path = queue.path(q, id);
    // Files cleanup named ahead of time are no messages.
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if QueueFile::readiness(&meta) != Readiness::Reserved => {}
        _ => return (false, false),
    }
    let changed = outcome(q, id, act(queue, op, q, id));
    let released = op == Op::ExpireRelease && outcome(q, id, act(queue, Op::Release, q, id));
    (changed, released)
}

/// Whether an operation on a message changed it; an error is warned about,
/// but for a message the mail system delivered or moved meanwhile.
fn outcome(q: QueueName, id: &str, result: std::io::Result<bool>) -> bool {
    match result {
        Ok(changed) => changed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            warn!("{}/{id}: {e}", q.as_str());
            false
        }
    }
}

/// Hands `found` the queue ID of each file in `dir` (named `rel` in the
/// messages) and, when `hashed`, in its subdirectories of one character;
/// other objects that are no files are removed, other names warned about.
fn walk(dir: &std::path::Path, rel: &str, hashed: bool, found: &mut dyn FnMut(&str)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if hashed && name.len() == 1 {
                walk(&e.path(), &format!("{rel}/{name}"), hashed, found);
            }
        } else if !kind.is_file() {
            let _ = std::fs::remove_file(e.path());
        } else if pfx_queue::is_queue_id(&name) {
            found(&name);
        } else {
            warn!("bogus file name: {rel}/{name}");
        }
    }
}

/// Removes every file in `dir` and in its hash subdirectories (names of
/// one character), each by its name in its directory; returns how many of
/// them were messages of queue `q` (`None`: a log directory). Files
/// cleanup named ahead of time are no messages and stay.
fn empty_dir(dir: &std::path::Path, q: Option<QueueName>) -> usize {
    let (Ok(entries), Ok(handle)) = (std::fs::read_dir(dir), std::fs::File::open(dir)) else {
        return 0;
    };
    let mut messages = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if name.len() == 1 {
                messages += empty_dir(&e.path(), q);
            }
            continue;
        }
        let counts = match q {
            None => false,
            // Only these hold files that are not (yet) messages.
            Some(QueueName::Incoming | QueueName::Maildrop) => {
                match std::fs::symlink_metadata(e.path()).map(|m| QueueFile::readiness(&m)) {
                    Ok(Readiness::Complete) => true,
                    Ok(Readiness::Incomplete) => false,
                    Ok(Readiness::Reserved) | Err(_) => continue,
                }
            }
            Some(_) => true,
        };
        match nix::unistd::unlinkat(
            &handle,
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) => messages += usize::from(counts),
            // Delivered or moved by the mail system meanwhile.
            Err(nix::errno::Errno::ENOENT) => {}
            Err(err) => warn!("{}: {err}", e.path().display()),
        }
    }
    messages
}

/// Wakes a daemon through its `public/` trigger: qmgr to look at
/// deferred/ now, pickup at maildrop/ (a lost wake-up only delays the mail
/// until the next queue run or pickup's timer).
fn wake(queue: &Queue, service: &str, request: &[u8]) {
    use std::io::Write;
    let path = queue.root().join("public").join(service);
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(path) {
        let _ = s.write_all(request);
    }
}

/// `-s`: moves files that sit in the wrong directory of a hashed queue and
/// removes status logs whose message no longer exists.
fn structure(queue: &Queue) {
    let mut moved = 0;
    for q in [QueueName::Deferred] {
        let base = queue.root().join(q.as_str());
        for sub in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let path = sub.path();
            let name = sub.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    let id = f.file_name().to_string_lossy().into_owned();
                    if pfx_queue::is_queue_id(&id) && !id.starts_with(name.as_str()) {
                        moved += relocate(queue, &f.path(), q, &id);
                    }
                }
            } else if pfx_queue::is_queue_id(&name) {
                moved += relocate(queue, &path, q, &name);
            }
        }
    }
    if moved > 0 {
        info!(
            "Moved to the correct directory: {moved} message{}",
            if moved == 1 { "" } else { "s" }
        );
    }
    // Every message wherever it sits, misplaced ones included.
    let present: BTreeSet<String> = QueueName::ALL
        .iter()
        .flat_map(|&q| queue.list(q).unwrap_or_default())
        .collect();
    for (log, name) in [
        (Log::Defer, "defer"),
        (Log::Bounce, "bounce"),
        (Log::Trace, "trace"),
    ] {
        for id in statuslog::list(queue.root(), log) {
            if pfx_queue::is_queue_id(&id) && !present.contains(&id) {
                warn!("{id}: removing orphaned {name} log");
                statuslog::remove(queue.root(), log, &id);
            }
        }
    }
}

fn relocate(queue: &Queue, from: &std::path::Path, q: QueueName, id: &str) -> usize {
    let dst = queue.path(q, id);
    let moved = dst
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::rename(from, &dst));
    match moved {
        Ok(()) => {
            warn!("{id}: moved from {} to {}", from.display(), dst.display());
            1
        }
        Err(e) => {
            warn!("{id}: move {} to {}: {e}", from.display(), dst.display());
            0
        }
    }
}

/// `-p`: removes temporary files (names that are not queue IDs) that a
/// crash left in incoming/ and maildrop/, once they are a minute old.
fn purge(queue: &Queue) {
    let mut n = 0;
    for q in [QueueName::Incoming, QueueName::Maildrop] {
        let dir = queue.root().join(q.as_str());
        for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
            if !pfx_queue::is_queue_id(&name)
                && f.path().is_file()
                && old
                && std::fs::remove_file(f.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    if n > 0 {
        info!(
            "Deleted: {n} temporary file{}",
            if n == 1 { "" } else { "s" }
        );
    }
}
