//! postdrop(1): writes one message from sendmail into `maildrop/` and wakes
//! pickup. Installed set-group-ID `$setgid_group` (`postdrop`), it is the
//! only way an ordinary user can write into the queue: `maildrop/` is
//! `$mail_owner:postdrop 730`, so users can add files there but not read or
//! list them. It trusts nothing on its input.
//!
//! Input (standard input): the envelope as one frame
//! ([`pfx_ipc::proto::DropEnvelope`]), then the message content with LF
//! line ends up to end-of-file. With `-r` (how sendmail runs it) the queue
//! ID is printed on standard output. The file is fsynced before postdrop
//! exits 0; on any failure nothing is left behind and the exit status is
//! 75 (EX_TEMPFAIL).

use std::io::{Read, Write};
use std::time::SystemTime;

use clap::Parser;
use pfx_ipc::proto::{endpoint, DropEnvelope};
use pfx_maillog::fatal_status;
use pfx_queue::file::{Envelope, Writer};
use pfx_queue::{Queue, QueueName};

/// sysexits.h EX_TEMPFAIL.
const EX_TEMPFAIL: i32 = 75;
/// The envelope frame at most (addresses are short; many recipients fit).
const MAX_ENVELOPE: usize = 4 << 20;
/// Longest address accepted.
const MAX_ADDRESS: usize = 1000;

#[derive(Parser, Debug)]
#[command(
    name = "postdrop",
    version,
    about = "Write a local submission into the postfix-rs maildrop queue"
)]
struct Args {
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Print the queue ID on standard output (sendmail uses this).
    #[arg(short = 'r')]
    report: bool,
    /// Verbose logging.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() {
    let args: Args =
        pfx_cli::parse_args_status("postdrop", "postdrop [-rv] [-c config_dir]", EX_TEMPFAIL);
    let dir = args.config.setgid_dir();
    let cfg = pfx_cli::load_config(&dir);
    let _ = pfx_maillog::init(
        &cfg,
        pfx_maillog::Options {
            service: "postdrop".into(),
            stderr_name: Some("postdrop".into()),
            stderr_info: false,
            verbose: args.verbose > 0,
        },
    );
    let uid = nix::unistd::getuid();
    let fail = |why: String| -> ! { fatal_status(EX_TEMPFAIL, format!("uid={uid}: {why}")) };
    let queue_dir = cfg
        .get("queue_directory")
        .unwrap_or_else(|e| fail(e.to_string()));
    let limit = u64::try_from(cfg.int("message_size_limit").unwrap_or(10_240_000)).unwrap_or(0);

    let mut input = std::io::stdin().lock();
    let env: DropEnvelope = pfx_ipc::codec::read_frame(&mut input, MAX_ENVELOPE)
        .unwrap_or_else(|e| fail(format!("malformed input: {e}")));
    let clean = |a: &str| a.len() <= MAX_ADDRESS && !a.chars().any(char::is_control);
    if env.recipients.is_empty() {
        fail("no recipients".into());
    }
    if !clean(&env.sender) || !env.recipients.iter().all(|r| clean(r) && !r.is_empty()) {
        fail("malformed address in the envelope".into());
    }
    let mut attrs = Vec::new();
    if let Some(name) = env.full_name.clone().filter(|n| clean(n)) {
        attrs.push(("sender_fullname".to_owned(), name));
    }
    // sendmail's -V and -R (checked again: the input is the user's).
    let notify_ok = env.dsn_notify == 1 || (env.dsn_notify & !0b1110 == 0);
    if !notify_ok || env.dsn_ret > 2 {
        fail("malformed DSN request in the envelope".into());
    }
    if let Some(envid) = env.dsn_envid.clone().filter(|e| clean(e) && e.len() <= 100) {
        attrs.push(("envelope_id".to_owned(), envid));
    }
    if env.dsn_ret != 0 {
        attrs.push(("ret_flags".to_owned(), env.dsn_ret.to_string()));
    }

    let queue = Queue::new(&queue_dir);
    // Errors come back here, after the writer was dropped (removing its file).
    let id = write(&queue, env, attrs, limit, &mut input).unwrap_or_else(|e| fail(e));
    if args.report {
        let _ = writeln!(std::io::stdout(), "{id}");
    }
    // Wake pickup; if the mail system is down, the file waits for it.
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(
        std::path::Path::new(&queue_dir).join(endpoint::PICKUP),
    ) {
        let _ = s.write_all(b"W");
    }
}

fn write(
    queue: &Queue,
    env: DropEnvelope,
    attrs: Vec<(String, String)>,
    limit: u64,
    input: &mut impl Read,
) -> Result<String, String> {
    let mut w = Writer::create_in(queue, QueueName::Maildrop, SystemTime::now(), None)
        .map_err(|e| format!("create file in maildrop: {e}"))?;
    w.envelope(&Envelope {
        sender: env.sender,
        recipients: env
            .recipients
            .into_iter()
            .map(|r| pfx_queue::file::NewRecipient {
                notify: env.dsn_notify,
                ..pfx_queue::file::NewRecipient::new(r, None)
            })
            .collect(),
        attrs,
        filter: None,
    })
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read message: {e}")),
        };
        w.content(&buf[..n]).map_err(|e| e.to_string())?;
        if limit > 0 && w.content_len() > limit {
            return Err("File too large".into());
        }
    }
    w.finish().map_err(|e| format!("write maildrop file: {e}"))
}
