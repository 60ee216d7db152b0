//! The queue file, in Postfix's own format, so that Postfix and postfix-rs
//! each deliver what the other left in the queue.
//!
//! A file is a sequence of records ([`crate::record`]): `C` (sizes and
//! offsets, fixed width), `T` (arrival), attributes, `S` (sender), `O`/`R`
//! (original and current recipient), `M`, the content as `N` records (one
//! line each, without its line end; longer than 2048 bytes: `L` pieces
//! first), `X`, and `E`. A file counts only when it ends with `E` **and**
//! its mode has the owner-execute bit (0700), Postfix's readiness bit, set
//! right before the one fsync that commits the file. Delivering a recipient
//! flips its `R` record's type byte to `D` in place, so progress survives a
//! crash, whichever system does the delivering.
//!
//! What postfix-rs adds is invisible to Postfix: a seventh number in the
//! `C` record, a CRC-32 of the rest of the file, and `A log_ident=` naming
//! the file itself (Postfix writes the same attribute), so that a file a
//! system crash caught in its fsync (readiness bit on disk, some data not)
//! is found out by qmgr ([`QueueFile::verify`]) instead of delivered. The
//! reader takes Postfix's files as Postfix's qmgr does (pointer records,
//! the extracted segment after `X`, every record type Postfix writes), and
//! maildrop files without a `C` record as Postfix's pickup does; files in
//! postfix-rs's earlier format are still read ([`crate::legacy`]). See
//! docs/QUEUE-FORMAT.md.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::record::{self, kind, LINE_LIMIT};
use crate::{Error, Queue, QueueName};

/// Record types, for code that marks or inspects records.
pub use crate::record::kind as rec;

/// How much a writer collects before writing it out.
const WRITE_BUFFER: usize = 64 * 1024;
/// Width of each number in the `C` record (Postfix's `%15ld`).
const SIZE_FIELD: usize = 15;
/// The readiness bit: a complete queue file is 0700, an incomplete one 0600.
const MODE_COMPLETE: u32 = 0o700;
/// A reused file longer than its message by more than this is cut to size
/// when qmgr is done with it ([`QueueFile::trim`]), not at commit: cutting
/// frees blocks, and on a file system mounted with `discard` that waits for
/// the device (240 us here), on the path the client waits for. Less is left
/// in place, after the end record where no reader looks: cutting releases
/// the file's last block and the next message's write allocates one again,
/// which made a commit's fsync slower by a sixth here.
const TRIM_SLACK: u64 = 16 * 1024;
pub(crate) const MODE_WRITING: u32 = 0o600;
/// A file cleanup named ahead of time and has not started (crate::reserve).
pub(crate) const MODE_RESERVED: u32 = 0o400;
/// Maildrop files, as Postfix's postdrop makes them: owned by the
/// submitting user, readable for pickup, owner-execute when complete.
const MODE_DROP_WRITING: u32 = 0o644;
const MODE_DROP_COMPLETE: u32 = 0o744;
/// The attribute that holds the sender's full name where Postfix has an
/// `F` record.
pub const FULL_NAME: &str = "sender_fullname";

/// A recipient as stored in the queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// The address as first given, before any rewriting (`O` record).
    pub original: Option<String>,
    /// Where its `R`/`D` record starts, for marking it done.
    pub offset: u64,
    pub done: bool,
}

/// What goes into a new queue file before the content.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub sender: String,
    /// `(address, original address)`.
    pub recipients: Vec<(String, Option<String>)>,
    /// `name=value` attributes: client, helo, protocol, origin...
    pub attrs: Vec<(String, String)>,
}

/// A queue file being written by cleanup (or postdrop).
#[derive(Debug)]
pub struct Writer {
    id: String,
    path: PathBuf,
    file: File,
    /// Records not yet written; checksummed as they are written, in large
    /// pieces (a line is a record: small updates would cost more).
    buf: Vec<u8>,
    pos: u64,
    /// Offset of the first content record (after `M`).
    content_start: u64,
    /// Raw content bytes given, for size limits.
    content_len: u64,
    /// The content's last line, until its line end arrives.
    partial: Vec<u8>,
    recipients: u64,
    /// The mode that marks the file complete.
    complete_mode: u32,
    /// Of every byte after the `C` record.
    crc: crc32fast::Hasher,
    /// The directories whose entries name this file and must be synced
    /// before it is acknowledged: none for a file from the reserve.
    name_dirs: Vec<PathBuf>,
    finished: bool,
}

/// Microseconds and the file's inode make Postfix's short queue ID.
fn short_id(usec: u32, inode: u64) -> String {
    format!("{usec:05X}{inode:X}")
}

/// A file just named with its queue ID.
pub(crate) struct Named {
    pub(crate) file: File,
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    /// Taken from `recycle/` (whose entry changed too) rather than created.
    pub(crate) recycled: bool,
}

/// The temporary name [`name_new_file`] claims first: `MICROS.PID.TID`.
fn claim_name(micros: u128) -> String {
    format!("{micros}.{}.{}", std::process::id(), nix_tid())
}

/// The process that claimed `name`, when it is a [`claim_name`].
fn claim_pid(name: &str) -> Option<i32> {
    let parts: Vec<&str> = name.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() == 3 && parts.iter().all(numeric))
        .then(|| parts[1].parse().ok())
        .flatten()
}

