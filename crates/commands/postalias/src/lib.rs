//! Building and querying indexed tables in Postfix's formats (`hash:`,
//! `btree:`, `lmdb:`, `cdb:`): alias databases for `postalias` (which
//! `newaliases` runs) and postmap(1) tables such as transport(5).
//!
//! As Postfix's tools: keys are folded to lower case (not with `-f`); a
//! key met twice keeps its first value with a `duplicate entry` warning
//! (`-r`: the last wins, `-w`: no warning); hash, btree and lmdb records
//! end with a NUL byte and cdb's do not (`-N`/`-n` force either); an alias
//! database ends with the `@` record and the `YP_LAST_MODIFIED` and
//! `YP_MASTER_NAME` records sendmail and NIS look for. The table is built
//! with the source file's permissions for group and others.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use pfx_maillog::fatal;
use pfx_maps::indexed::{self, Duplicates, Kind, Reader, Record};
use pfx_maps::Format;

/// `type:path`, or a bare path of type `default`. Only indexed types.
pub fn table(spec: &str, default: &str) -> Result<(Kind, PathBuf), String> {
    let (t, path) = match spec.split_once(':') {
        Some((t, p)) if !t.contains('/') => (t, p),
        _ => (default, spec),
    };
    let kind = Kind::parse(t).ok_or_else(|| format!("unsupported database type: {t}"))?;
    if matches!(kind, Kind::Hash | Kind::Btree) && !indexed::bdb::AVAILABLE {
        return Err(format!(
            "{t}: Berkeley DB support was not built into postfix-rs (install libdb5.3-dev and rebuild)"
        ));
    }
    Ok((kind, PathBuf::from(path)))
}

/// How a table is built.
#[derive(Debug, Clone)]
pub struct Build {
    pub format: Format,
    /// Fold keys to lower case (not `-f`).
    pub fold: bool,
    /// `-N` (true) or `-n` (false); else the type's own convention.
    pub nul: Option<bool>,
    pub duplicates: Duplicates,
    /// For an alias database's `YP_MASTER_NAME`.
    pub myhostname: String,
}

fn fold(key: &str, on: bool) -> String {
    if on {
        key.to_lowercase()
    } else {
        key.to_owned()
    }
}

/// Reads the text file at `source` (aliases(5) or postmap format) and
/// writes its table of type `kind`. Bad lines and duplicate keys are
/// reported (`FILE, line N: ...`) and skipped, as Postfix's postalias and
/// postmap do. Returns the number of records from the source.
pub fn build(kind: Kind, source: &Path, how: &Build) -> Result<usize, String> {
    let program = match how.format {
        Format::Aliases => "postalias",
        Format::Postmap => "postmap",
    };
    let text =
        std::fs::read_to_string(source).map_err(|e| format!("open {}: {e}", source.display()))?;
    let name = source.display().to_string();
    let (entries, problems) = match how.format {
        Format::Aliases => pfx_maps::aliases::parse_lenient(&name, &text),
        Format::Postmap => pfx_maps::table::parse_lenient(&name, &text),
    };
    for p in problems {
        eprintln!("{program}: warning: {p}");
    }
    let nul = how.nul.unwrap_or(kind.nul());
    let records: Vec<Record> = entries
        .iter()
        .map(|(k, v)| {
            (
                indexed::stored(&fold(k, how.fold), nul),
                indexed::stored(v, nul),
            )
        })
        .collect();
    let count = records.len();
    let (mut records, dups) = indexed::dedup(records, how.duplicates);
    for k in dups {
        let k = String::from_utf8_lossy(&k);
        eprintln!(
            "{program}: warning: {}: duplicate entry: \"{}\"",
            kind.warning_name(source),
            k.trim_end_matches('\0')
        );
    }
    if how.format == Format::Aliases {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        records.push((indexed::stored("@", nul), indexed::stored("@", nul)));
        // Without a NUL and not folded, as Postfix writes them.
        records.push((
            b"YP_LAST_MODIFIED".to_vec(),
            format!("{now:010}").into_bytes(),
        ));
        records.push((
            b"YP_MASTER_NAME".to_vec(),
            how.myhostname.clone().into_bytes(),
        ));
    }
    // The table is no more readable than its source (Postfix's umask rule).
    let source_mode = std::fs::metadata(source).map_or(0o644, |m| m.permissions().mode());
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask((0o022 | (!source_mode & 0o077)) as libc::mode_t) };
    let built = indexed::build(kind, source, &records);
    // SAFETY: restores the mask set above.
    unsafe { libc::umask(old) };
    built.map_err(|e| format!("{}: {e}", kind.file(source).display()))?;
    Ok(count)
}

