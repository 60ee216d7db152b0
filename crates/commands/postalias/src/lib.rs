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
//!
//! `-q` and `-s` also take the table types that are not built
//! ([`pfx_maps::Map`]: `regexp:`, `pcre:`, `cidr:`, `inline:`, `static:`,
//! `unionmap:`, `pipemap:`, `tcp:`, `socketmap:`, `sqlite:`, `texthash:`),
//! with Debian's postmap's messages and exit codes: a table that cannot be
//! opened is fatal, a failed lookup is fatal (`table T: query error: ...`),
//! and `-s` on a table that cannot list its records fails with `table T:
//! sequence operation is not supported`.

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

/// A table named on the command line.
#[derive(Debug, Clone)]
pub enum Table {
    /// One postalias/postmap build (hash, btree, lmdb, cdb).
    Indexed(Kind, PathBuf),
    /// Any other type, queried through [`pfx_maps::Map`]: the whole
    /// `type:name`.
    Other(String),
}

/// `type:name`, or a bare path of type `default`: an indexed table, or
/// another type (checked when it is opened).
pub fn classify(spec: &str, default: &str) -> Result<Table, String> {
    match spec.split_once(':') {
        Some((t, _)) if !t.contains('/') && Kind::parse(t).is_none() => {
            Ok(Table::Other(spec.to_owned()))
        }
        _ => table(spec, default).map(|(k, p)| Table::Indexed(k, p)),
    }
}

/// Postfix's fatal text for a table that could not be opened for a query.
fn open_error(spec: &str, e: &pfx_maps::Error) -> String {
    match e {
        pfx_maps::Error::Unsupported { kind, .. } => format!("unsupported dictionary type: {kind}"),
        pfx_maps::Error::BadSpec(_) => {
            format!("open dictionary: expecting \"type:name\" form instead of \"{spec}\"")
        }
        e => e.to_string(),
    }
}

/// Postfix's fatal text for a lookup that failed.
fn query_error(spec: &str, e: &pfx_maps::Error) -> String {
    use pfx_maps::Error as E;
    match e {
        // Postfix's DICT_ERR_CONFIG: no reason given.
        E::Config { .. } => format!("table {spec}: query error"),
        E::Temporary { reason, .. } => format!("table {spec}: query error: {reason}"),
        e => format!("table {spec}: query error: {e}"),
    }
}

/// Postfix's two warnings about a table that answers with nothing.
fn warn_empty(program: &str, spec: &str, key: &str) {
    eprintln!("{program}: warning: table {spec}: key {key}: empty string result is not allowed");
    eprintln!("{program}: warning: table {spec} should return NO RESULT in case of NOT FOUND");
}

/// A command-line table once opened for queries.
enum Opened {
    Indexed(Reader),
    Other(pfx_maps::Map),
}