/// Removes the claimed names whose process is gone: what a crash between
/// claiming a name and giving the file its queue ID leaves in `dir`.
pub(crate) fn remove_stale_claims(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(claim_pid) else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Names a file in `dir` with a fresh queue ID: a recycled file when the
/// pool has one (see crate::recycle), else a new one with mode `mode`, first
/// under a temporary name (exclusive create), then renamed to the ID derived
/// from its inode, without ever replacing another file.
pub(crate) fn name_new_file(
    dir: &Path,
    pool: Option<&crate::recycle::Pool>,
    mode: u32,
) -> std::io::Result<Named> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let tmp = dir.join(claim_name(now.as_micros()));
    let (file, recycled) = match pool.and_then(|p| p.take(&tmp)) {
        Some(f) => (f, true),
        None => (
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?,
            false,
        ),
    };
    let inode = file.metadata()?.ino();
    let mut usec = now.subsec_micros();
    loop {
        let id = short_id(usec, inode);
        let path = dir.join(&id);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp,
            nix::fcntl::AT_FDCWD,
            &path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                return Ok(Named {
                    file,
                    id,
                    path,
                    recycled,
                })
            }
            // A stale file with the same name: another microsecond value.
            Err(nix::errno::Errno::EEXIST) => usec = (usec + 1) % 1_000_000,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        }
    }
}

impl Writer {
    /// Starts a message in `incoming/`: in a file from cleanup's reserve
    /// (already named, the name already durable), else in one named now, from
    /// `recycle/` when it has one.
    pub fn create(
        queue: &Queue,
        arrival: SystemTime,
        reserve: Option<&crate::reserve::Reserve>,
    ) -> Result<Self, Error> {
        if let Some(r) = reserve.and_then(|r| r.take()) {
            let (id, path, file) = r.start_writing()?;
            return Self::start(id, path, file, MODE_COMPLETE, Vec::new(), arrival);
        }
        Self::create_in(
            queue,
            QueueName::Incoming,
            arrival,
            reserve.map(|r| r.pool()),
        )
    }

    /// [`Writer::create`] without a reserve, in any queue: `maildrop/` for
    /// postdrop. A maildrop file belongs to the submitting user, so it is
    /// made readable for pickup (the directory itself admits only the mail
    /// system).
    pub fn create_in(
        queue: &Queue,
        q: QueueName,
        arrival: SystemTime,
        pool: Option<&crate::recycle::Pool>,
    ) -> Result<Self, Error> {
        let (writing, complete) = if q == QueueName::Maildrop {
            (MODE_DROP_WRITING, MODE_DROP_COMPLETE)
        } else {
            (MODE_WRITING, MODE_COMPLETE)
        };
        let dir = queue.dir_for(q, "x");
        let named = name_new_file(&dir, pool, writing)?;
        let mut name_dirs = vec![dir];
        if named.recycled {
            name_dirs.extend(pool.map(|p| p.dir().to_owned()));
        }
        Self::start(
            named.id, named.path, named.file, complete, name_dirs, arrival,
        )
    }

    /// Writes the records that open every file.
    fn start(
        id: String,
        path: PathBuf,
        file: File,
        complete: u32,
        name_dirs: Vec<PathBuf>,
        arrival: SystemTime,
    ) -> Result<Self, Error> {
        let mut w = Self {
            id,
            path,
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            pos: 0,
            content_start: 0,
            content_len: 0,
            partial: Vec::new(),
            recipients: 0,
            complete_mode: complete,
            crc: crc32fast::Hasher::new(),
            name_dirs,
            finished: false,
        };
        // The size record is filled in by finish, and is not checksummed.
        let size = size_record(&Sizes::default(), 0);
        w.file.write_all(&size)?;
        w.pos = size.len() as u64;
        let t = arrival.duration_since(UNIX_EPOCH).unwrap_or_default();
        w.put(
            kind::TIME,
            format!("{} {}", t.as_secs(), t.subsec_micros()).as_bytes(),
        )?;
        w.put(
            kind::ATTR,
            format!("create_time={}", t.as_secs()).as_bytes(),
        )?;
        let ident = format!("log_ident={}", w.id);
        w.put(kind::ATTR, ident.as_bytes())?;
        Ok(w)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn put(&mut self, kind: u8, data: &[u8]) -> std::io::Result<()> {
        let (head, n) = record::head_bytes(kind, data.len());
        self.buf.extend_from_slice(&head[..n]);
        self.buf.extend_from_slice(data);
        self.pos += (n + data.len()) as u64;
        if self.buf.len() >= WRITE_BUFFER {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        self.crc.update(&self.buf);
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the envelope and opens the content section: the sender's full
    /// name as an `F` record, the other attributes as `A` records, then
    /// `S`, each recipient as `O` (when it has an original) and `R`, `M`.
    pub fn envelope(&mut self, env: &Envelope) -> Result<(), Error> {
        for (k, v) in &env.attrs {
            if k == FULL_NAME {
                self.put(kind::FULL, v.as_bytes())?;
            }
        }
        self.put(kind::FROM, env.sender.as_bytes())?;
        for (k, v) in env.attrs.iter().filter(|(k, _)| k != FULL_NAME) {
            self.put(kind::ATTR, format!("{k}={v}").as_bytes())?;
        }
        for (addr, orig) in &env.recipients {
            if let Some(o) = orig {
                self.put(kind::ORCP, o.as_bytes())?;
            }
            self.put(kind::RCPT, addr.as_bytes())?;
            self.recipients += 1;
        }
        self.put(kind::MESG, b"")?;
        self.content_start = self.pos;
        Ok(())
    }

    /// Appends message content (LF line ends): each line becomes an `N`
    /// record, a line longer than 2048 bytes `L` pieces and an `N`.
    pub fn content(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.content_len += bytes.len() as u64;
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&rest[..nl])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..nl]);
                self.line(&line)?;
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        // Whole pieces of a long line need not wait for its end.
        while self.partial.len() > LINE_LIMIT {
            let piece: Vec<u8> = self.partial.drain(..LINE_LIMIT).collect();
            self.put(kind::CONT, &piece)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut chunks = line.chunks(LINE_LIMIT).peekable();
        if chunks.peek().is_none() {
            return self.put(kind::NORM, b"");
        }
        while let Some(c) = chunks.next() {
            let k = if chunks.peek().is_some() {
                kind::CONT
            } else {
                kind::NORM
            };
            self.put(k, c)?;
        }
        Ok(())
    }

    /// Bytes of content written so far.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Closes the content, writes the end marker and the size record with
    /// the checksum, sets the readiness bit and fsyncs, once, as Postfix
    /// does; a file not from the reserve also gets its directories synced.
    /// Only after this returns may anyone be told the message was accepted.
    pub fn finish(mut self) -> Result<String, Error> {
        if !self.partial.is_empty() {
            // A last line without its line end, as Postfix stores it.
            let piece = std::mem::take(&mut self.partial);
            self.put(kind::CONT, &piece)?;
        }
        let data_size = self.pos - self.content_start;
        self.put(kind::XTRA, b"")?;
        self.put(kind::END, b"")?;
        self.flush_buf()?;
        let crc = std::mem::take(&mut self.crc).finalize();
        let sizes = Sizes {
            data_size,
            data_offset: self.content_start,
            recipients: self.recipients,
            content_len: data_size,
        };
        let file = &mut self.file;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&size_record(&sizes, crc))?;
        // The bit before the one fsync: a crash inside it can leave the bit
        // on disk without all the data, which the checksum and the ID record
        // find out (QueueFile::verify). That file was never acknowledged.
        file.set_permissions(std::fs::Permissions::from_mode(self.complete_mode))?;
        file.sync_all()?;
        for dir in &self.name_dirs {
            match pfx_sys::fs::fsync_dir(dir) {
                // postdrop may write into maildrop/ but not read it, so it cannot
                // open the directory: it syncs the whole file system instead.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    nix::unistd::syncfs(&*file).map_err(std::io::Error::from)?;
                    break;
                }
                r => r?,
            }
        }
        // Deleted meanwhile (postsuper -d): not accepted after all.
        if file.metadata()?.nlink() == 0 {
            return Err(std::io::Error::other("queue file removed while being written").into());
        }
        self.finished = true;
        Ok(std::mem::take(&mut self.id))
    }
}

