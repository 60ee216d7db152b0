//! Berkeley DB (`hash:` and `btree:` tables) comes from the system's
//! library, as Postfix's does: the shim is built when its header is there
//! (Debian: libdb5.3-dev, which scripts/setup installs). Without it the
//! other table types work and `hash:`/`btree:` tables are refused with the
//! reason.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bdb)");
    println!("cargo::rerun-if-changed=src/indexed/bdb_shim.c");
    if std::path::Path::new("/usr/include/db.h").exists() {
        // Its removal shows as a change.
        println!("cargo::rerun-if-changed=/usr/include/db.h");
        cc::Build::new()
            .file("src/indexed/bdb_shim.c")
            .warnings(true)
            .compile("pfx_bdb_shim");
        println!("cargo::rustc-link-lib=dylib=db");
        println!("cargo::rustc-cfg=bdb");
    } else {
        // The header keeps its package's old time when installed, so a
        // watch on it would not see it come; the directory's time changes.
        println!("cargo::rerun-if-changed=/usr/include");
        println!(
            "cargo::warning=no /usr/include/db.h: hash: and btree: tables disabled (install libdb5.3-dev)"
        );
    }
}
