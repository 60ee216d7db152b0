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
use pfx_queue::Queue;

const USAGE: &str = "postcat [-b (body text)] [-c config_dir] [-d (decimal record type)] [-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] [file(s)...]";

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
    /// Record types in decimal (accepted; postfix-rs records are named).
    #[arg(short = 'd')]
    _decimal: bool,
    /// Show the envelope records.
    #[arg(short = 'e')]
    envelope: bool,
    /// Show the header.
    #[arg(short = 'h')]
    header: bool,
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
    let show = Show { env, hdr, body };
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
}

fn print(
    path: &Path,
    label: &Path,
    name: &str,
    show: Show,
    open: fn(&Path) -> Result<QueueFile, pfx_queue::Error>,
) {
    let qf = open(path).unwrap_or_else(|e| match e {
        pfx_queue::Error::Io(io) => fatal(format!("open queue file {name}: {}", io_text(&io))),
        other => fatal(format!("{}: {other}", path.display())),
    });
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

/// The message of an I/O error without Rust's `(os error N)` suffix, as C's strerror.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
