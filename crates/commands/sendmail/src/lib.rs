//! sendmail(1): the Sendmail-compatible way for local programs to send mail
//! (cron, `mail`, PHP, scripts), and its other names `mailq` and
//! `newaliases`, as Postfix installs them.
//!
//! A message is read from standard input (a leading mbox `From ` line is
//! dropped, CRLF becomes LF, a line with a single `.` ends it unless `-i`)
//! and handed to `$command_directory/postdrop`, which puts it in
//! `maildrop/` for pickup. Modes: `-bm` (the default), `-bs` (SMTP on
//! standard input and output), `-bp` (= `postqueue -p`), `-bi` (=
//! `postalias $alias_database`), `-q` (= `postqueue -f`), `-qRsite`,
//! `-qIqueue_id`. Options Postfix accepts for compatibility and ignores are
//! ignored here too. Exit status follows sysexits.h: 0, or 75 (EX_TEMPFAIL)
//! with a `sendmail: fatal: ...` message.

mod options;
mod smtp;
mod submit;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use pfx_config::Config;
use pfx_maillog::fatal_status;

use options::{Mode, Options};

/// sysexits.h EX_TEMPFAIL: what Postfix's sendmail exits with on any error.
pub(crate) const EX_TEMPFAIL: i32 = 75;
/// sysexits' command line usage error, as Postfix's sendmail exits for an
/// option it refuses.
const EX_USAGE: i32 = 64;

const HELP: &str = "\
usage: sendmail [options] [recipient...]   (also run as mailq and newaliases)
  -t              also take recipients from To/Cc/Bcc (Resent-* if present)
  -f sender       envelope sender (-f '<>' for the null sender); -r is the same
  -F full_name    the sender's full name for the From header
  -N dsn          DSN NOTIFY for every recipient: never, or success,failure,delay
  -R full|hdrs    DSN RET: what of the message a non-delivery notice returns
  -V envid        DSN ENVID, named in the notices
  -i, -oi         a line with a single dot does not end the message
  -C config_dir   configuration directory (default $MAIL_CONFIG, else /etc/postfix)
  -bm             read a message from standard input and queue it (default)
  -bs             SMTP on standard input and output
  -bp             list the queue (postqueue -p; also `mailq`)
  -bi, -I         rebuild $alias_database (postalias; also `newaliases`)
  -bd             start the mail system (postfix start)
  -q              deliver deferred mail now (postqueue -f)
  -qRsite         ... for one destination (postqueue -s site)
  -qIqueue_id     ... one message (postqueue -i queue_id)
  -v              verbose
Exit status 0, or 75 (EX_TEMPFAIL) with a message. See docs/man/sendmail.md.
";

/// Runs the program as `name` (`sendmail`, `mailq` or `newaliases`).
pub fn main_as(name: &str) -> ! {
    pfx_maillog::init_stderr("sendmail");
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--help") {
        print!("{HELP}");
        std::process::exit(0);
    }
    let mut opts = options::parse(&args).unwrap_or_else(|e| match e.strip_prefix("fatal: ") {
        Some(why) => fatal_status(EX_USAGE, why),
        None => {
            eprintln!("sendmail: {e}");
            fatal_status(EX_TEMPFAIL, "usage: sendmail [options]")
        }
    });
    match name {
        "mailq" => opts.mode = Mode::ListQueue,
        "newaliases" => opts.mode = Mode::Aliases,
        _ => {}
    }
    let dir = pfx_config::config_dir(opts.config_dir.as_deref());
    let cfg = pfx_cli::load_config(&dir);
    let _ = pfx_maillog::init(
        &cfg,
        pfx_maillog::Options {
            service: "sendmail".into(),
            stderr_name: Some("sendmail".into()),
            stderr_info: true,
            verbose: opts.verbose > 0,
        },
    );
    for w in &opts.warnings {
        tracing::warn!("{w}");
    }
    let dir_arg = dir.to_string_lossy().into_owned();
    match &opts.mode {
        Mode::Submit => submit::run(&cfg, &dir, &opts),
        Mode::Smtp => smtp::run(&cfg, &dir, &opts),
        Mode::ListQueue => exec(&cfg, "postqueue", &["-c", &dir_arg, "-p"]),
        Mode::Flush => exec(&cfg, "postqueue", &["-c", &dir_arg, "-f"]),
        Mode::FlushSite(site) => exec(&cfg, "postqueue", &["-c", &dir_arg, "-s", site]),
        Mode::FlushId(id) => exec(&cfg, "postqueue", &["-c", &dir_arg, "-i", id]),
        Mode::Daemon => exec(&cfg, "postfix", &["-c", &dir_arg, "start"]),
        Mode::Aliases => {
            let dbs = cfg
                .list("alias_database")
                .unwrap_or_else(|e| fatal_status(EX_TEMPFAIL, e));
            let mut argv = vec!["-c".to_owned(), dir_arg.clone()];
            if opts.verbose > 0 {
                argv.push("-v".into());
            }
            argv.extend(dbs);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            exec(&cfg, "postalias", &argv)
        }
        Mode::Nothing => std::process::exit(0),
    }
}

/// Where the other commands live.
pub(crate) fn command(cfg: &Config, program: &str) -> PathBuf {
    let dir = cfg
        .get("command_directory")
        .unwrap_or_else(|e| fatal_status(EX_TEMPFAIL, e));
    Path::new(&dir).join(program)
}

/// Replaces this process with another postfix-rs command.
fn exec(cfg: &Config, program: &str, args: &[&str]) -> ! {
    let path = command(cfg, program);
    let err = std::process::Command::new(&path).args(args).exec();
    fatal_status(EX_TEMPFAIL, format!("execvp {}: {err}", path.display()))
}
