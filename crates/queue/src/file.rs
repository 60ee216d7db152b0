//! The queue file: envelope records, the message content, and an end marker.
//!
//! A file is a sequence of records, each `type byte, length (base-128
//! varint, low 7 bits first), data`, like Postfix's. The content sits raw
//! between the `M` record and the `X` record; the first record (`C`, fixed
//! width) says where it starts and how long it is. A file counts only when
//! it ends with `E` **and** its mode has the owner-execute bit (0700),
//! Postfix's readiness bit, set right before the one fsync that commits the
//! file. The `C` record also holds a CRC-32 of the rest of the file and the
//! `I` record the file's own queue ID, so that a file a system crash caught
//! in that fsync (readiness bit on disk, some data not) is found out by qmgr
//! ([`QueueFile::verify`]) instead of delivered. Delivering a recipient flips
//! its `R` record's type byte to `D` in place, so progress survives a crash.
//! See docs/QUEUE-FORMAT.md.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Queue, QueueName};

/// Queue file format version, in the `V` record.
pub const VERSION: &str = "2";
/// The version before the checksum and the `I` record; still read.
const VERSION_1: &str = "1";

/// Record types.
pub mod rec {
    pub const SIZE: u8 = b'C';
    pub const VERSION: u8 = b'V';
    pub const ID: u8 = b'I';
    pub const TIME: u8 = b'T';
    pub const SENDER: u8 = b'S';
    pub const ATTR: u8 = b'A';
    pub const ORIG_RCPT: u8 = b'O';
    pub const RCPT: u8 = b'R';
    pub const DONE: u8 = b'D';
    pub const CONTENT: u8 = b'M';
    pub const CONTENT_END: u8 = b'X';
    pub const END: u8 = b'E';
}

/// Width of each number in the `C` record (Postfix uses %15ld).
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
/// What follows the content: the empty `X` and `E` records.
const TRAILER: [u8; 4] = [rec::CONTENT_END, 0, rec::END, 0];
pub(crate) const MODE_WRITING: u32 = 0o600;
/// A file cleanup named ahead of time and has not started (crate::reserve).
pub(crate) const MODE_RESERVED: u32 = 0o400;
/// The same for maildrop files, which pickup reads as another user.
const MODE_DROP_WRITING: u32 = 0o444;
const MODE_DROP_COMPLETE: u32 = 0o544;

/// A record's type byte and length.
fn record_head(kind: u8, data_len: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(6);
    head.push(kind);
    let mut len = data_len;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            head.push(byte);
            break;
        }
        head.push(byte | 0x80);
    }
    head
}

/// Reads one record; `Ok(None)` at a clean end of file.
fn get_record(r: &mut impl Read, limit: usize) -> Result<Option<(u8, Vec<u8>)>, Error> {
    let mut kind = [0u8];
    if r.read(&mut kind)? == 0 {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let mut b = [0u8];
        r.read_exact(&mut b)
            .map_err(|_| Error::Corrupt("truncated record length".into()))?;
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return Err(Error::Corrupt("record length too long".into()));
        }
    }
    if len > limit {
        return Err(Error::Corrupt(format!(
            "record of {len} bytes exceeds {limit}"
        )));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)
        .map_err(|_| Error::Corrupt("truncated record".into()))?;
    Ok(Some((kind[0], data)))
}

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

/// A queue file being written by cleanup.
#[derive(Debug)]
pub struct Writer {
    id: String,
    path: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    content_start: u64,
    content_len: u64,
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
            out: BufWriter::with_capacity(64 * 1024, file),
            pos: 0,
            content_start: 0,
            content_len: 0,
            complete_mode: complete,
            crc: crc32fast::Hasher::new(),
            name_dirs,
            finished: false,
        };
        // The size record is filled in by finish, and is not checksummed.
        let size = size_record(0, 0, 0);
        w.out.write_all(&size)?;
        w.pos = size.len() as u64;
        w.put(rec::VERSION, VERSION.as_bytes())?;
        let id = w.id.clone();
        w.put(rec::ID, id.as_bytes())?;
        let t = arrival.duration_since(UNIX_EPOCH).unwrap_or_default();
        w.put(
            rec::TIME,
            format!("{} {}", t.as_secs(), t.subsec_micros()).as_bytes(),
        )?;
        Ok(w)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn put(&mut self, kind: u8, data: &[u8]) -> std::io::Result<()> {
        let head = record_head(kind, data.len());
        self.out.write_all(&head)?;
        self.out.write_all(data)?;
        self.crc.update(&head);
        self.crc.update(data);
        self.pos += (head.len() + data.len()) as u64;
        Ok(())
    }

    /// Writes the envelope and opens the content section.
    pub fn envelope(&mut self, env: &Envelope) -> Result<(), Error> {
        self.put(rec::SENDER, env.sender.as_bytes())?;
        for (k, v) in &env.attrs {
            self.put(rec::ATTR, format!("{k}={v}").as_bytes())?;
        }
        for (addr, orig) in &env.recipients {
            if let Some(o) = orig {
                self.put(rec::ORIG_RCPT, o.as_bytes())?;
            }
            self.put(rec::RCPT, addr.as_bytes())?;
        }
        self.put(rec::CONTENT, b"")?;
        self.content_start = self.pos;
        Ok(())
    }

    /// Appends message content (LF line ends).
    pub fn content(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.pos += bytes.len() as u64;
        self.content_len += bytes.len() as u64;
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
        self.put(rec::CONTENT_END, b"")?;
        self.put(rec::END, b"")?;
        self.out.flush()?;
        let crc = std::mem::take(&mut self.crc).finalize();
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&size_record(self.content_start, self.content_len, crc))?;
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

