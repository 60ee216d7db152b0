//! sendmail's command line, parsed as Postfix's sendmail does (getopt with
//! its option letters; most Sendmail options are accepted and ignored).

use std::path::PathBuf;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Read a message and submit it (`-bm`, the default).
    Submit,
    /// SMTP on standard input and output (`-bs`).
    Smtp,
    /// `-bp`, `mailq`.
    ListQueue,
    /// `-bi`, `-I`, `newaliases`.
    Aliases,
    /// `-q`.
    Flush,
    /// `-qRsite`.
    FlushSite(String),
    /// `-qIqueue_id`.
    FlushId(String),
    /// `-bd`: start the mail system.
    Daemon,
    /// `-q` with an interval: postfix-rs, like Postfix, has nothing to run.
    Nothing,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) config_dir: Option<PathBuf>,
    pub(crate) sender: Option<String>,
    pub(crate) full_name: Option<String>,
    /// `-t`: recipients from the headers too.
    pub(crate) extract: bool,
    /// A line with a single `.` ends the message (off with `-i`, `-oi`).
    pub(crate) dot_ends: bool,
    pub(crate) mode: Mode,
    pub(crate) verbose: u8,
    pub(crate) recipients: Vec<String>,
    /// RFC 3461 requests: `-N` (NOTIFY bits), `-R` (RET), `-V` (ENVID).
    pub(crate) dsn_notify: u32,
    pub(crate) dsn_ret: u32,
    pub(crate) dsn_envid: Option<String>,
    /// What to log once logging is set up (Postfix's `warning:` lines for
    /// bad -N, -R and -V values, which are then ignored).
    pub(crate) warnings: Vec<String>,
}

/// Option letters that take a value (Postfix's getopt string).
const WITH_VALUE: &str = "ABCFLNORVXbefhopr";
/// Option letters without one.
const FLAGS: &str = "GIUcimntvxq";

/// Parses the arguments (without the program name). An error is the line
/// getopt would print.
pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        config_dir: None,
        sender: None,
        full_name: None,
        extract: false,
        dot_ends: true,
        mode: Mode::Submit,
        verbose: 0,
        recipients: Vec::new(),
        dsn_notify: 0,
        dsn_ret: 0,
        dsn_envid: None,
        warnings: Vec::new(),
    };
    // `-q` with an interval: nothing to do, unless the mail system is to start.
    let mut qtime = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            i -= 1;
            break;
        };
        for (pos, c) in letters.char_indices() {
            let rest = &letters[pos + c.len_utf8()..];
            if c == 'q' {
                // As Postfix's: -bd wins over a bare -q, with a warning.
                match rest {
                    "" if o.mode == Mode::Daemon => {
                        o.warnings.push("ignoring -q option in daemon mode".into())
                    }
                    "" => o.mode = Mode::Flush,
                    r if r.starts_with(|c: char| c.is_ascii_digit()) => qtime = true,
                    "R" => return Err("fatal: specify: -qRsitename".into()),
                    "I" => return Err("fatal: specify: -qIqueueid".into()),
                    r if r.starts_with('R') => o.mode = Mode::FlushSite(r[1..].into()),
                    r if r.starts_with('I') => o.mode = Mode::FlushId(r[1..].into()),
                    r => {
                        let c = r.chars().next().unwrap_or_default();
                        return Err(format!("fatal: -q{c} is not implemented"));
                    }
                }
                break;
            }
            if WITH_VALUE.contains(c) {
                let value = if rest.is_empty() {
                    let v = args
                        .get(i)
                        .ok_or_else(|| format!("option requires an argument -- '{c}'"))?;
                    i += 1;
                    v.clone()
                } else {
                    rest.to_owned()
                };
                apply_value(&mut o, c, value)?;
                break;
            }
            if !FLAGS.contains(c) {
                return Err(format!("invalid option -- '{c}'"));
            }
            match c {
                'I' => o.mode = Mode::Aliases,
                'i' => o.dot_ends = false,
                't' => o.extract = true,
                'v' => o.verbose += 1,
                'n' => return Err("fatal: -n option not supported".into()),
                _ => {} // accepted for compatibility
            }
        }
    }
    if qtime && o.mode != Mode::Daemon {
        o.mode = Mode::Nothing;
    }
    o.recipients = args[i..].to_vec();
    Ok(o)
}

