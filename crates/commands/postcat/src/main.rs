//! postcat(1): shows queue files as text, in Postfix's layout: the envelope
//! records (`sender:`, `recipient:`...), the message content, and the
//! section markers (`*** ENVELOPE RECORDS deferred/A/ID ***`).
//!
//! `-q ID...` finds each message in the queue; otherwise the arguments are
//! file names (a copy of a queue file too), and without any, standard
//! input is read. `-e`, `-h` and `-b` show only the envelope, the header or the
//! body (any combination; the markers come with the envelope).

use std::io::{Read, Write};
use std::path::Path;

use clap::Parser;
use pfx_maillog::fatal;
use pfx_queue::file::QueueFile;
use pfx_queue::record::Records;
use pfx_queue::Queue;

const USAGE: &str = "postcat [-b (body text)] [-c config_dir] [-d (decimal record type)] [-e (envelope records)] [-h (header text)] [-o (record offsets)] [-q (access queue)] [-v] [file(s)...]";

#[derive(Parser, Debug)]
#[command(
    name = "postcat",
    version,
    about = "Show postfix-rs queue files as text",
    disable_help_flag = true
)]
struct Args {
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Show the body.
    #[arg(short = 'b')]
    body: bool,
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Show each record's type in decimal too.
    #[arg(short = 'd')]
    decimal: bool,
    /// Show the envelope records.
    #[arg(short = 'e')]
    envelope: bool,
    /// Show the header.
    #[arg(short = 'h')]
    header: bool,
    /// Show each record's offset in the file.
    #[arg(short = 'o')]
    offsets: bool,
    /// The arguments are queue IDs.
    #[arg(short = 'q')]
    queue: bool,
    /// Verbose.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    _verbose: u8,
    /// Queue files, or queue IDs with -q.
    files: Vec<String>,
}

fn main() {
    let args: Args = pfx_cli::parse_args("postcat", USAGE);
    let (mut env, mut hdr, mut body) = (args.envelope, args.header, args.body);
    if !(env || hdr || body) {
        (env, hdr, body) = (true, true, true);
    }
    let show = Show {
        env,
        hdr,
        body,
        offsets: args.offsets,
        decimal: args.decimal,
    };
    if args.queue {
        let dir = args.config.dir();
        let cfg = pfx_cli::load_config(&dir);
        let queue = Queue::new(cfg.get("queue_directory").unwrap_or_else(|e| fatal(e)));
        for id in &args.files {
            let found = pfx_queue::is_queue_id(id)
                .then(|| queue.locate(id))
                .flatten()
                .map(|q| queue.path(q, id));
            let Some(path) = found else {
                fatal(format!("open queue file {id}: No such file or directory"))
            };
            let label = path.strip_prefix(queue.root()).unwrap_or(&path).to_owned();
            print(&path, &label, id, show, QueueFile::open);
        }
    } else if args.files.is_empty() {
        // As Postfix's: standard input, shown as `stdin`. Read whole into
        // a file of its own, since a queue file is read by offsets.
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .unwrap_or_else(|e| fatal(format!("read stdin: {e}")));
        let copy = std::fs::File::from(
            nix::sys::memfd::memfd_create(c"postcat-stdin", nix::sys::memfd::MFdFlags::empty())
                .unwrap_or_else(|e| fatal(format!("memfd_create: {e}"))),
        );
        (&copy)
            .write_all(&data)
            .unwrap_or_else(|e| fatal(format!("write stdin copy: {e}")));
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&copy));
        print(
            Path::new(&path),
            Path::new("stdin"),
            "stdin",
            show,
            QueueFile::open_copy,
        );
    } else {
        // Files are shown wherever they are: a copy of a queue file too.
        for f in &args.files {
            print(Path::new(f), Path::new(f), f, show, QueueFile::open_copy);
        }
    }
}

#[derive(Clone, Copy)]
struct Show {
    env: bool,
    hdr: bool,
    body: bool,
    /// `-o`: each record's offset first.
    offsets: bool,
    /// `-d`: each record's type in decimal first.
    decimal: bool,
}