/// The whole `C` record, fixed width, so that finish can write it over the
/// placeholder in one piece.
fn size_record(start: u64, len: u64, crc: u32) -> Vec<u8> {
    let field = format!("{start:>w$} {len:>w$} {crc:>w$}", w = SIZE_FIELD);
    let mut out = record_head(rec::SIZE, field.len());
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

/// A queue file as read back: the envelope, and where the content is.
#[derive(Debug, Clone)]
pub struct QueueFile {
    pub path: PathBuf,
    pub arrival: SystemTime,
    pub sender: String,
    pub attrs: Vec<(String, String)>,
    pub recipients: Vec<Recipient>,
    pub content_offset: u64,
    pub content_len: u64,
    /// The file's length when it was read: a reused file may go on after
    /// the message.
    len: u64,
    /// The file as opened, so the content stays readable while a delivery
    /// is in progress even if postsuper removes or moves the file (see
    /// [`QueueFile::close`]).
    file: Option<Arc<File>>,
    /// Where the checksummed bytes start (after the `C` record), and the
    /// checksum; none in a version 1 file.
    checksum: Option<(u64, u32)>,
}

/// Envelope records are short; anything larger is damage.
const MAX_ENVELOPE_RECORD: usize = 64 * 1024;

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

    /// Reads and checks a complete queue file. A file that does not parse, or
    /// lacks its end marker, is [`Error::Corrupt`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path)?;
        let total = file.metadata()?.len();
        let mut r = BufReader::with_capacity(8192, file);
        let corrupt = |m: &str| Error::Corrupt(format!("{}: {m}", path.display()));
        let (kind, size) =
            get_record(&mut r, MAX_ENVELOPE_RECORD)?.ok_or_else(|| corrupt("empty file"))?;
        if kind != rec::SIZE {
            return Err(corrupt("no size record"));
        }
        let size = String::from_utf8_lossy(&size).into_owned();
        let mut nums = size.split_whitespace().map(|n| n.parse::<u64>());
        let (Some(Ok(content_offset)), Some(Ok(content_len))) = (nums.next(), nums.next()) else {
            return Err(corrupt("bad size record"));
        };
        let crc = match nums.next() {
            None => None,
            Some(Ok(c)) => Some(u32::try_from(c).map_err(|_| corrupt("bad checksum"))?),
            Some(Err(_)) => return Err(corrupt("bad size record")),
        };
        let mut pos = record_len(size.len());
        let mut qf = Self {
            path: path.to_owned(),
            arrival: UNIX_EPOCH,
            sender: String::new(),
            attrs: Vec::new(),
            recipients: Vec::new(),
            content_offset,
            content_len,
            len: total,
            file: None,
            checksum: None,
        };
        let checked_from = pos;
        let mut orig = None;
        let mut version = None;
        let mut id = None;
        loop {
            let (kind, data) = get_record(&mut r, MAX_ENVELOPE_RECORD)?
                .ok_or_else(|| corrupt("no content record"))?;
            let text = String::from_utf8_lossy(&data).into_owned();
            let rec_start = pos;
            pos += record_len(data.len());
            match kind {
                rec::VERSION if version.is_none() && (text == VERSION || text == VERSION_1) => {
                    version = Some(text)
                }
                rec::VERSION => return Err(corrupt(&format!("unsupported version {text}"))),
                rec::ID if id.is_none() => id = Some(text),
                rec::TIME => {
                    let mut p = text.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                    let secs = p.next().unwrap_or(0);
                    let usecs = p.next().unwrap_or(0);
                    qf.arrival = Duration::from_secs(secs)
                        .checked_add(Duration::from_micros(usecs))
                        .and_then(|since| UNIX_EPOCH.checked_add(since))
                        .ok_or_else(|| corrupt("bad time record"))?;
                }
                rec::SENDER => qf.sender = text,
                rec::ATTR => {
                    if let Some((k, v)) = text.split_once('=') {
                        qf.attrs.push((k.to_owned(), v.to_owned()));
                    }
                }
                rec::ORIG_RCPT => orig = Some(text),
                rec::RCPT | rec::DONE => qf.recipients.push(Recipient {
                    address: text,
                    original: orig.take(),
                    offset: rec_start,
                    done: kind == rec::DONE,
                }),
                rec::CONTENT => break,
                other => {
                    return Err(corrupt(&format!(
                        "unexpected record type {:?}",
                        char::from(other)
                    )))
                }
            }
        }
        match (version.as_deref(), crc, id) {
            (None, _, _) => return Err(corrupt("no version record")),
            (Some(VERSION_1), None, None) => {}
            (Some(VERSION), Some(crc), Some(id)) => {
                // A file holds its own name: stale content in a reused file is
                // not this message.
                if path.file_name() != Some(std::ffi::OsStr::new(&id)) {
                    return Err(corrupt(&format!("queue ID record {id} names another file")));
                }
                qf.checksum = Some((checked_from, crc));
            }
            _ => return Err(corrupt("size or ID record does not match the version")),
        }
        // What follows the end record, if anything, is left from the
        // file's previous message (see TRIM_SLACK).
        if pos != content_offset || content_offset + content_len + TRAILER.len() as u64 > total {
            return Err(corrupt("content offsets do not match the file"));
        }
        // The trailer: X then E, right after the content.
        let mut file = r.into_inner();
        file.seek(SeekFrom::Start(content_offset + content_len))?;
        let mut tail = [0u8; TRAILER.len()];
        file.read_exact(&mut tail)
            .map_err(|_| corrupt("truncated"))?;
        if tail != TRAILER {
            return Err(corrupt("missing end marker"));
        }
        qf.file = Some(Arc::new(file));
        Ok(qf)
    }

    /// Checks the whole file against its checksum (recipients' `R`/`D`
    /// marks aside). qmgr does this once for every new message: a file
    /// whose commit a system crash interrupted may have its readiness bit
    /// without all of its data.
    pub fn verify(&self) -> Result<(), Error> {
        let Some((start, want)) = self.checksum else {
            return Ok(());
        };
        use std::os::unix::fs::FileExt;
        let file = match &self.file {
            Some(f) => f.clone(),
            None => Arc::new(File::open(&self.path)?),
        };
        let end = self.end();
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
                    buf[(r.offset - pos) as usize] = rec::RCPT;
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
        let end = self.end();
        if self.len <= end + TRIM_SLACK {
            return Ok(false);
        }
        OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(end)?;
        Ok(true)
    }

    /// Where the message ends: after the content's trailer.
    fn end(&self) -> u64 {
        self.content_offset + self.content_len + TRAILER.len() as u64
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

    /// A reader over the message content, from the file as it was opened.
    pub fn content(&self) -> std::io::Result<impl Read> {
        let file = match &self.file {
            Some(f) => f.clone(),
            None => Arc::new(File::open(&self.path)?),
        };
        Ok(BufReader::with_capacity(
            64 * 1024,
            Content {
                file,
                pos: self.content_offset,
                end: self.content_offset + self.content_len,
            },
        ))
    }

    /// Recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| !r.done)
    }
}