fn apply_value(o: &mut Options, c: char, value: String) -> Result<(), String> {
    match c {
        'C' => o.config_dir = Some(PathBuf::from(value)),
        'F' => o.full_name = Some(value),
        'f' | 'r' => o.sender = Some(value),
        'o' if value == "i" => o.dot_ends = false,
        // As Postfix's: the first letter counts.
        'b' => {
            o.mode = match value.chars().next().unwrap_or_default() {
                'm' => Mode::Submit,
                's' => Mode::Smtp,
                'p' => Mode::ListQueue,
                'i' => Mode::Aliases,
                'd' | 'l' => {
                    if o.mode == Mode::Flush {
                        o.warnings.push("ignoring -q option in daemon mode".into());
                    }
                    Mode::Daemon
                }
                // Host status: nothing to show or flush.
                'h' | 'H' => Mode::Nothing,
                other => return Err(format!("fatal: unsupported: -b{other}")),
            }
        }
        'B' if value != "8BITMIME" && value != "7BIT" => {
            return Err("fatal: -B option needs 8BITMIME or 7BIT".into())
        }
        'N' => match pfx_smtp_proto::dsn::notify_mask(&value) {
            Some(mask) => o.dsn_notify = mask,
            None => o.warnings.push("bad -N option value -- ignored".into()),
        },
        'R' => match pfx_smtp_proto::dsn::ret_code(&value) {
            Some(ret) => o.dsn_ret = ret,
            None => o.warnings.push("bad -R option value -- ignored".into()),
        },
        'V' if value.len() > 100 => o
            .warnings
            .push("too long -V option value -- ignored".into()),
        'V' if value.chars().any(|c| c.is_control()) => o
            .warnings
            .push("bad syntax in -V option value -- ignored".into()),
        'V' => o.dsn_envid = Some(value),
        _ => {} // -B -L -O -X -e -h -o... accepted and ignored
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sendmail_flags() {
        let o = p(&[
            "-t",
            "-oi",
            "-f",
            "hadoop",
            "-FHadoop User",
            "-C/etc/x",
            "a@x.test",
            "b",
        ])
        .unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("hadoop"));
        assert_eq!(o.full_name.as_deref(), Some("Hadoop User"));
        assert_eq!(o.config_dir, Some(PathBuf::from("/etc/x")));
        assert_eq!(o.recipients, ["a@x.test", "b"]);
        assert_eq!(o.mode, Mode::Submit);
        assert!(p(&["-ti", "x"]).is_ok_and(|o| o.extract && !o.dot_ends));
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::ListQueue);
        assert_eq!(p(&["-q"]).unwrap().mode, Mode::Flush);
        assert_eq!(p(&["-q5m"]).unwrap().mode, Mode::Nothing);
        assert_eq!(
            p(&["-qRexample.test"]).unwrap().mode,
            Mode::FlushSite("example.test".into())
        );
        assert_eq!(
            p(&["-N", "never", "-x", "-oem", "u"]).unwrap().recipients,
            ["u"]
        );
        assert_eq!(p(&["-z"]).unwrap_err(), "invalid option -- 'z'");
        assert_eq!(p(&["-bv"]).unwrap_err(), "fatal: unsupported: -bv");
        // Postfix's other -b letters, -A, -B and -n.
        assert_eq!(p(&["-bl"]).unwrap().mode, Mode::Daemon);
        assert_eq!(p(&["-bh"]).unwrap().mode, Mode::Nothing);
        assert_eq!(p(&["-bmx"]).unwrap().mode, Mode::Submit);
        assert_eq!(p(&["-Am", "-B8BITMIME", "u"]).unwrap().recipients, ["u"]);
        assert_eq!(
            p(&["-Bx"]).unwrap_err(),
            "fatal: -B option needs 8BITMIME or 7BIT"
        );
        assert_eq!(p(&["-n"]).unwrap_err(), "fatal: -n option not supported");
        // An init script's `sendmail -bd -q1h` starts the mail system.
        assert_eq!(p(&["-bd", "-q1h"]).unwrap().mode, Mode::Daemon);
        assert_eq!(p(&["-q30m", "-bl"]).unwrap().mode, Mode::Daemon);
        let o = p(&["-bd", "-q"]).unwrap();
        assert_eq!(
            (o.mode, o.warnings),
            (
                Mode::Daemon,
                vec!["ignoring -q option in daemon mode".to_owned()]
            )
        );
        assert_eq!(p(&["-qSx"]).unwrap_err(), "fatal: -qS is not implemented");
        assert_eq!(
            p(&["-f"]).unwrap_err(),
            "option requires an argument -- 'f'"
        );
    }
}
