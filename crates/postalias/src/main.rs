//! postalias(1): builds `FILE.db` from an aliases(5) file, or queries it.
//!
//! `postalias [-c config_dir] [hash:]FILE...` rebuilds each database;
//! `postalias -q KEY [hash:]FILE...` prints KEY's value from the first
//! database that has it, or exits 1 when none does.

fn main() {
    postalias::main_as(pfx_maps::Format::Aliases)
}