impl Drop for Writer {
    /// A writer dropped before `finish` was aborted: its file goes.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn nix_tid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// What the `C` record says, as Postfix reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sizes {
    /// Bytes of content records, from `data_offset` to the `X` record.
    data_size: u64,
    data_offset: u64,
    recipients: u64,
    /// The message size Postfix logs and announces (`SIZE=`).
    content_len: u64,
}

/// The whole `C` record, fixed width, so that finish can write it over the
/// placeholder in one piece: Postfix's six numbers (data size, data offset,
/// recipients, qmgr flags, content length, SMTPUTF8 flags), then the
/// checksum, which Postfix's readers do not look at.
fn size_record(s: &Sizes, crc: u32) -> Vec<u8> {
    let field = format!(
        "{:>w$} {:>w$} {:>w$} {:>w$} {:>w$} {:>w$} {crc:>w$}",
        s.data_size,
        s.data_offset,
        s.recipients,
        0,
        s.content_len,
        0,
        w = SIZE_FIELD
    );
    let mut out = record::head(kind::SIZE, field.len());
    out.extend_from_slice(field.as_bytes());
    out
}

/// What a file in a queue directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A message (the readiness bit is set).
    Complete,
    /// Named ahead of time by cleanup, not started (see crate::reserve):
    /// not a message, and not left over from a crash.
    Reserved,
    /// Being written, or left so by a crash: never acknowledged.
    Incomplete,
}

/// How a file stores its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `N`/`L` records from the content offset up to `X` (Postfix's format).
    Records,
    /// Raw bytes of the given length (postfix-rs's earlier format).
    Raw,
}

/// A queue file as read back: the envelope, and where the content is.
#[derive(Debug, Clone)]
pub struct QueueFile {
    pub path: PathBuf,
    pub arrival: SystemTime,
    pub sender: String,
    /// `name=value` attributes (`sender_fullname` for an `F` record).
    pub attrs: Vec<(String, String)>,
    pub recipients: Vec<Recipient>,
    /// Where the content starts.
    pub content_offset: u64,
    /// The message size as Postfix counts it (its `C` record's content
    /// length: the bytes of the content records).
    pub content_len: u64,
    pub(crate) layout: Layout,
    /// Where the message's bytes end (after `E`): a reused file may go on.
    pub(crate) end: u64,
    /// The file's length when it was read.
    pub(crate) len: u64,
    /// The file as opened, so the content stays readable while a delivery
    /// is in progress even if postsuper removes or moves the file (see
    /// [`QueueFile::close`]).
    pub(crate) file: Option<Arc<File>>,
    /// Where the checksummed bytes start (after the `C` record), and the
    /// checksum; none in files postfix-rs did not write.
    pub(crate) checksum: Option<(u64, u32)>,
    /// What a file Postfix wrote asks for that postfix-rs cannot do: a
    /// content filter (`L`) or a redirect (`>`) record, which Postfix's
    /// qmgr obeys for every recipient. qmgr holds such a message.
    pub postfix_only: Option<String>,
}

/// Envelope records are short; anything larger is damage.
const MAX_ENVELOPE_RECORD: usize = 1024 * 1024;
/// Content records are at most [`LINE_LIMIT`] in files Postfix or
/// postfix-rs wrote; a little more is tolerated, a lot is damage.
const MAX_CONTENT_RECORD: usize = 1024 * 1024;
/// Pointer jumps a file may make (Postfix allows as many backwards).
const MAX_JUMPS: usize = 10_000;

