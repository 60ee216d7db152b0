//! Writing a queue file: cleanup's (in a file from its reserve, or one
//! named now) and postdrop's, committed with one fsync.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::records::{size_record, Sizes, FULL_NAME};
use crate::mode::{MODE_COMPLETE, MODE_DROP_COMPLETE, MODE_DROP_WRITING, MODE_WRITING};
use crate::naming::name_new_file;
use crate::record::{self, kind, LINE_LIMIT};
use crate::{Error, Queue, QueueName};

/// How much a writer collects before writing it out.
const WRITE_BUFFER: usize = 64 * 1024;

/// What goes into a new queue file before the content.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<super::NewRecipient>,
    /// `name=value` attributes: client, helo, protocol, origin...
    pub attrs: Vec<(String, String)>,
    /// `content_filter` of the daemon that received the message, for
    /// qmgr (an `L` record, `transport:nexthop`).
    pub filter: Option<String>,
}

/// A record of the extracted segment.
#[derive(Debug)]
enum Extracted {
    Record(u8, String),
    Recipient(super::NewRecipient),
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
    /// When to warn the sender of a delay (`delay_warning_time`).
    warn_at: Option<u64>,
    /// What goes into the extracted segment: attributes, actions of the
    /// content inspection, their copies' recipients.
    extracted: Vec<Extracted>,
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
            warn_at: None,
            extracted: Vec::new(),
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