fn print(
    path: &Path,
    label: &Path,
    name: &str,
    show: Show,
    open: fn(&Path) -> Result<QueueFile, pfx_queue::Error>,
) {
    // Shown record by record, as Postfix's postcat, whatever state the
    // file is in (one still being written has no end); only postfix-rs's
    // earliest files need the summary below.
    let qf = match open(path) {
        Ok(qf) if qf.is_legacy() => Some(qf),
        Ok(_) | Err(pfx_queue::Error::Corrupt(_)) => None,
        Err(pfx_queue::Error::Io(io)) => fatal(format!(
            "open queue file {name}: {}",
            pfx_sys::strerror(&io)
        )),
        Err(other) => fatal(format!("{}: {other}", path.display())),
    };
    let Some(qf) = qf else {
        let file = std::fs::File::open(path).unwrap_or_else(|e| {
            fatal(format!("open queue file {name}: {}", pfx_sys::strerror(&e)))
        });
        let mut first = [0u8];
        let first = std::os::unix::fs::FileExt::read_at(&file, &mut first, 0)
            .is_ok_and(|n| n == 1)
            .then_some(first[0]);
        let records =
            Records::open(file).unwrap_or_else(|e| fatal(format!("read {}: {e}", path.display())));
        let mut out = Vec::new();
        walk(records, first, &label.display().to_string(), show, &mut out);
        let _ = std::io::stdout().write_all(&out);
        return;
    };
    // postfix-rs's earliest files keep their content outside records.
    let mut content = Vec::new();
    qf.content()
        .and_then(|mut r| r.read_to_end(&mut content))
        .unwrap_or_else(|e| fatal(format!("read {}: {e}", path.display())));
    let label = label.display();
    let mut out = String::new();
    if show.env {
        out.push_str(&format!("*** ENVELOPE RECORDS {label} ***\n"));
        let n = qf.recipients.len();
        let (len, off) = (qf.content_len, qf.content_offset);
        out.push_str(&format!(
            "message_size: {len:>15} {off:>15} {n:>15} {:>15} {len:>15} {:>15}\n",
            0, 0
        ));
        out.push_str(&format!(
            "message_arrival_time: {}\n",
            pfx_sys::time::asctime(qf.arrival)
        ));
        for (k, v) in &qf.attrs {
            match k.as_str() {
                "sender_fullname" => out.push_str(&format!("sender_fullname: {v}\n")),
                _ => out.push_str(&format!("named_attribute: {k}={v}\n")),
            }
        }
        out.push_str(&format!("sender: {}\n", qf.sender));
        for r in &qf.recipients {
            if let Some(o) = &r.original {
                out.push_str(&format!("original_recipient: {o}\n"));
            }
            let kind = if r.done {
                "done_recipient"
            } else {
                "recipient"
            };
            out.push_str(&format!("{kind}: {}\n", r.address));
        }
        out.push_str(&format!("*** MESSAGE CONTENTS {label} ***\n"));
    }
    let mut bytes = out.into_bytes();
    // The header ends at the first empty line; the body starts with it.
    let split = content
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(content.len(), |i| i + 1);
    if show.hdr {
        bytes.extend_from_slice(&content[..split]);
    }
    if show.body {
        bytes.extend_from_slice(&content[split..]);
    }
    if show.env {
        bytes.extend_from_slice(
            format!("*** HEADER EXTRACTED {label} ***\n*** MESSAGE FILE END {label} ***\n")
                .as_bytes(),
        );
    }
    let _ = std::io::stdout().write_all(&bytes);
}

/// The name Postfix's postcat shows for a record type.
fn type_name(kind: u8) -> &'static str {
    use pfx_queue::record::kind::*;
    match kind {
        SIZE => "message_size",
        TIME => "message_arrival_time",
        CTIME => "queue_file_create_time",
        FULL => "sender_fullname",
        INSP => "content_inspector",
        // Also CONT: the same letter, and Postfix's table names FILT first.
        FILT => "content_filter",
        FROM => "sender",
        DONE => "done_recipient",
        DRCP => "canceled_recipient",
        RCPT => "recipient",
        ORCP => "original_recipient",
        WARN => "warning_message_time",
        ATTR => "named_attribute",
        PTR => "pointer_record",
        KILL => "killed_record",
        MESG => "message_content",
        NORM => "regular_text",
        DTXT => "padding",
        XTRA => "extracted_info",
        RRTO => "return_receipt",
        ERTO => "errors_to",
        PRIO => "priority",
        VERP => "verp_delimiters",
        END => "message_end",
        RDR => "redirect_to",
        b'f' => "flags",
        DSN_RET => "dsn_return_flags",
        DSN_ENVID => "dsn_envelope_id",
        DSN_ORCPT => "dsn_original_recipient",
        DSN_NOTIFY => "dsn_notify_flags",
        _ => "unknown_record_type",
    }
}

/// Postfix's `is_header`: a name of visible characters, then maybe blanks,
/// then a colon.
fn is_header(line: &[u8]) -> bool {
    let name = line
        .iter()
        .take_while(|&&c| c.is_ascii_graphic() && c != b':')
        .count();
    let rest = &line[name..];
    let blanks = rest
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    name > 0 && rest.get(blanks) == Some(&b':')
}

