//! postalias(1): builds the alias database of an aliases(5) file in
//! Postfix's formats (`hash:` Berkeley DB by default, `btree:`, `lmdb:`,
//! `cdb:`), or queries it.
//!
//! `postalias [-c config_dir] [type:]FILE...` rebuilds each database;
//! `postalias -q KEY [type:]FILE...` prints KEY's value from the first
//! database that has it, or exits 1 when none does; `-s` prints them all.

fn main() {
    postalias::main_as(pfx_maps::Format::Aliases)
}