/// The record types Postfix's qmgr accepts outside the content (the
/// envelope and the extracted segment).
fn envelope_type(k: u8) -> bool {
    b"MCTcFILSDRO/WVA>K<ionEPre".contains(&k)
}

/// Postfix's names for the records it stores as attributes.
fn attr_record(k: u8) -> Option<&'static str> {
    Some(match k {
        kind::CTIME => "create_time",
        kind::DSN_ENVID => "envelope_id",
        kind::DSN_ORCPT => "dsn_orig_rcpt",
        kind::DSN_NOTIFY => "notify_flags",
        kind::DSN_RET => "ret_flags",
        _ => return None,
    })
}

impl QueueFile {
    /// Whether the file at `path` has its readiness bit (is complete).
    pub fn is_complete(path: &Path) -> std::io::Result<bool> {
        Ok(Self::readiness(&std::fs::metadata(path)?) == Readiness::Complete)
    }

    /// What the file is, by its mode.
    pub fn readiness(meta: &std::fs::Metadata) -> Readiness {
        let mode = meta.permissions().mode();
        if mode & 0o100 != 0 {
            Readiness::Complete
        } else if mode & 0o777 == MODE_RESERVED {
            Readiness::Reserved
        } else {
            Readiness::Incomplete
        }
    }

