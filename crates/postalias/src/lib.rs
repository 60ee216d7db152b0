//! Building alias databases, for `postalias` (which `newaliases` runs).

use std::path::{Path, PathBuf};

use pfx_maps::db::Db;

/// `type:path` or a bare path (type hash). Only indexed types are built.
pub fn source_path(spec: &str) -> Result<PathBuf, String> {
    match spec.split_once(':') {
        Some(("hash" | "btree" | "lmdb" | "cdb", p)) => Ok(PathBuf::from(p)),
        Some((t, _)) if !t.contains('/') => Err(format!("unsupported database type: {t}")),
        _ => Ok(PathBuf::from(spec)),
    }
}

/// Reads the aliases file at `source` and writes `source.db`. Bad lines are
/// reported (`FILE, line N: ...`) and skipped, as Postfix's postalias does.
pub fn build(source: &Path) -> Result<usize, String> {
    let text =
        std::fs::read_to_string(source).map_err(|e| format!("open {}: {e}", source.display()))?;
    let (entries, problems) =
        pfx_maps::aliases::parse_lenient(&source.display().to_string(), &text);
    for p in problems {
        eprintln!("postalias: warning: {p}");
    }
    Db::write(&pfx_maps::db_path(source), &entries)
        .map_err(|e| format!("write {}: {e}", pfx_maps::db_path(source).display()))?;
    Ok(entries.len())
}
