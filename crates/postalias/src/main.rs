//! postalias(1): builds `FILE.db` from an aliases(5) file, or queries it.
//!
//! `postalias [-c config_dir] [hash:]FILE...` rebuilds each database;
//! `postalias -q KEY [hash:]FILE...` prints KEY's value from the first
//! database that has it, or exits 1 when none does.

use std::path::PathBuf;

use clap::Parser;
use pfx_maillog::fatal;

const USAGE: &str = "postalias [-Nfinoprsuvw] [-c config_dir] [-q key] [map_type:]file...";

#[derive(Parser, Debug)]
#[command(
    name = "postalias",
    version,
    about = "Build or query postfix-rs alias databases"
)]
struct Args {
    /// Configuration directory (accepted for compatibility; the files are named explicitly).
    #[arg(short = 'c', value_name = "DIR")]
    _config_dir: Option<PathBuf>,
    /// Look KEY up instead of building.
    #[arg(short = 'q', value_name = "KEY")]
    query: Option<String>,
    /// Verbose (accepted for compatibility).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    _verbose: u8,
    /// Databases: [hash:]FILE.
    #[arg(required = true)]
    files: Vec<String>,
}

fn main() {
    let args: Args = pfx_cli::parse_args("postalias", USAGE);
    match &args.query {
        Some(key) => {
            for spec in &args.files {
                let source = postalias::source_path(spec).unwrap_or_else(|e| fatal(e));
                let db = pfx_maps::db::Db::open(&pfx_maps::db_path(&source)).unwrap_or_else(|e| {
                    fatal(format!(
                        "open database {}: {e}",
                        pfx_maps::db_path(&source).display()
                    ))
                });
                if let Some(v) = db.get(&key.to_ascii_lowercase()) {
                    println!("{v}");
                    return;
                }
            }
            std::process::exit(1);
        }
        None => {
            for spec in &args.files {
                let source = postalias::source_path(spec).unwrap_or_else(|e| fatal(e));
                postalias::build(&source).unwrap_or_else(|e| fatal(e));
            }
        }
    }
}