    /// Reads and checks a complete queue file (or maildrop file) as
    /// Postfix's qmgr and pickup read one. A file that does not parse, or
    /// lacks its end record, is [`Error::Corrupt`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = Arc::new(File::open(path)?);
        let total = file.metadata()?.len();
        let corrupt = |m: &str| Error::Corrupt(format!("{}: {m}", path.display()));
        let mut r = record::Reader::new(file.clone(), 0);
        let (_, first, data) = r
            .next(MAX_ENVELOPE_RECORD)?
            .ok_or_else(|| corrupt("empty file"))?;
        let mut sizes = None;
        let mut checksum = None;
        if first == kind::SIZE {
            let text = String::from_utf8_lossy(&data).into_owned();
            let nums: Vec<u64> = text
                .split_whitespace()
                .map(|n| n.parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt("bad size record"))?;
            let checked_from = r.pos();
            // postfix-rs's earlier format: two or three numbers, then a version.
            if nums.len() == 2 || nums.len() == 3 {
                if let Some((_, kind::VERP, v)) = r.next(MAX_ENVELOPE_RECORD)? {
                    if v == b"1" || v == b"2" {
                        return crate::legacy::open(path, file, total, &nums, checked_from);
                    }
                }
                r.seek(checked_from);
            }
            if nums.len() < 3 {
                return Err(corrupt("bad size record"));
            }
            let content_len = nums.get(4).copied().filter(|&n| n > 0).unwrap_or(nums[0]);
            // The content must lie inside the file, after the size record.
            match nums[1].checked_add(nums[0]) {
                Some(end) if nums[1] == 0 || (nums[1] >= checked_from && end <= total) => {}
                _ => return Err(corrupt("size record points outside the file")),
            }
            sizes = Some(Sizes {
                data_size: nums[0],
                data_offset: nums[1],
                recipients: nums[2],
                content_len,
            });
            if let Some(&crc) = nums.get(6) {
                let crc = u32::try_from(crc).map_err(|_| corrupt("bad checksum"))?;
                checksum = Some((checked_from, crc));
            }
        } else {
            // A maildrop file from Postfix's postdrop: no size record.
            r.seek(0);
        }
        let mut qf = Self {
            path: path.to_owned(),
            arrival: UNIX_EPOCH,
            sender: String::new(),
            attrs: Vec::new(),
            recipients: Vec::new(),
            content_offset: sizes.map_or(0, |s| s.data_offset),
            content_len: sizes.map_or(0, |s| s.content_len),
            layout: Layout::Records,
            end: 0,
            len: total,
            file: None,
            checksum,
            postfix_only: None,
        };
        let (mut time, mut sender, mut ident) = (None, None, None);
        let mut orig: Option<String> = None;
        let mut jumps = 0;
        let mut in_content = false;
        loop {
            if let Some(s) = sizes {
                if !in_content && r.pos() == s.data_offset && s.data_offset > 0 {
                    // The content is not the envelope's business: skip it,
                    // and it must end exactly at the `X` record.
                    r.seek(s.data_offset + s.data_size);
                    match r.next(MAX_ENVELOPE_RECORD)? {
                        Some((_, kind::XTRA, _)) => {}
                        _ => {
                            return Err(corrupt(
                                "no end-of-content record where the size record says",
                            ))
                        }
                    }
                    continue;
                }
            }
            let (at, k, data) = r
                .next(if in_content {
                    MAX_CONTENT_RECORD
                } else {
                    MAX_ENVELOPE_RECORD
                })?
                .ok_or_else(|| corrupt("missing end record"))?;
            if k == kind::PTR {
                match record::pointer(&data) {
                    Some(0) => {}
                    Some(to) if jumps < MAX_JUMPS => {
                        jumps += 1;
                        r.seek(to);
                    }
                    _ => return Err(corrupt("bad pointer record")),
                }
                continue;
            }
            if k == kind::DTXT {
                continue;
            }
            if in_content {
                // Only a maildrop file (no size record) is read through.
                match k {
                    kind::NORM | kind::CONT => continue,
                    kind::XTRA => {
                        in_content = false;
                        qf.content_len = at - qf.content_offset;
                        continue;
                    }
                    other => {
                        return Err(corrupt(&format!(
                            "unexpected record type '{}' in message content",
                            char::from(other)
                        )))
                    }
                }
            }
            if !envelope_type(k) {
                return Err(corrupt(&format!(
                    "unexpected record type '{}' at offset {at}",
                    char::from(k)
                )));
            }
            let text = String::from_utf8_lossy(&data).into_owned();
            match k {
                kind::TIME if time.is_none() => {
                    let mut p = text.split_whitespace().map(|n| n.parse::<u64>());
                    let secs = p
                        .next()
                        .and_then(Result::ok)
                        .ok_or_else(|| corrupt("bad time record"))?;
                    let usecs = p.next().and_then(Result::ok).unwrap_or(0).min(999_999);
                    time = Some(
                        Duration::from_secs(secs)
                            .checked_add(Duration::from_micros(usecs))
                            .and_then(|since| UNIX_EPOCH.checked_add(since))
                            .ok_or_else(|| corrupt("bad time record"))?,
                    );
                }
                kind::FROM if sender.is_none() => sender = Some(text),
                kind::FULL => qf.attrs.push((FULL_NAME.to_owned(), text)),
                kind::ATTR => {
                    let (name, value) = text
                        .split_once('=')
                        .map(|(n, v)| (n.trim(), v.trim()))
                        .filter(|(n, _)| !n.is_empty())
                        .ok_or_else(|| corrupt("bad attribute record"))?;
                    if name == "log_ident" && ident.is_none() {
                        ident = Some(value.to_owned());
                    }
                    qf.attrs.push((name.to_owned(), value.to_owned()));
                }
                kind::ORCP => orig = Some(text),
                kind::RCPT | kind::DONE | kind::DRCP => qf.recipients.push(Recipient {
                    address: text,
                    original: orig.take(),
                    offset: at,
                    done: k != kind::RCPT,
                }),
                kind::MESG if sizes.is_none() => {
                    in_content = true;
                    qf.content_offset = r.pos();
                }
                kind::END => {
                    qf.end = r.pos();
                    break;
                }
                kind::FILT if !text.is_empty() => {
                    qf.postfix_only = Some(format!("content filter {text}"));
                }
                kind::RDR if !text.is_empty() => {
                    qf.postfix_only = Some(format!("redirect to {text}"));
                }
                other => {
                    if let Some(name) = attr_record(other) {
                        qf.attrs.push((name.to_owned(), text));
                    }
                    // The rest (VERP, warnings, killed records...) is
                    // Postfix's and changes nothing about the delivery.
                }
            }
        }
        qf.arrival = time.ok_or_else(|| corrupt("missing arrival time record"))?;
        qf.sender = sender.ok_or_else(|| corrupt("missing sender record"))?;
        if qf.checksum.is_some() {
            // A file holds its own name: stale content in a reused file is
            // not this message.
            let id = ident.unwrap_or_default();
            if path.file_name() != Some(std::ffi::OsStr::new(&id)) {
                return Err(corrupt(&format!("queue ID record {id} names another file")));
            }
        }
        qf.file = Some(file);
        Ok(qf)
    }

    /// Checks the whole file against its checksum (recipients' `R`/`D`
    /// marks aside). qmgr does this once for every new message: a file
    /// whose commit a system crash interrupted may have its readiness bit
    /// without all of its data. Files without a checksum pass.
    pub fn verify(&self) -> Result<(), Error> {
        let Some((start, want)) = self.checksum else {
            return Ok(());
        };
        use std::os::unix::fs::FileExt;
        let file = match &self.file {
            Some(f) => f.clone(),
            None => Arc::new(File::open(&self.path)?),
        };
        let end = self.end;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = start;
        while pos < end {
            let want_len = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = file.read_at(&mut buf[..want_len], pos)?;
            if n == 0 {
                return Err(Error::Corrupt(format!(
                    "{}: truncated",
                    self.path.display()
                )));
            }
            // Delivered recipients were written as pending.
            for r in &self.recipients {
                if (pos..pos + n as u64).contains(&r.offset) {
                    buf[(r.offset - pos) as usize] = kind::RCPT;
                }
            }
            crc.update(&buf[..n]);
            pos += n as u64;
        }
        if crc.finalize() != want {
            return Err(Error::Corrupt(format!(
                "{}: checksum mismatch (a commit cut short by a crash)",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Cuts a reused file that is more than [`TRIM_SLACK`] longer than its
    /// message down to the message, so that the pool does not keep the
    /// blocks of one large message for ever. qmgr calls it when the message
    /// is done, before the file goes back to the pool. Says whether it cut.
    pub fn trim(&self) -> std::io::Result<bool> {
        if self.checksum.is_none() || self.len <= self.end + TRIM_SLACK {
            return Ok(false);
        }
        OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(self.end)?;
        Ok(true)
    }

    /// Lets go of the open file (qmgr keeps many messages in memory and
    /// needs no descriptor for them); [`QueueFile::content`] then reopens
    /// the path.
    pub fn close(&mut self) {
        self.file = None;
    }

    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A reader over the message content (LF line ends), from the file as
    /// it was opened.
    pub fn content(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let file = match &self.file {
            Some(f) => f.clone(),
            None => Arc::new(File::open(&self.path)?),
        };
        Ok(match self.layout {
            Layout::Records => Box::new(Content {
                records: record::Reader::new(file, self.content_offset),
                pending: Vec::new(),
                taken: 0,
                jumps: 0,
                done: false,
            }),
            Layout::Raw => Box::new(std::io::BufReader::with_capacity(
                64 * 1024,
                crate::legacy::Raw::new(file, self.content_offset, self.content_len),
            )),
        })
    }

    /// Recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| !r.done)
    }
}

/// The content records decoded: each `N` is a line with its line end, each
/// `L` a piece of one; pointers followed, padding skipped, up to `X`.
struct Content {
    records: record::Reader,
    /// Decoded bytes not yet handed out.
    pending: Vec<u8>,
    taken: usize,
    jumps: usize,
    done: bool,
}

impl Content {
    /// Decodes the next record into `pending`; false at the end of the content.
    fn refill(&mut self) -> std::io::Result<bool> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        while !self.done {
            self.taken = 0;
            let (_, k) = self
                .records
                .next_into(MAX_CONTENT_RECORD, &mut self.pending)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("unexpected end of file in message content".into()))?;
            match k {
                kind::NORM => {
                    self.pending.push(b'\n');
                    return Ok(true);
                }
                kind::CONT if !self.pending.is_empty() => return Ok(true),
                kind::CONT | kind::DTXT => {}
                kind::PTR => match record::pointer(&self.pending) {
                    Some(0) => {}
                    Some(to) if self.jumps < MAX_JUMPS => {
                        self.jumps += 1;
                        self.records.seek(to);
                    }
                    _ => return Err(bad("bad pointer record in message content".into())),
                },
                kind::XTRA => self.done = true,
                other => {
                    return Err(bad(format!(
                        "bad record type: {} in message content",
                        char::from(other)
                    )))
                }
            }
        }
        self.pending.clear();
        Ok(false)
    }
}

impl Read for Content {
    /// Fills `buf` with as many lines as fit: callers copy with few, large
    /// writes.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            if self.taken == self.pending.len() && !self.refill()? {
                break;
            }
            let k = (buf.len() - n).min(self.pending.len() - self.taken);
            buf[n..n + k].copy_from_slice(&self.pending[self.taken..self.taken + k]);
            self.taken += k;
            n += k;
        }
        Ok(n)
    }
}