/// The time of a record as asctime(3) shows it (with its newline).
fn when(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let secs: u64 = text
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!(
        "{}\n",
        pfx_sys::time::asctime(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    )
}

/// Postfix's postcat, record by record: the envelope records by name, the
/// message content as text (header and body told apart as Postfix does),
/// the section markers; pointer records followed, padding skipped.
fn walk(mut records: Records, first: Option<u8>, label: &str, show: Show, out: &mut Vec<u8>) {
    use pfx_queue::record::kind::*;
    #[derive(PartialEq)]
    enum State {
        Envelope,
        Header,
        Body,
    }
    let text_record = |k: u8| k == CONT || k == NORM;
    // A plausible file starts with an envelope record type; an empty one
    // shows nothing, as with Postfix's.
    match first {
        None => return,
        Some(k) if !b"MCTcFILSDRO/WVA>K<ion".contains(&k) => {
            return warn(&format!("{label}: input is not a valid queue file"))
        }
        Some(_) => {}
    }
    if show.env {
        out.extend_from_slice(format!("*** ENVELOPE RECORDS {label} ***\n").as_bytes());
    }
    let mut state = State::Envelope;
    let mut print = show.env;
    let mut prev = 0u8;
    // Postfix's guard against pointer loops: backward jumps, at most 10,000
    // (one per inserted header, one for all appended recipients).
    let (mut last_jump, mut backward) = (0u64, 0u32);
    let prefix = |out: &mut Vec<u8>, at: u64, k: u8| {
        if show.offsets {
            out.extend_from_slice(format!("{at:9} ").as_bytes());
        }
        if show.decimal {
            out.extend_from_slice(format!("{k:3} ").as_bytes());
        }
    };
    let marker = |out: &mut Vec<u8>, at: u64, k: u8, text: &str| {
        prefix(out, at, k);
        out.extend_from_slice(format!("*** {text} {label} ***\n").as_bytes());
    };
    loop {
        let (at, mut k, data) = match records.read_next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                let _ = std::io::stdout().write_all(out);
                let why = e.to_string();
                warn(&format!(
                    "{label}: {}",
                    why.strip_prefix("corrupt queue file: ").unwrap_or(&why)
                ));
                fatal("record read error");
            }
        };
        if text_record(k) {
            if state == State::Header
                && (show.hdr || show.body)
                && prev != CONT
                && !(is_header(&data) || data.first().is_some_and(|&c| c == b' ' || c == b'\t'))
            {
                state = State::Body;
                print = show.body;
                // Nothing more to show: stop, as Postfix's does.
                if !print && !show.env {
                    break;
                }
            }
        } else if k == MESG {
            if show.env {
                marker(out, at, k, "MESSAGE CONTENTS");
            }
            state = State::Header;
            print = show.hdr;
            continue;
        } else if k == XTRA {
            if print && prev == CONT {
                out.push(b'\n');
            }
            if show.env {
                marker(out, at, k, "HEADER EXTRACTED");
            }
            state = State::Envelope;
            print = show.env;
            if !print {
                break;
            }
            continue;
        } else if k == END {
            if show.env {
                marker(out, at, k, "MESSAGE FILE END");
            }
            break;
        } else if k == PTR {
            // A pointer to 0 is a placeholder; others are followed.
            let Ok(to) = String::from_utf8_lossy(&data).trim().parse::<u64>() else {
                let _ = std::io::stdout().write_all(out);
                warn(&format!(
                    "{label}: malformed pointer record value: {}",
                    String::from_utf8_lossy(&data)
                ));
                fatal("record read error");
            };
            if to == 0 {
                continue;
            }
            if to <= last_jump {
                backward += 1;
                if backward > pfx_queue::record::MAX_BACKWARD_JUMPS {
                    let _ = std::io::stdout().write_all(out);
                    warn(&format!("{label}: too many reverse jump records"));
                    fatal("record read error");
                }
            }
            last_jump = to;
            records.seek(to);
            continue;
        } else if k == DTXT {
            continue;
        }
        if !print {
            continue;
        }
        prefix(out, at, k);
        match k {
            TIME | WARN => {
                out.extend_from_slice(format!("{}: {}", type_name(k), when(&data)).as_bytes());
            }
            CONT => {
                if state == State::Envelope {
                    out.extend_from_slice(format!("{}: ", type_name(k)).as_bytes());
                }
                out.extend_from_slice(&data);
                if state == State::Envelope || show.offsets {
                    k = 0;
                    out.push(b'\n');
                }
            }
            NORM => {
                out.extend_from_slice(&data);
                out.push(b'\n');
            }
            ATTR => {
                let text = String::from_utf8_lossy(&data);
                match text.split_once('=') {
                    Some(("create_time", v)) => out.extend_from_slice(
                        format!("create_time: {}", when(v.as_bytes())).as_bytes(),
                    ),
                    Some((n, v)) => {
                        out.extend_from_slice(format!("named_attribute: {n}={v}\n").as_bytes())
                    }
                    None => warn(&format!(
                        "{label}: malformed attribute: missing '=' after attribute name: {text}"
                    )),
                }
            }
            _ => {
                out.extend_from_slice(format!("{}: ", type_name(k)).as_bytes());
                out.extend_from_slice(&data);
                out.push(b'\n');
            }
        }
        prev = k;
    }
}

fn warn(text: &str) {
    eprintln!("postcat: warning: {text}");
}
