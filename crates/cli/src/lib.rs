//! What every postfix-rs command does the same way as Postfix's commands.
//!
//! - Bad arguments print Postfix's `NAME: fatal: usage: ...` and exit 1
//!   (`--help` still prints the full help and exits 0).
//! - Messages go to stderr as `NAME: text` (and, once a configuration is
//!   loaded, to the mail log too).
//! - The configuration directory is `-c DIR`, else `$MAIL_CONFIG`, else `/etc/postfix`.

use std::path::Path;

use clap::Parser;
use pfx_config::Config;

/// Parses arguments; on error prints the usage line Postfix prints and exits 1.
pub fn parse_args<T: Parser>(name: &str, usage: &str) -> T {
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
            std::process::exit(1)
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