/// Marks recipients done by flipping their record type in place, then
/// fsyncs once: after a crash they are not delivered again.
pub fn mark_done(path: &Path, offsets: &[u64]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    for &off in offsets {
        nix::sys::uio::pwrite(&f, &[kind::DONE], off as i64)?;
    }
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_queue as queue;

    fn write(q: &Queue, content: &[u8]) -> String {
        let mut w = Writer::create(q, SystemTime::now(), None).unwrap();
        w.envelope(&Envelope {
            sender: "hadoop@ywnds.com".into(),
            recipients: vec![
                ("openstack@ywnds.com".into(), None),
                ("root@ywnds.com".into(), Some("postmaster@ywnds.com".into())),
            ],
            attrs: vec![("client_address".into(), "127.0.0.1".into())],
        })
        .unwrap();
        w.content(content).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn written_file_reads_back_with_the_readiness_bit() {
        let (_t, q) = queue();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let id = write(&q, &body);
        assert!(crate::is_queue_id(&id), "{id}");
        let path = q.path(QueueName::Incoming, &id);
        assert!(QueueFile::is_complete(&path).unwrap());
        let qf = QueueFile::open(&path).unwrap();
        assert_eq!(qf.sender, "hadoop@ywnds.com");
        assert_eq!(qf.attr("client_address"), Some("127.0.0.1"));
        assert_eq!(qf.recipients.len(), 2);
        assert_eq!(
            qf.recipients[1].original.as_deref(),
            Some("postmaster@ywnds.com")
        );
        let mut got = Vec::new();
        qf.content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, body);
        assert!(qf.arrival <= SystemTime::now());
    }

    #[test]
    fn ids_are_unique() {
        let (_t, q) = queue();
        let ids: std::collections::HashSet<String> = (0..200).map(|_| write(&q, b"x\n")).collect();
        assert_eq!(ids.len(), 200);
    }

    #[test]
    fn marking_done_survives_reopening() {
        let (_t, q) = queue();
        let id = write(&q, b"hello\n");
        let path = q.path(QueueName::Incoming, &id);
        let qf = QueueFile::open(&path).unwrap();
        mark_done(&path, &[qf.recipients[1].offset]).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        assert_eq!(
            qf.pending().map(|r| r.address.as_str()).collect::<Vec<_>>(),
            ["openstack@ywnds.com"]
        );
    }

    #[test]
    fn a_recycled_longer_file_holds_exactly_the_new_message_and_is_trimmed_when_done() {
        // The commit never cuts; trim cuts a file much longer than its
        // message and leaves a little longer one alone.
        for (old_len, cut) in [(100_000, true), (3_000, false)] {
            let (t, q) = queue();
            let old = write(&q, &vec![b'x'; old_len]);
            let old_path = q.path(QueueName::Incoming, &old);
            let old_file_len = std::fs::metadata(&old_path).unwrap().len();
            crate::recycle::give_back(t.path(), &old_path).unwrap();
            let pool = crate::recycle::Pool::new(t.path());
            let mut w =
                Writer::create_in(&q, QueueName::Incoming, SystemTime::now(), Some(&pool)).unwrap();
            w.envelope(&Envelope {
                sender: "s@x".into(),
                recipients: vec![("r@x".into(), None)],
                attrs: vec![],
            })
            .unwrap();
            w.content(b"short\n").unwrap();
            let id = w.finish().unwrap();
            let path = q.path(QueueName::Incoming, &id);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), old_file_len);
            let qf = QueueFile::open(&path).unwrap();
            qf.verify().unwrap();
            let mut got = Vec::new();
            qf.content().unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(got, b"short\n");
            assert_eq!(qf.recipients.len(), 1);
            assert!(
                std::fs::read_dir(t.path().join("recycle"))
                    .unwrap()
                    .next()
                    .is_none(),
                "the file was reused"
            );
            assert_eq!(qf.trim().unwrap(), cut, "{old_len}");
            let end = qf.end;
            let len = std::fs::metadata(&path).unwrap().len();
            assert_eq!(len == end, cut, "{old_len}: file {len}, message {end}");
            QueueFile::open(&path).unwrap().verify().unwrap();
        }
    }

    #[test]
    fn verify_finds_a_commit_cut_short_but_not_done_marks() {
        let (_t, q) = queue();
        let id = write(&q, &vec![b'y'; 20_000]);
        let path = q.path(QueueName::Incoming, &id);
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().unwrap();
        mark_done(&path, &[qf.recipients[0].offset]).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        assert!(qf.recipients[0].done);
        qf.verify().expect("a done mark is not damage");
        // A page of the content that never reached the disk: the structure
        // still parses, the checksum does not match.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = usize::try_from(qf.content_offset).unwrap() + 9000;
        bytes[at] = 0;
        std::fs::write(&path, &bytes).unwrap();
        let qf = QueueFile::open(&path).expect("still parses");
        assert!(matches!(qf.verify(), Err(Error::Corrupt(m)) if m.contains("checksum")));
    }

    #[test]
    fn a_reused_file_holding_its_previous_message_is_corrupt() {
        // What a crash could leave of a recycled file: the old message,
        // whole and consistent, under the new name.
        let (_t, q) = queue();
        let old = write(&q, b"the previous message\n");
        let new = write(&q, b"x\n");
        let (old, new) = (
            q.path(QueueName::Incoming, &old),
            q.path(QueueName::Incoming, &new),
        );
        std::fs::copy(&old, &new).unwrap();
        assert!(QueueFile::open(&old).is_ok());
        assert!(
            matches!(QueueFile::open(&new), Err(Error::Corrupt(m)) if m.contains("names another file"))
        );
    }

    #[test]
    fn version_1_files_of_the_earlier_format_still_read() {
        let (_t, q) = queue();
        let path = q.path(QueueName::Incoming, "ABCDE123");
        let mut f = Vec::new();
        let content = b"Subject: old\n\nbody\n";
        let mut envelope = Vec::new();
        for (k, data) in [
            (kind::VERP, &b"1"[..]),
            (kind::TIME, b"1700000000 0"),
            (kind::FROM, b"s@x"),
            (kind::RCPT, b"r@x"),
            (kind::MESG, b""),
        ] {
            envelope.extend(record::head(k, data.len()));
            envelope.extend_from_slice(data);
        }
        let start = 2 + 2 * SIZE_FIELD + 1 + envelope.len();
        let size = format!("{start:>w$} {:>w$}", content.len(), w = SIZE_FIELD);
        f.extend(record::head(kind::SIZE, size.len()));
        f.extend_from_slice(size.as_bytes());
        f.extend(envelope);
        f.extend_from_slice(content);
        f.extend_from_slice(&[kind::XTRA, 0, kind::END, 0]);
        std::fs::write(&path, &f).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().unwrap();
        assert_eq!(qf.recipients[0].address, "r@x");
        let mut got = Vec::new();
        qf.content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, content);
    }

    #[test]
    fn content_is_stored_as_postfix_lines_and_long_lines_in_pieces() {
        let (_t, q) = queue();
        let long = vec![b'a'; 5000];
        let mut body = b"Subject: x\n\n".to_vec();
        body.extend_from_slice(&long);
        body.extend_from_slice(b"\nlast line without end");
        // Fed in awkward pieces.
        let mut w = Writer::create(&q, SystemTime::now(), None).unwrap();
        w.envelope(&Envelope {
            sender: "s@x".into(),
            recipients: vec![("r@x".into(), Some("orig@x".into()))],
            attrs: vec![(FULL_NAME.into(), "Alice".into())],
        })
        .unwrap();
        for piece in body.chunks(777) {
            w.content(piece).unwrap();
        }
        let id = w.finish().unwrap();
        let path = q.path(QueueName::Incoming, &id);
        let bytes = std::fs::read(&path).unwrap();
        // Postfix's C record: six numbers, then the checksum.
        assert_eq!(bytes[0], kind::SIZE);
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().unwrap();
        assert_eq!(qf.attr(FULL_NAME), Some("Alice"));
        assert_eq!(qf.attr("log_ident"), Some(id.as_str()));
        let mut got = Vec::new();
        qf.content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, body);
        // The records: N "Subject: x", N "", L 2048, L 2048, N 904, L "last...".
        let mut r = record::Reader::new(Arc::new(File::open(&path).unwrap()), qf.content_offset);
        let mut kinds = Vec::new();
        while let Some((_, k, d)) = r.next(usize::MAX).unwrap() {
            kinds.push((char::from(k), d.len()));
            if k == kind::END {
                break;
            }
        }
        assert_eq!(
            kinds,
            [
                ('N', 10),
                ('N', 0),
                ('L', 2048),
                ('L', 2048),
                ('N', 904),
                ('L', 21),
                ('X', 0),
                ('E', 0)
            ]
        );
    }

    /// Every queue file Debian's Postfix 3.7 wrote in tests/postfix-3.7.
    fn postfix_samples() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postfix-3.7");
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                !n.ends_with(".md") && !n.contains("-log.")
            })
            .collect();
        v.sort();
        v
    }

    /// The bytes of the sample whose name contains `name`.
    fn postfix_sample(name: &str) -> Vec<u8> {
        let samples = postfix_samples();
        let path = samples
            .iter()
            .find(|p| p.to_string_lossy().contains(name))
            .unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn postfix_3_7_queue_and_maildrop_files_read_as_postfix_reads_them() {
        let samples = postfix_samples();
        assert_eq!(samples.len(), 15);
        for path in &samples {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let qf = QueueFile::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
            qf.verify().unwrap();
            let mut content = Vec::new();
            qf.content()
                .unwrap()
                .read_to_end(&mut content)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = String::from_utf8_lossy(&content);
            assert!(!qf.recipients.is_empty(), "{name}");
            assert!(
                qf.arrival > UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                "{name}"
            );
            if name.starts_with("maildrop") {
                assert!(
                    text.contains("\n\n") || text.contains("Subject"),
                    "{name}: {text}"
                );
            } else {
                assert!(text.starts_with("Received: "), "{name}: {text}");
            }
        }
        let open = |n: &str| {
            QueueFile::open(
                samples
                    .iter()
                    .find(|p| p.to_string_lossy().contains(n))
                    .unwrap(),
            )
            .unwrap()
        };
        let qf = open("smtp-one-done-one-deferred");
        assert_eq!(qf.sender, "sender@client.test");
        let states: Vec<(&str, bool)> = qf
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.done))
            .collect();
        assert_eq!(states, [("user@localhost", true), ("y@remote.test", false)]);
        assert_eq!(qf.recipients[0].offset, 643);
        assert_eq!(qf.content_len, 350);
        let qf = open("smtp-dsn-8bit-longlines");
        let mut content = Vec::new();
        qf.content().unwrap().read_to_end(&mut content).unwrap();
        let text = String::from_utf8_lossy(&content);
        assert!(
            text.lines()
                .any(|l| l.starts_with("X-Long:") && l.len() == 2108),
            "{text}"
        );
        assert!(text.lines().any(|l| l.len() == 3000));
        assert_eq!(qf.attr("envelope_id"), Some("envid-123"));
        // O is the address as given; the DSN ORCPT is an attribute.
        assert_eq!(qf.recipients[0].original.as_deref(), Some("x@remote.test"));
        assert_eq!(qf.attr("dsn_orig_rcpt"), Some("rfc822;orig@remote.test"));
        let qf = open("bounce-null-sender");
        assert_eq!(qf.sender, "");
        let qf = open("maildrop-sendmail-t-dsn");
        assert_eq!(qf.sender, "bob@pfq.test");
        assert!(qf.recipients.len() >= 2, "{:?}", qf.recipients);
        let qf = open("maildrop-sendmail-root");
        assert_eq!(qf.attr(FULL_NAME), Some("Root User"));
        assert_eq!(open("smtp-25-recipients").recipients.len(), 25);
    }

    #[test]
    fn damage_postfix_would_call_corrupt_is_corrupt() {
        let good = postfix_sample("smtp-plain");
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("95A0B9943F6");
        // An unknown record type in the envelope, as Postfix's qmgr refuses.
        let mut bad = good.clone();
        let t = bad.iter().position(|&b| b == kind::TIME).unwrap();
        bad[t] = b'Z';
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(QueueFile::open(&path), Err(Error::Corrupt(m)) if m.contains("'Z'")));
        // No end record.
        std::fs::write(&path, &good[..good.len() - 2]).unwrap();
        assert!(matches!(QueueFile::open(&path), Err(Error::Corrupt(_))));
        // A size record whose content runs past the end of the file.
        let mut bad = good.clone();
        bad[2..17].copy_from_slice(format!("{:>15}", 999_999_999_999_999u64).as_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(
            matches!(QueueFile::open(&path), Err(Error::Corrupt(m)) if m.contains("outside")),
            "{:?}",
            QueueFile::open(&path).map(|q| q.recipients.len())
        );
    }

    #[test]
    fn a_postfix_filter_or_redirect_record_is_reported_never_dropped() {
        let good = postfix_sample("smtp-plain");
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("95A0B9943F6");
        let open = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            QueueFile::open(&path).unwrap()
        };
        assert_eq!(open(&good).postfix_only, None);
        // The A record `rewrite_context=local` (21 bytes) becomes a record of
        // the same length Postfix writes for content_filter or REDIRECT.
        let at = good
            .windows(16)
            .position(|w| w == b"rewrite_context=")
            .unwrap()
            - 2;
        for (k, data, what) in [
            (
                kind::FILT,
                "smtp:[127.0.0.1]:1002",
                "content filter smtp:[127.0.0.1]:1002",
            ),
            (
                kind::RDR,
                "quarantine@there.test",
                "redirect to quarantine@there.test",
            ),
        ] {
            let mut file = good.clone();
            file[at] = k;
            file[at + 2..at + 23].copy_from_slice(data.as_bytes());
            assert_eq!(open(&file).postfix_only.as_deref(), Some(what));
        }
    }

    #[test]
    fn aborted_writer_leaves_nothing() {
        let (t, q) = queue();
        let mut w = Writer::create(&q, SystemTime::now(), None).unwrap();
        w.envelope(&Envelope::default()).unwrap();
        w.content(b"partial").unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(t.path().join("incoming"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn damaged_files_are_corrupt_not_panics() {
        let (_t, q) = queue();
        let id = write(&q, b"hello world\n");
        let path = q.path(QueueName::Incoming, &id);
        let good = std::fs::read(&path).unwrap();
        // Every truncation, and a flipped byte at every position.
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                QueueFile::open(&path).is_err(),
                "truncated at {cut} accepted"
            );
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            std::fs::write(&path, &bad).unwrap();
            let _ = QueueFile::open(&path);
        }
        std::fs::write(&path, b"garbage that is not a queue file").unwrap();
        assert!(matches!(QueueFile::open(&path), Err(Error::Corrupt(_))));
        // An arrival time past what SystemTime holds (found by fuzzing):
        // the time record (type, one length byte, text) replaced.
        let at = good
            .iter()
            .position(|&b| b == rec::TIME)
            .expect("time record");
        let mut bad = good[..at].to_vec();
        let huge = format!("{} 0", u64::MAX);
        bad.extend_from_slice(&[rec::TIME, huge.len() as u8]);
        bad.extend_from_slice(huge.as_bytes());
        bad.extend_from_slice(&good[at + 2 + usize::from(good[at + 1])..]);
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(QueueFile::open(&path), Err(Error::Corrupt(_))));
    }
}
