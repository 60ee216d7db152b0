//! qshape(1): how the mail in the queue is spread over recipient (or
//! sender) domains and ages, as a table, the way Postfix's qshape prints it.
//!
//! Output, options, messages and exit statuses are those of Debian's
//! qshape (Postfix 3.7); a test runs both on the same queues. It reads queue
//! files as qshape does (`envelope.rs`), so it shows what Postfix's would on
//! a queue either system wrote, and counts as qshape counts (`shape.rs`).

mod envelope;
mod shape;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::shape::{Options, Shape};

#[derive(Parser, Debug)]
#[command(
    name = "qshape",
    disable_help_flag = true,
    about = "Print the queue's domain and age distribution (Postfix's qshape)",
    long_about = "Counts the recipients (or with -s the senders) of the messages in the \
        named queues (default: incoming and active) by domain and by age, in buckets that \
        double in length (-l: equal lengths). Queue names that are not absolute are taken \
        relative to main.cf's queue_directory."
)]
struct Args {
    /// Count sender domains instead of recipient domains.
    #[arg(short = 's')]
    sender: bool,
    /// Also count parent domains (shown with a leading dot).
    #[arg(short = 'p')]
    parents: bool,
    /// With -p, the subdomains a parent domain needs to be shown (default 5).
    #[arg(short = 'm', value_name = "min_subdomains")]
    min_subdomains: Option<String>,
    /// Linear buckets: each as long as the first.
    #[arg(short = 'l')]
    linear: bool,
    /// The number of age buckets (default 10).
    #[arg(short = 'b', value_name = "bucket_count")]
    buckets: Option<String>,
    /// The age limit of the first bucket, in minutes (default 5).
    #[arg(short = 't', value_name = "bucket_time")]
    bucket_time: Option<String>,
    /// The terminal width, when more than 80.
    #[arg(short = 'w', value_name = "terminal_width")]
    width: Option<String>,
    /// On a terminal: interim results every this many messages (default 1000).
    #[arg(short = 'N', value_name = "batch_msg_count")]
    batch_msg_count: Option<String>,
    /// On a terminal: only this many domains (default 20).
    #[arg(short = 'n', value_name = "batch_top_domains")]
    batch_top_domains: Option<String>,
    /// Print the usage message (and exit 255, as Postfix's qshape).
    #[arg(short = 'h')]
    usage: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Queue directories (default: incoming active). Options end at the
    /// first one, as with Postfix's qshape.
    #[arg(value_name = "queue_name")]
    queues: Vec<String>,
}

fn main() {
    let program = program_path();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let args = match Args::try_parse_from(options_first(std::env::args_os())) {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.exit(),
        Err(e) => {
            eprintln!("{program}: {}", getopt_message(&e));
            usage(&program)
        }
    };
    if args.usage {
        usage(&program);
    }
    let queues: Vec<String> = if args.queues.is_empty() {
        vec!["incoming".into(), "active".into()]
    } else {
        args.queues.clone()
    };
    if queues.iter().any(|q| !q.starts_with('/')) {
        enter_queue_directory(&program, &args.config.dir());
    }
    let tty = std::io::stdout().is_terminal();
    let options = Options {
        sender: args.sender,
        parents: args.parents,
        linear: args.linear,
        buckets: positive(args.buckets.as_deref()).unwrap_or(10),
        tick: args
            .bucket_time
            .as_deref()
            .map(shape::number)
            .filter(|&t| t > 0.0)
            .unwrap_or(5.0),
        min_subdomains: positive(args.min_subdomains.as_deref()).unwrap_or(5),
        width: positive(args.width.as_deref())
            .filter(|&w| w > 80)
            .unwrap_or(80),
        // Interim results and the top-domains cut only on a terminal.
        batch_msg_count: if tty {
            args.batch_msg_count
                .as_deref()
                .map_or(1000, |n| shape::number(n) as u64)
        } else {
            0
        },
        batch_top_domains: if tty {
            args.batch_top_domains
                .as_deref()
                .map_or(20, |n| shape::number(n) as u64)
        } else {
            0
        },
    };
    // Before each table when interim results are shown, as qshape's.
    let clear = if options.batch_msg_count > 0 {
        clear_screen()
    } else {
        Vec::new()
    };
    let mut shape = Shape::new(options, now);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for q in &queues {
        walk(Path::new(q), &mut |path| {
            if let Some(env) = envelope::read(path) {
                if shape.add(&env) {
                    let _ = out.write_all(&clear);
                    let _ = out.write_all(&shape.table());
                    let _ = out.flush();
                }
            }
        });
    }
    let _ = out.write_all(&clear);
    let _ = out.write_all(&shape.table());
    let _ = out.flush();
}

/// Every file under `dir`, its subdirectories too, as Perl's File::Find
/// visits them (symbolic links are not followed).
fn walk(dir: &Path, found: &mut dyn FnMut(&Path)) {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("Can't stat {}: {}", dir.display(), pfx_sys::strerror(&e));
            return;
        }
    };
    if !meta.is_dir() {
        found(dir);
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("Can't cd to {}: {}", dir.display(), pfx_sys::strerror(&e));
            return;
        }
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), found),
            Ok(_) => found(&e.path()),
            Err(_) => {}
        }
    }
}