#[derive(Parser, Debug)]
#[command(
    name = "postalias",
    version,
    about = "Build or query alias databases (postalias) and lookup tables (postmap) in Postfix's formats",
    // Here -c only supplies myhostname and default_database_type.
    mut_arg(pfx_cli::CONFIG_DIR, |a| a.help("Configuration directory (myhostname, default_database_type)"))
)]
struct Args {
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Look KEY up instead of building (`-` reads keys from stdin).
    #[arg(short = 'q', value_name = "KEY")]
    query: Option<String>,
    /// Print every record.
    #[arg(short = 's')]
    sequence: bool,
    /// Keep keys as written (no folding to lower case).
    #[arg(short = 'f')]
    no_fold: bool,
    /// Store keys and values with a trailing NUL byte.
    #[arg(short = 'N')]
    nul: bool,
    /// Store keys and values without a trailing NUL byte.
    #[arg(short = 'n')]
    no_nul: bool,
    /// A duplicate key replaces the earlier value.
    #[arg(short = 'r')]
    replace: bool,
    /// Keep the first value of a duplicate key, without a warning.
    #[arg(short = 'w')]
    ignore_duplicates: bool,
    /// Accepted for compatibility: tables are built by whoever runs this.
    #[arg(short = 'o')]
    _no_owner_change: bool,
    /// Accepted for compatibility: permissions follow the source file.
    #[arg(short = 'p')]
    _no_mode_change: bool,
    /// Accepted for compatibility.
    #[arg(short = 'u')]
    _no_utf8: bool,
    /// Verbose (accepted for compatibility).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    _verbose: u8,
    /// Tables: [type:]FILE.
    #[arg(required = true)]
    files: Vec<String>,
}

/// Runs `postalias` (aliases(5) files) or `postmap` (`key value` tables).
pub fn main_as(format: Format) {
    let program = match format {
        Format::Aliases => "postalias",
        Format::Postmap => "postmap",
    };
    let usage = format!("{program} [-Nfinoprsuvw] [-c config_dir] [-q key] [map_type:]file...");
    let raw: Vec<String> = std::env::args().collect();
    if let Some(flag) = raw.iter().skip(1).find_map(|a| {
        a.strip_prefix('-')
            .filter(|f| !f.starts_with('-'))
            .and_then(|f| f.chars().find(|c| "bdhim".contains(*c)))
    }) {
        fatal(format!("option -{flag} is not implemented by postfix-rs"));
    }
    let args: Args = pfx_cli::parse_args(program, &usage);
    let dir = args.config.dir();
    let cfg = pfx_config::Config::load(&dir)
        .or_else(|_| pfx_config::Config::from_text(&dir, ""))
        .unwrap_or_else(|e| fatal(e));
    let default_type = cfg
        .get("default_database_type")
        .unwrap_or_else(|e| fatal(e));
    let tables: Vec<(Kind, PathBuf)> = args
        .files
        .iter()
        .map(|spec| table(spec, &default_type).unwrap_or_else(|e| fatal(e)))
        .collect();
    let sep = if format == Format::Aliases {
        ":\t"
    } else {
        "\t"
    };
    let fold_on = !args.no_fold;
    let open = |(kind, source): &(Kind, PathBuf)| {
        Reader::open(*kind, source).unwrap_or_else(|e| {
            fatal(format!(
                "open database {}: {e}",
                kind.file(source).display()
            ))
        })
    };
    if let Some(key) = &args.query {
        let mut readers: Vec<Reader> = tables.iter().map(open).collect();
        let mut find = |key: &str| {
            readers
                .iter_mut()
                .find_map(|r| r.get(&fold(key, fold_on)).unwrap_or_else(|e| fatal(e)))
        };
        if key == "-" {
            let mut any = false;
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let k = line.trim();
                if let Some(v) = find(k) {
                    println!("{k}{sep}{v}");
                    any = true;
                }
            }
            std::process::exit(i32::from(!any));
        }
        match find(key) {
            Some(v) => println!("{v}"),
            None => std::process::exit(1),
        }
    } else if args.sequence {
        for t in &tables {
            for (k, v) in open(t).records().unwrap_or_else(|e| fatal(e)) {
                println!("{k}{sep}{v}");
            }
        }
    } else {
        let how = Build {
            format,
            fold: fold_on,
            nul: if args.nul {
                Some(true)
            } else if args.no_nul {
                Some(false)
            } else {
                None
            },
            duplicates: if args.replace {
                Duplicates::Replace
            } else if args.ignore_duplicates {
                Duplicates::Ignore
            } else {
                Duplicates::Warn
            },
            myhostname: cfg.get("myhostname").unwrap_or_else(|e| fatal(e)),
        };
        for (kind, source) in &tables {
            build(*kind, source, &how).unwrap_or_else(|e| fatal(e));
        }
    }
}