    /// Asks for a delay warning at `at` (seconds since the epoch): a `W`
    /// record, as Postfix's cleanup writes it, that qmgr overwrites with 0
    /// once the warning is sent. Call before [`Writer::envelope`].
    pub fn delay_warning(&mut self, at: u64) {
        self.warn_at = Some(at);
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
    /// `S`, each recipient as Postfix's cleanup writes it (its DSN requests
    /// as `notify_flags` and `dsn_orig_rcpt` attributes, `O` when it has an
    /// original, `R`), `M`.
    pub fn envelope(&mut self, env: &Envelope) -> Result<(), Error> {
        for (k, v) in &env.attrs {
            if k == FULL_NAME {
                self.put(kind::FULL, v.as_bytes())?;
            }
        }
        if let Some(at) = self.warn_at {
            // Outside the checksum, which must survive qmgr's rewrite.
            self.flush_buf()?;
            let data = format!("{at:>15}");
            let (head, n) = record::head_bytes(kind::WARN, data.len());
            self.file.write_all(&head[..n])?;
            self.file.write_all(data.as_bytes())?;
            self.pos += (n + data.len()) as u64;
        }
        if let Some(f) = &env.filter {
            self.put(kind::FILT, f.as_bytes())?;
        }
        self.put(kind::FROM, env.sender.as_bytes())?;
        for (k, v) in env.attrs.iter().filter(|(k, _)| k != FULL_NAME) {
            self.put(kind::ATTR, format!("{k}={v}").as_bytes())?;
        }
        for r in &env.recipients {
            self.recipient(r)?;
        }
        self.put(kind::MESG, b"")?;
        self.content_start = self.pos;
        Ok(())
    }

    /// A recipient as Postfix's cleanup writes it: its DSN requests as
    /// `notify_flags` and `dsn_orig_rcpt` attributes, `O` when it has an
    /// original, `R`.
    fn recipient(&mut self, r: &super::NewRecipient) -> std::io::Result<()> {
        if let Some(o) = &r.orcpt {
            self.put(kind::ATTR, format!("dsn_orig_rcpt={o}").as_bytes())?;
        }
        if r.notify != 0 {
            self.put(kind::ATTR, format!("notify_flags={}", r.notify).as_bytes())?;
        }
        if let Some(o) = &r.original {
            self.put(kind::ORCP, o.as_bytes())?;
        }
        self.put(kind::RCPT, r.address.as_bytes())?;
        self.recipients += 1;
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

    /// Moves the file, before it is finished, into queue `q` (cleanup's
    /// HOLD: the message never becomes visible to qmgr in incoming/).
    /// Both directories are synced when it is finished.
    pub fn relocate(&mut self, queue: &Queue, q: QueueName) -> Result<(), Error> {
        let dir = queue.dir_for(q, &self.id);
        let to = dir.join(&self.id);
        std::fs::rename(&self.path, &to)?;
        if let Some(from) = self.path.parent() {
            if !self.name_dirs.iter().any(|d| d == from) {
                self.name_dirs.push(from.to_owned());
            }
        }
        self.name_dirs.push(dir);
        self.path = to;
        Ok(())
    }

    /// An attribute learned from the content (`encoding=8bit`), written
    /// after it, in the extracted segment, as Postfix's cleanup does; a
    /// later attribute of the same name overrides an earlier one.
    pub fn extracted_attr(&mut self, name: &str, value: &str) {
        self.extracted
            .push(Extracted::Record(kind::ATTR, format!("{name}={value}")));
    }

    /// A FILTER action of the content inspection (`transport:nexthop`):
    /// it overrides the envelope's content filter.
    pub fn extracted_filter(&mut self, filter: &str) {
        self.extracted
            .push(Extracted::Record(kind::FILT, filter.to_owned()));
    }

    /// A REDIRECT action of the content inspection.
    pub fn extracted_redirect(&mut self, to: &str) {
        self.extracted
            .push(Extracted::Record(kind::RDR, to.to_owned()));
    }

    /// A recipient added after the content (a BCC action's copy).
    pub fn extracted_recipient(&mut self, r: super::NewRecipient) {
        self.extracted.push(Extracted::Recipient(r));
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
        for e in std::mem::take(&mut self.extracted) {
            match e {
                Extracted::Record(k, v) => self.put(k, v.as_bytes())?,
                Extracted::Recipient(r) => self.recipient(&r)?,
            }
        }
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
        file.write_all_at(&size_record(&sizes, crc), 0)?;
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::*;
    use crate::file::NewRecipient;

    use crate::file::test_support::write;
    use crate::file::QueueFile;
    use crate::test_queue as queue;

    #[test]
    fn written_file_reads_back_with_the_readiness_bit() {
        let (_t, q) = queue();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let id = write(&q, &body);
        assert!(crate::is_queue_id(&id), "{id}");
        let path = q.path(QueueName::Incoming, &id);
        let qf = QueueFile::open_if_complete(&path)
            .unwrap()
            .expect("complete");
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
    fn a_recycled_longer_file_holds_exactly_the_new_message_and_is_trimmed_when_done() {
        // The commit never cuts; trim cuts a file much longer than its
        // message and leaves a little longer one alone.
        for (old_len, cut) in [(100_000, true), (3_000, false)] {
            let (t, q) = queue();
            let old = write(&q, &vec![b'x'; old_len]);
            let old_path = q.path(QueueName::Incoming, &old);
            let old_file_len = std::fs::metadata(&old_path).unwrap().len();
            let sealer = crate::recycle::Sealer::new(t.path());
            sealer.give_back(&old_path).unwrap();
            sealer.seal().unwrap();
            let pool = crate::recycle::Pool::new(t.path());
            let mut w =
                Writer::create_in(&q, QueueName::Incoming, SystemTime::now(), Some(&pool)).unwrap();
            w.envelope(&Envelope {
                filter: None,
                sender: "s@x".into(),
                recipients: vec![NewRecipient::new("r@x", None)],
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
            let plan = qf.trim_plan();
            assert_eq!(plan.is_some(), cut, "{old_len}");
            if let Some(t) = plan {
                t.apply(&path).unwrap();
            }
            let end = qf.end;
            let len = std::fs::metadata(&path).unwrap().len();
            assert_eq!(len == end, cut, "{old_len}: file {len}, message {end}");
            QueueFile::open(&path).unwrap().verify().unwrap();
        }
    }

    /// The delay warning record: read back, outside the checksum, so that
    /// qmgr's rewrite (warning sent) leaves the file whole.
    #[test]
    fn the_delay_warning_record_can_be_cleared_in_place() {
        let (_t, q) = queue();
        let mut w = Writer::create(&q, SystemTime::now(), None).unwrap();
        w.delay_warning(1_800_000_000);
        w.envelope(&Envelope {
            filter: None,
            sender: "s@x".into(),
            recipients: vec![NewRecipient::new("r@x", None)],
            attrs: vec![],
        })
        .unwrap();
        w.content(b"Subject: x\n\nbody\n").unwrap();
        let id = w.finish().unwrap();
        let path = q.path(QueueName::Incoming, &id);
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().unwrap();
        let warn = qf.warn.unwrap();
        assert_eq!((warn.at, warn.len), (1_800_000_000, 15));
        crate::file::clear_warning(&path, &warn).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().expect("a cleared warning is not damage");
        assert_eq!(qf.warn.map(|w| w.at), Some(0));
        assert_eq!(qf.sender, "s@x");
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
            filter: None,
            sender: "s@x".into(),
            recipients: vec![NewRecipient::new("r@x", Some("orig@x".into()))],
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
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut r =
            record::Reader::new(record::Source::File(Arc::new(file), len), qf.content_offset);
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
}
