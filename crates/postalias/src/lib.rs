//! Building and querying indexed tables: alias databases for `postalias`
//! (which `newaliases` runs) and postmap(1) tables such as transport(5).

use std::path::{Path, PathBuf};

use clap::Parser;
use pfx_maillog::fatal;

use pfx_maps::db::Db;

/// `type:path` or a bare path (type hash). Only indexed types are built.
pub fn source_path(spec: &str) -> Result<PathBuf, String> {
    match spec.split_once(':') {
        Some(("hash" | "btree" | "lmdb" | "cdb", p)) => Ok(PathBuf::from(p)),
        Some((t, _)) if !t.contains('/') => Err(format!("unsupported database type: {t}")),
        _ => Ok(PathBuf::from(spec)),
    }
}

/// Reads the text file at `source` (aliases(5) or postmap format) and
/// writes `source.db`. Bad lines are reported (`FILE, line N: ...`) and
/// skipped, as Postfix's postalias and postmap do.
pub fn build_as(source: &Path, format: pfx_maps::Format) -> Result<usize, String> {
    let text =
        std::fs::read_to_string(source).map_err(|e| format!("open {}: {e}", source.display()))?;
    let name = source.display().to_string();
    let (entries, problems, program) = match format {
        pfx_maps::Format::Aliases => {
            let (e, p) = pfx_maps::aliases::parse_lenient(&name, &text);
            (e, p, "postalias")
        }
        pfx_maps::Format::Postmap => {
            let (e, p) = pfx_maps::table::parse_lenient(&name, &text);
            (e, p, "postmap")
        }
    };
    for p in problems {
        eprintln!("{program}: warning: {p}");
    }
    Db::write(&pfx_maps::db_path(source), &entries)
        .map_err(|e| format!("write {}: {e}", pfx_maps::db_path(source).display()))?;
    Ok(entries.len())
}

#[derive(Parser, Debug)]
#[command(
    name = "postalias",
    version,
    about = "Build or query postfix-rs alias databases (postalias) and lookup tables (postmap)"
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

/// Runs `postalias` (aliases(5) files) or `postmap` (`key value` tables).
pub fn main_as(format: pfx_maps::Format) {
    let program = match format {
        pfx_maps::Format::Aliases => "postalias",
        pfx_maps::Format::Postmap => "postmap",
    };
    let usage = format!("{program} [-Nfinoprsuvw] [-c config_dir] [-q key] [map_type:]file...");
    let args: Args = pfx_cli::parse_args(program, &usage);
    match &args.query {
        Some(key) => {
            for spec in &args.files {
                let source = source_path(spec).unwrap_or_else(|e| fatal(e));
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
                let source = source_path(spec).unwrap_or_else(|e| fatal(e));
                build_as(&source, format).unwrap_or_else(|e| fatal(e));
            }
        }
    }
}
