//! newaliases(1): rebuilds every database in `$alias_database`, as
//! Postfix's `sendmail -bi` does. `-C DIR` (sendmail's flag) or
//! `$MAIL_CONFIG` selects the instance.

use std::path::PathBuf;

use clap::Parser;
use pfx_maillog::fatal;

#[derive(Parser, Debug)]
#[command(
    name = "newaliases",
    version,
    about = "Rebuild the alias databases named by alias_database"
)]
struct Args {
    /// Configuration directory (sendmail's -C).
    #[arg(short = 'C', value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Verbose.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() {
    let args: Args = pfx_cli::parse_args("newaliases", "newaliases [-C config_dir] [-v]");
    let dir = pfx_config::config_dir(args.config_dir.as_deref());
    let cfg = pfx_cli::load_config(&dir);
    for spec in cfg.list("alias_database").unwrap_or_else(|e| fatal(e)) {
        let source = postalias::source_path(&spec).unwrap_or_else(|e| fatal(e));
        let n = postalias::build(&source).unwrap_or_else(|e| fatal(e));
        if args.verbose > 0 {
            eprintln!("newaliases: {}: {n} aliases", source.display());
        }
    }
}