/// Positional reads of one byte range: readers of the same open file do not
/// share a file offset.
struct Content {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = usize::try_from(self.end - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn record_len(data_len: usize) -> u64 {
    let mut n = 1;
    let mut l = data_len >> 7;
    while l > 0 {
        n += 1;
        l >>= 7;
    }
    (1 + n + data_len) as u64
}

/// Marks recipients done by flipping their record type in place, then
/// fsyncs once: after a crash they are not delivered again.
pub fn mark_done(path: &Path, offsets: &[u64]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    for &off in offsets {
        nix::sys::uio::pwrite(&f, &[rec::DONE], off as i64)?;
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
            let end = qf.end();
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
    fn version_1_files_still_read() {
        let (_t, q) = queue();
        let path = q.path(QueueName::Incoming, "ABCDE123");
        let mut f = Vec::new();
        let content = b"Subject: old\n\nbody\n";
        let mut envelope = Vec::new();
        for (kind, data) in [
            (rec::VERSION, &b"1"[..]),
            (rec::TIME, b"1700000000 0"),
            (rec::SENDER, b"s@x"),
            (rec::RCPT, b"r@x"),
            (rec::CONTENT, b""),
        ] {
            envelope.extend(record_head(kind, data.len()));
            envelope.extend_from_slice(data);
        }
        let start = 2 + 2 * SIZE_FIELD + 1 + envelope.len();
        let size = format!("{start:>w$} {:>w$}", content.len(), w = SIZE_FIELD);
        f.extend(record_head(rec::SIZE, size.len()));
        f.extend_from_slice(size.as_bytes());
        f.extend(envelope);
        f.extend_from_slice(content);
        f.extend_from_slice(&[rec::CONTENT_END, 0, rec::END, 0]);
        std::fs::write(&path, &f).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().unwrap();
        assert_eq!(qf.recipients[0].address, "r@x");
        let mut got = Vec::new();
        qf.content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, content);
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