/// chdir to main.cf's queue_directory, as qshape does with `postconf -h
/// queue_directory` before it reads relative queue names.
fn enter_queue_directory(program: &str, config_dir: &Path) {
    let qdir = match pfx_config::Config::load(config_dir) {
        Ok(cfg) => cfg.raw("queue_directory").unwrap_or_default(),
        Err(e) => {
            eprintln!("qshape: fatal: {e}");
            eprintln!("{program}: postconf failed");
            std::process::exit(1);
        }
    };
    if qdir.contains('$') {
        eprintln!("{program}: 'queue_directory' variable expansion not supported: {qdir}");
        usage(program);
    }
    if let Err(e) = std::env::set_current_dir(&qdir) {
        eprintln!("{program}: chdir({qdir}): {}", pfx_sys::strerror(&e));
        // Perl's die exits with the error number.
        std::process::exit(e.raw_os_error().unwrap_or(255));
    }
}

/// An option value as a whole number when it is more than zero.
fn positive(value: Option<&str>) -> Option<u64> {
    value
        .map(shape::number)
        .filter(|&n| n > 0.0)
        .map(|n| n as u64)
}

/// The command line with `--` before the first queue name, so that what
/// follows it is never read as an option (Getopt::Std stops there).
fn options_first(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const WITH_VALUE: &[u8] = b"mbtwNnc";
    let mut out = Vec::new();
    let mut args = args.peekable();
    out.extend(args.next());
    while let Some(arg) = args.next() {
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" || bytes.len() < 2 || bytes[0] != b'-' {
            if bytes != b"--" {
                out.push("--".into());
            }
            out.push(arg);
            break;
        }
        // A letter that takes a value takes the rest of the word, or the
        // next word.
        let takes_next = bytes[1..]
            .iter()
            .position(|b| WITH_VALUE.contains(b))
            .is_some_and(|i| i + 2 == bytes.len());
        match (takes_next, args.next_if(|_| takes_next)) {
            (true, Some(value)) => out.extend([arg, value]),
            // Last, without its value: Getopt::Std leaves the option unset.
            (true, None) => {
                let letters = &bytes[..bytes.len() - 1];
                if letters.len() > 1 {
                    out.push(String::from_utf8_lossy(letters).into_owned().into());
                }
            }
            (false, _) => out.push(arg),
        }
    }
    out.extend(args);
    out
}

/// What Perl's Getopt::Std says of a bad command line.
fn getopt_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let letter = arg.trim_start_matches('-').chars().next().unwrap_or('?');
    match e.kind() {
        ErrorKind::UnknownArgument => format!("Unknown option: {letter}"),
        _ => format!("Option {letter} requires an argument"),
    }
}

/// The usage message Postfix's qshape prints on a bad command line or -h;
/// exits 255, as its die does.
fn usage(program: &str) -> ! {
    eprint!(
        "Usage: {program} [ -s ] [ -p ] [ -m <min_subdomains> ] [ -l ]\n\
         \t[ -b <bucket_count> ] [ -t <bucket_time> ] [ -w <terminal_width> ]\n\
         \t[ -N <batch_msg_count> ] [ -n <batch_top_domains> ]\n\
         \t[ -c <config_directory> ] [ <queue_name> ... ]\n\
         The 's' option shows sender domain counts.\n\
         The 'p' option shows address counts by for parent domains.\n\
         Parent domains are shown with a leading '.' before the domain name.\n\
         Parent domains are only shown if the domain is not a TLD, and at\n\
         least <min_subdomains> (default 5) subdomains are shown in the output.\n\n\
         The bucket age ranges in units of <bucket_time> minutes are\n\
         [0,1), [1,2), [2,4), [4,8), [8, 16), ... i.e.:\n\
         \tthe first bucket is [0, bucket_time) minutes\n\
         \tthe second bucket is [bucket_time, 2*bucket_time) minutes\n\
         \tthe third bucket is [2*bucket_time, 4*bucket_time) minutes...\n\
         '-l' makes the ages linear, the number of buckets shown is <bucket_count>\n\n\
         The default summary is for the incoming and active queues. An explicit\n\
         list of queue names can be given on the command line. Non-absolute queue\n\
         names are interpreted relative to the Postfix queue directory. Use\n\
         <config_directory> to specify a non-default Postfix instance.  Values of\n\
         the main.cf queue_directory parameter that use variable expansions are\n\
         not supported. If necessary, use explicit absolute paths for all queues.\n"
    );
    std::process::exit(255)
}

/// The program's name in messages: the path it was started by, as a
/// script's `$0` is (a name found in PATH becomes the full path the shell
/// ran).
fn program_path() -> String {
    let arg0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qshape"));
    if arg0.components().count() > 1 {
        return arg0.display().to_string();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(&arg0))
                .find(|p| p.is_file())
        })
        .unwrap_or(arg0)
        .display()
        .to_string()
}

/// What `clear` prints for this terminal (qshape runs it too), shown
/// before each interim result.
fn clear_screen() -> Vec<u8> {
    std::process::Command::new("clear")
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::options_first;

    fn split(args: &[&str]) -> Vec<String> {
        options_first(
            std::iter::once("qshape")
                .chain(args.iter().copied())
                .map(Into::into),
        )
        .into_iter()
        .skip(1)
        .map(|a| a.into_string().unwrap())
        .collect()
    }

    #[test]
    fn options_end_at_the_first_queue_name_as_getopt_std_has_it() {
        assert_eq!(split(&["-sp", "-m1", "/q"]), ["-sp", "-m1", "--", "/q"]);
        assert_eq!(split(&["-b", "5", "x", "-s"]), ["-b", "5", "--", "x", "-s"]);
        assert_eq!(split(&["/q", "-s"]), ["--", "/q", "-s"]);
        assert_eq!(split(&["--", "-s"]), ["--", "-s"]);
        assert_eq!(split(&["-b", "-s"]), ["-b", "-s"], "-s is -b's value");
        // A value-taking option last, without its value, stays unset.
        assert_eq!(split(&["-b"]), Vec::<String>::new());
        assert_eq!(split(&["-sb"]), ["-s"]);
    }
}
