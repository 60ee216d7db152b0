//! Reading a queue file: the envelope as Postfix's qmgr and pickup read
//! it, checking it against its checksum, and the content as a stream.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::records::{Sizes, FULL_NAME};
use super::{legacy, Layout, QueueFile, Readiness, Recipient};
use crate::record::{self, kind, Source};
use crate::Error;

/// A reused file longer than its message by more than this is cut to size
/// when qmgr is done with it ([`QueueFile::trim`]), not at commit: cutting
/// frees blocks, and on a file system mounted with `discard` that waits for
/// the device (240 us here), on the path the client waits for. Less is left
/// in place, after the end record where no reader looks: cutting releases
/// the file's last block and the next message's write allocates one again,
/// which made a commit's fsync slower by a sixth here.
const TRIM_SLACK: u64 = 16 * 1024;

/// Envelope records are short; anything larger is damage.
const MAX_ENVELOPE_RECORD: usize = 1024 * 1024;
/// Content records are at most [`LINE_LIMIT`](crate::record::LINE_LIMIT) in files Postfix or
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

/// A reused queue file's cut to the size of its message
/// ([`QueueFile::trim_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    end: u64,
}

impl Trim {
    /// Cuts the file at `path` (the message's, still in place).
    pub fn apply(&self, path: &Path) -> std::io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(self.end)
    }
}

/// Whether the file is marked for forced expiration.
fn expired(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & crate::mode::MODE_EXPIRE != 0
}

impl QueueFile {
    /// What the file is, by its mode.
    pub fn readiness(meta: &std::fs::Metadata) -> Readiness {
        Readiness::of(meta.permissions().mode())
    }