/// Opens `t` for queries, or ends the program as Postfix's postmap does.
fn open_for_query(t: &Table) -> Opened {
    match t {
        Table::Indexed(kind, source) => {
            Opened::Indexed(Reader::open(*kind, source).unwrap_or_else(|e| {
                fatal(format!(
                    "open database {}: {e}",
                    kind.file(source).display()
                ))
            }))
        }
        Table::Other(spec) => {
            let passwd = pfx_maps::passwd::Passwd::new(None);
            Opened::Other(
                pfx_maps::Map::parse_strict(spec, &passwd)
                    .unwrap_or_else(|e| fatal(open_error(spec, &e))),
            )
        }
    }
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

/// Why postmap cannot build a table of a type that is only read (Postfix
/// opens the source file first, then refuses the type).
fn not_buildable(spec: &str) -> String {
    let (kind, name) = spec.split_once(':').unwrap_or(("", spec));
    if kind == "proxy" {
        return "can't create maps via the proxy service".to_owned();
    }
    if let Err(e) = std::fs::File::open(name) {
        let why = std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::ENOENT));
        let text = why.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
        return format!("open {name}: {text}");
    }
    let known = matches!(
        kind,
        "regexp"
            | "pcre"
            | "cidr"
            | "texthash"
            | "inline"
            | "static"
            | "unionmap"
            | "pipemap"
            | "tcp"
            | "socketmap"
            | "sqlite"
            | "unix"
            | "nis"
            | "environ"
            | "fail"
            | "internal"
            | "randmap"
    );
    if known {
        format!("unsupported dictionary type: {kind} does not support bulk-mode creation.")
    } else {
        format!("unsupported dictionary type: {kind}. Is the postfix-{kind} package installed?")
    }
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
    if args.query.is_some() && args.sequence {
        // Postfix complains at whichever of the two comes second.
        let mut first = None;
        for a in raw.iter().skip(1) {
            let Some(flags) = a.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
                continue;
            };
            if let Some(c) = flags.chars().find(|c| matches!(c, 'q' | 's')) {
                first = Some(c);
                break;
            }
        }
        fatal(if first == Some('s') {
            "specify only one of -s -q or -d"
        } else {
            "specify only one of -s or -q or -d"
        });
    }
    let dir = args.config.dir();
    let cfg = pfx_config::Config::load(&dir)
        .or_else(|_| pfx_config::Config::from_text(&dir, ""))
        .unwrap_or_else(|e| fatal(e));
    let default_type = cfg
        .get("default_database_type")
        .unwrap_or_else(|e| fatal(e));
    let tables: Vec<Table> = args
        .files
        .iter()
        .map(|spec| classify(spec, &default_type).unwrap_or_else(|e| fatal(e)))
        .collect();
    let sep = if format == Format::Aliases {
        ":\t"
    } else {
        "\t"
    };
    let fold_on = !args.no_fold;
    if let Some(key) = &args.query {
        // Tables are opened when first needed, in order, as Postfix does.
        let mut opened: Vec<Option<Opened>> = tables.iter().map(|_| None).collect();
        let mut find = |key: &str| -> Option<String> {
            for (t, o) in tables.iter().zip(opened.iter_mut()) {
                let o = o.get_or_insert_with(|| open_for_query(t));
                let found = match o {
                    Opened::Indexed(r) => r.get(&fold(key, fold_on)).unwrap_or_else(|e| fatal(e)),
                    Opened::Other(m) => {
                        let Table::Other(spec) = t else { continue };
                        let v = m
                            .lookup(key)
                            .unwrap_or_else(|e| fatal(query_error(spec, &e)));
                        if v.as_deref() == Some("") {
                            warn_empty(program, spec, key);
                        }
                        v
                    }
                };
                if found.is_some() {
                    return found;
                }
            }
            None
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
            match t {
                Table::Indexed(kind, source) => {
                    let mut r = Reader::open(*kind, source).unwrap_or_else(|e| {
                        fatal(format!(
                            "open database {}: {e}",
                            kind.file(source).display()
                        ))
                    });
                    for (k, v) in r.records().unwrap_or_else(|e| fatal(e)) {
                        println!("{k}{sep}{v}");
                    }
                }
                Table::Other(spec) => {
                    if spec.starts_with("proxy:") {
                        fatal("can't sequence maps via the proxy service");
                    }
                    let Opened::Other(m) = open_for_query(t) else {
                        continue;
                    };
                    let records = match m.records() {
                        None => fatal(format!("table {spec}: sequence operation is not supported")),
                        Some(r) => r.unwrap_or_else(|e| {
                            fatal(format!("table {spec}: sequence error: {e}"))
                        }),
                    };
                    for (k, v) in records {
                        if k.is_empty() {
                            eprintln!("{program}: warning: table {spec}: empty lookup key value is not allowed");
                        } else if v.is_empty() {
                            warn_empty(program, spec, &k);
                        }
                        println!("{k}{sep}{v}");
                    }
                }
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
        for t in &tables {
            match t {
                Table::Indexed(kind, source) => {
                    build(*kind, source, &how).unwrap_or_else(|e| fatal(e));
                }
                Table::Other(spec) => fatal(not_buildable(spec)),
            }
        }
    }
}
