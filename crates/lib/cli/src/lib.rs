//! What every postfix-rs command does the same way as Postfix's commands.
//!
//! - Bad arguments print Postfix's `NAME: fatal: usage: ...` and exit 1
//!   (`--help` still prints the full help and exits 0).
//! - Messages go to stderr as `NAME: text` (and, once a configuration is
//!   loaded, to the mail log too).
//! - The configuration directory is `-c DIR`, else `$MAIL_CONFIG`, else `/etc/postfix`.

use std::path::{Path, PathBuf};

use clap::Parser;
use pfx_config::Config;

/// The `-c config_dir` flag every command takes: `#[command(flatten)]` it
/// into the command's arguments. A command whose help says it differently
/// keeps its words with `#[command(mut_arg(CONFIG_DIR, |a| a.help(...)))]`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigDir {
    /// Configuration directory (default: $MAIL_CONFIG, else /etc/postfix).
    #[arg(short = 'c', value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// The id of [`ConfigDir`]'s argument, for `mut_arg`.
pub const CONFIG_DIR: &str = "config_dir";

impl ConfigDir {
    /// `-c DIR`, else `$MAIL_CONFIG`, else `/etc/postfix`.
    pub fn dir(&self) -> PathBuf {
        pfx_config::config_dir(self.config_dir.as_deref())
    }

    /// The directory a set-group-ID command may use ([`setgid_config_dir`]).
    pub fn setgid_dir(&self) -> PathBuf {
        setgid_config_dir(self.config_dir.as_deref())
    }
}

/// Parses arguments; on error prints the usage line Postfix prints and exits 1.
pub fn parse_args<T: Parser>(name: &str, usage: &str) -> T {
    parse_args_status(name, usage, 1)
}

/// [`parse_args`] for commands that exit with another status on a usage
/// error (postqueue: 69, sendmail: 64, as Postfix's do).
pub fn parse_args_status<T: Parser>(name: &str, usage: &str, status: i32) -> T {
    pfx_maillog::init_stderr(name);
    match T::try_parse() {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            eprintln!("{name}: {first}");
            eprintln!("{name}: fatal: usage: {usage}");
            std::process::exit(status)
        }
    }
}

/// Loads and validates the configuration in `dir`, or exits with the
/// file:line message.
pub fn load_config(dir: &Path) -> Config {
    Config::load(dir)
        .and_then(|c| c.validate().map(|()| c))
        .unwrap_or_else(|e| pfx_maillog::fatal(e))
}

/// The configuration directory for a set-group-ID command (postqueue,
/// postdrop). As in Postfix, an ordinary user running it with its elevated
/// group may only name a directory other than the default when the default
/// main.cf lists it in `alternate_config_directories` or
/// `multi_instance_directories`; otherwise the group's access could be
/// pointed at any queue.
pub fn setgid_config_dir(flag: Option<&Path>) -> PathBuf {
    let dir = pfx_config::config_dir(flag);
    let elevated = nix::unistd::getegid() != nix::unistd::getgid();
    if !elevated || nix::unistd::getuid().is_root() {
        return dir;
    }
    let default = Path::new(pfx_config::DEFAULT_CONFIG_DIR);
    if dir == default {
        return dir;
    }
    let allowed = Config::load(default)
        .map(|c| {
            ["alternate_config_directories", "multi_instance_directories"]
                .iter()
                .flat_map(|p| c.list(p).unwrap_or_default())
                .any(|d| Path::new(&d) == dir)
        })
        .unwrap_or(false);
    if !allowed {
        pfx_maillog::fatal(format!(
            "unauthorized configuration directory name: {}; specify a directory name that is listed in the \"alternate_config_directories\" or \"multi_instance_directories\" parameter of {}/main.cf",
            dir.display(),
            default.display()
        ));
    }
    dir
}