    /// Reads and checks a complete queue file (or maildrop file) as
    /// Postfix's qmgr and pickup read one. A file that does not parse, or
    /// lacks its end record, is [`Error::Corrupt`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::read(path, true, true)
    }

    /// Whether the file is in postfix-rs's earliest format (its content not
    /// in records).
    pub fn is_legacy(&self) -> bool {
        self.layout == Layout::Raw
    }

    /// [`QueueFile::open`] for a file that may have left the queue (a copy
    /// postcat is shown): its queue ID record need not name it.
    pub fn open_copy(path: &Path) -> Result<Self, Error> {
        Self::read(path, true, false)
    }

    /// [`QueueFile::open`] for a delivery agent, which is told its
    /// recipients by qmgr: at the first recipient record it goes on at the
    /// content (the recipients are the envelope's last records, in
    /// Postfix's files and ours), so that opening a file for each of its
    /// ten thousand recipients does not read the list each time.
    pub fn open_for_delivery(path: &Path) -> Result<Self, Error> {
        Self::read(path, false, true)
    }

    /// [`QueueFile::open`] if the file is complete, `None` if it is not:
    /// the readiness bit is checked on the open file, so a stat by name
    /// first is not needed (showq does this for every message of a deep
    /// queue).
    pub fn open_if_complete(path: &Path) -> Result<Option<Self>, Error> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if Self::readiness(&meta) != Readiness::Complete {
            return Ok(None);
        }
        let mut qf = Self::parse(path, Arc::new(file), meta.len(), true, true)?;
        qf.expired = expired(&meta);
        Ok(Some(qf))
    }

    /// `own_name`: a file of ours must hold its own name (see below).
    fn read(path: &Path, keep_recipients: bool, own_name: bool) -> Result<Self, Error> {
        let file = Arc::new(File::open(path)?);
        let meta = file.metadata()?;
        let mut qf = Self::parse(path, file, meta.len(), keep_recipients, own_name)?;
        qf.expired = expired(&meta);
        Ok(qf)
    }

    fn parse(
        path: &Path,
        file: Arc<File>,
        total: u64,
        keep_recipients: bool,
        own_name: bool,
    ) -> Result<Self, Error> {
        let corrupt = |m: &str| Error::Corrupt(format!("{}: {m}", path.display()));
        let source = Source::open(file.clone(), total)?;
        let mut r = record::Reader::new(source.clone(), 0);
        let (_, first, data) = r
            .next(MAX_ENVELOPE_RECORD)?
            .ok_or_else(|| corrupt("empty file"))?;
        let mut sizes = None;
        let mut checksum = None;
        let mut mixed = true;
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
                        return legacy::open(path, file, total, &nums, checked_from);
                    }
                }
                r.seek(checked_from);
            }
            if nums.len() < 3 {
                return Err(corrupt("bad size record"));
            }
            let content_len = nums.get(4).copied().filter(|&n| n > 0).unwrap_or(nums[0]);
            // Postfix's qmgr flags; without them, recipients may be mixed
            // with other records (QMGR_READ_FLAG_MIXED_RCPT_OTHER).
            mixed = nums.get(3).is_none_or(|f| f & 1 != 0);
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
            filter: None,
            redirect: None,
            warn: None,
            expired: false,
        };
        let (mut time, mut sender, mut ident) = (None, None, None);
        let mut orig: Option<String> = None;
        // NOTIFY and ORCPT come before the recipient they belong to.
        let mut dsn_notify: u32 = 0;
        let mut dsn_orcpt: Option<String> = None;
        let mut jumps = 0;
        let mut in_content = false;
        let mut data = Vec::new();
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
            let limit = if in_content {
                MAX_CONTENT_RECORD
            } else {
                MAX_ENVELOPE_RECORD
            };
            let (at, k) = r
                .next_into(limit, &mut data)?
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
            // A recipient's records, and the attributes Postfix writes for
            // each (its NOTIFY and ORCPT).
            if !keep_recipients
                && (matches!(
                    k,
                    kind::RCPT
                        | kind::DONE
                        | kind::DRCP
                        | kind::ORCP
                        | kind::DSN_NOTIFY
                        | kind::DSN_ORCPT
                ) || (k == kind::ATTR
                    && (data.starts_with(b"notify_flags=") || data.starts_with(b"dsn_orig_rcpt="))))
            {
                // The recipients come last in the envelope, right before
                // the content, unless the size record's flags say other
                // records follow them (Postfix's "mixed" bit, as its qmgr
                // reads it): go to the content at once.
                if let Some(s) = sizes.filter(|s| s.data_offset > r.pos() && !mixed) {
                    r.seek(s.data_offset);
                }
                continue;
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
                kind::WARN => {
                    qf.warn = Some(super::Warn {
                        at: text.trim().parse().unwrap_or(0),
                        offset: r.pos() - data.len() as u64,
                        len: data.len(),
                    });
                }
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
                    match name {
                        "notify_flags" => dsn_notify = value.parse().unwrap_or(0),
                        "dsn_orig_rcpt" => dsn_orcpt = Some(value.to_owned()),
                        _ => qf.attrs.push((name.to_owned(), value.to_owned())),
                    }
                }
                kind::DSN_NOTIFY => dsn_notify = text.trim().parse().unwrap_or(0),
                kind::DSN_ORCPT => dsn_orcpt = Some(text),
                kind::ORCP => orig = Some(text),
                kind::RCPT | kind::DONE | kind::DRCP => qf.recipients.push(Recipient {
                    address: text,
                    original: orig.take(),
                    offset: at,
                    done: k != kind::RCPT,
                    dsn_notify: std::mem::take(&mut dsn_notify),
                    dsn_orcpt: dsn_orcpt.take(),
                }),
                kind::MESG if sizes.is_none() => {
                    in_content = true;
                    qf.content_offset = r.pos();
                }
                kind::END => {
                    qf.end = r.pos();
                    break;
                }
                kind::FILT => qf.filter = Some(text).filter(|t| !t.is_empty()),
                kind::RDR => qf.redirect = Some(text).filter(|t| !t.is_empty()),
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
        if qf.checksum.is_some() && own_name {
            // A file holds its own name: stale content in a reused file is
            // not this message.
            let id = ident.unwrap_or_default();
            if path.file_name() != Some(std::ffi::OsStr::new(&id)) {
                return Err(corrupt(&format!("queue ID record {id} names another file")));
            }
        }
        qf.file = Some(source);
        Ok(qf)
    }

    /// The file as opened, or, once closed, opened again (read up to its
    /// end, whatever its length now).
    fn source(&self) -> std::io::Result<Source> {
        Ok(match &self.file {
            Some(s) => s.clone(),
            None => Source::File(Arc::new(File::open(&self.path)?), u64::MAX),
        })
    }

    /// Checks the whole file against its checksum (recipients' `R`/`D`
    /// marks aside). qmgr does this once for every new message: a file
    /// whose commit a system crash interrupted may have its readiness bit
    /// without all of its data. Files without a checksum pass.
    pub fn verify(&self) -> Result<(), Error> {
        let Some((start, want)) = self.checksum else {
            return Ok(());
        };
        let file = self.source()?;
        let end = self.end;
        let mut crc = crc32fast::Hasher::new();
        // No larger than the file: a 64 KiB buffer zeroed, and given back
        // to the allocator, for every small message costs more than its CRC.
        let size =
            usize::try_from(end.saturating_sub(start)).map_or(64 * 1024, |n| n.min(64 * 1024));
        let mut buf = vec![0u8; size.max(1)];
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
            // The delay warning record is outside the checksum (qmgr
            // rewrites it): its bytes are left out.
            let mut chunk: &[u8] = &buf[..n];
            if let Some(w) = self.warn {
                // The record's head: its type and a one-byte length (the
                // only form postfix-rs writes; Postfix's own files have no
                // checksum).
                let (ws, we) = (w.offset.saturating_sub(2), w.offset + w.len as u64);
                let (cs, ce) = (pos, pos + n as u64);
                if ws < ce && we > cs {
                    let a = (ws.max(cs) - cs) as usize;
                    let b = (we.min(ce) - cs) as usize;
                    crc.update(&chunk[..a]);
                    chunk = &chunk[b..];
                }
            }
            crc.update(chunk);
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

    /// The cut of a reused file that is more than [`TRIM_SLACK`] longer
    /// than its message down to the message, so that the pool does not keep
    /// the blocks of one large message for ever; `None` when there is
    /// nothing to cut. qmgr keeps it (not the file) for every message in
    /// `active/` and applies it when the message is done, before the file
    /// goes back to the pool.
    pub fn trim_plan(&self) -> Option<Trim> {
        (self.checksum.is_some() && self.len > self.end + TRIM_SLACK)
            .then_some(Trim { end: self.end })
    }

    /// Lets go of the open file (qmgr keeps many messages in memory and
    /// needs no descriptor for them); [`QueueFile::content`] then reopens
    /// the path.
    pub fn close(&mut self) {
        self.file = None;
    }

    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        // The last one counts, as in Postfix's cleanup and qmgr: the
        // extracted segment's `encoding` overrides the envelope's.
        self.attrs
            .iter()
            .rfind(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A reader over the message content (LF line ends), from the file as
    /// it was opened.
    pub fn content(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let source = self.source()?;
        Ok(match self.layout {
            Layout::Records => Box::new(Content {
                records: record::Reader::new(source, self.content_offset),
                pending: Vec::new(),
                taken: 0,
                jumps: 0,
                done: false,
            }),
            Layout::Raw => Box::new(std::io::BufReader::with_capacity(
                64 * 1024,
                legacy::Raw::new(source, self.content_offset, self.content_len),
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    use crate::file::mark_done;
    use crate::file::rec;
    use crate::file::test_support::write;
    use crate::test_queue as queue;
    use crate::QueueName;

    #[test]
    fn a_delivery_agent_gets_everything_but_the_recipients() {
        let (_t, q) = queue();
        let id = write(&q, b"Subject: x\n\nbody\n");
        let path = q.path(QueueName::Incoming, &id);
        let (all, agent) = (
            QueueFile::open(&path).unwrap(),
            QueueFile::open_for_delivery(&path).unwrap(),
        );
        assert_eq!(all.recipients.len(), 2);
        assert!(agent.recipients.is_empty());
        assert_eq!(agent.sender, all.sender);
        assert_eq!(agent.arrival, all.arrival);
        assert_eq!(agent.attr("client_address"), Some("127.0.0.1"));
        assert_eq!(agent.content_len, all.content_len);
        let mut body = String::new();
        agent.content().unwrap().read_to_string(&mut body).unwrap();
        assert_eq!(body, "Subject: x\n\nbody\n");
    }

    #[test]
    fn forced_expiration_marks_a_complete_file_once_and_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let (_t, q) = queue();
        let id = write(&q, b"Subject: x\n\nbody\n");
        let path = q.path(QueueName::Incoming, &id);
        assert!(!QueueFile::open(&path).unwrap().expired);
        assert!(crate::file::force_expire(&path).unwrap());
        assert_eq!(mode(&path), 0o710, "Postfix's mark: group execute");
        assert!(QueueFile::open(&path).unwrap().expired);
        assert!(!crate::file::force_expire(&path).unwrap(), "already marked");
        // Being written: not a message to expire.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!crate::file::force_expire(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        // A symbolic link is not followed.
        let link = q.path(QueueName::Deferred, &id);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(crate::file::force_expire(&link).is_err());
        // A file with a second name is not one message's alone.
        let other = write(&q, b"Subject: y\n\nbody\n");
        let other = q.path(QueueName::Incoming, &other);
        std::fs::hard_link(&other, q.path(QueueName::Hold, "B0B0B0B0B0")).unwrap_or_else(|_| {
            std::fs::create_dir_all(q.path(QueueName::Hold, "B0B0B0B0B0").parent().unwrap())
                .unwrap();
            std::fs::hard_link(&other, q.path(QueueName::Hold, "B0B0B0B0B0")).unwrap()
        });
        assert!(!crate::file::force_expire(&other).unwrap());
        assert_eq!(mode(&other), 0o700);
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
    fn a_small_file_is_read_once_when_opened_a_large_one_as_needed() {
        let (_t, q) = queue();
        let small = q.path(QueueName::Incoming, &write(&q, b"Subject: small\n\nbody\n"));
        let qf = QueueFile::open_for_delivery(&small).unwrap();
        // Overwritten in place after the open: the reader has the bytes.
        let mut bytes = std::fs::read(&small).unwrap();
        let at = bytes.windows(5).position(|w| w == b"small").unwrap();
        bytes[at..at + 5].copy_from_slice(b"SMALL");
        std::fs::write(&small, &bytes).unwrap();
        let mut body = String::new();
        qf.content().unwrap().read_to_string(&mut body).unwrap();
        assert_eq!(body, "Subject: small\n\nbody\n");
        qf.verify().unwrap();

        // Past the image size: read from the file, in pieces, to its end.
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuv\n";
        let content: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 3000)
            .collect();
        let large = q.path(QueueName::Incoming, &write(&q, &content));
        assert!(std::fs::metadata(&large).unwrap().len() > record::IMAGE_MAX);
        let qf = QueueFile::open(&large).unwrap();
        qf.verify().unwrap();
        let mut got = Vec::new();
        qf.content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, content);
        // Cut short after it was opened: its content is cut short too.
        let len = std::fs::metadata(&large).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&large)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        assert!(qf.verify().is_err());
        assert!(qf.content().unwrap().read_to_end(&mut Vec::new()).is_err());
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

    /// A delivery agent reads Postfix's files as qmgr does, recipients
    /// aside: the same sender, attributes, arrival, filter, redirect and
    /// content.
    #[test]
    fn postfix_3_7_files_read_for_delivery_lack_only_their_recipients() {
        for path in &postfix_samples() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (all, agent) = (
                QueueFile::open(path).unwrap(),
                QueueFile::open_for_delivery(path).unwrap_or_else(|e| panic!("{name}: {e}")),
            );
            assert!(agent.recipients.is_empty(), "{name}");
            assert_eq!(agent.sender, all.sender, "{name}");
            assert_eq!(agent.arrival, all.arrival, "{name}");
            // The attributes Postfix writes per recipient aside.
            let per_recipient =
                |(k, _): &&(String, String)| k != "notify_flags" && k != "dsn_orig_rcpt";
            let attrs = |q: &QueueFile| {
                q.attrs
                    .iter()
                    .filter(per_recipient)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(attrs(&agent), attrs(&all), "{name}");
            assert_eq!(
                (&agent.filter, &agent.redirect),
                (&all.filter, &all.redirect),
                "{name}"
            );
            let read = |q: &QueueFile| {
                let mut c = Vec::new();
                q.content().unwrap().read_to_end(&mut c).unwrap();
                c
            };
            assert_eq!(read(&agent), read(&all), "{name}");
        }
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
        // O is the address as given; the DSN ORCPT belongs to its recipient.
        assert_eq!(qf.recipients[0].original.as_deref(), Some("x@remote.test"));
        assert_eq!(
            qf.recipients[0].dsn_orcpt.as_deref(),
            Some("rfc822;orig@remote.test")
        );
        assert_eq!(qf.attr("dsn_orig_rcpt"), None);
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
    fn a_postfix_filter_or_redirect_record_is_read() {
        let good = postfix_sample("smtp-plain");
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("95A0B9943F6");
        let open = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            QueueFile::open(&path).unwrap()
        };
        let none = open(&good);
        assert_eq!((none.filter, none.redirect), (None, None));
        // The A record `rewrite_context=local` (21 bytes) becomes a record of
        // the same length Postfix writes for content_filter or REDIRECT.
        let at = good
            .windows(16)
            .position(|w| w == b"rewrite_context=")
            .unwrap()
            - 2;
        for (k, data) in [
            (kind::FILT, "smtp:[127.0.0.1]:1002"),
            (kind::RDR, "quarantine@there.test"),
        ] {
            let mut file = good.clone();
            file[at] = k;
            file[at + 2..at + 23].copy_from_slice(data.as_bytes());
            let qf = open(&file);
            let got = if k == kind::FILT {
                qf.filter
            } else {
                qf.redirect
            };
            assert_eq!(got.as_deref(), Some(data));
        }
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
