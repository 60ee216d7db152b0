//! named-checkzone: checks one zone file as BIND's does.

use std::path::{Path, PathBuf};

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "named-checkzone",
    about = "Check a zone file (postfix-rs named)",
    override_usage = "named-checkzone [-q] zonename filename"
)]
struct Args {
    /// Quiet: only the exit status tells.
    #[arg(short = 'q')]
    quiet: bool,
    /// The zone's name (`ywnds.com`).
    zone: String,
    /// Its file.
    file: PathBuf,
}

fn main() {
    let args = Args::parse();
    let name = args.zone.trim_end_matches('.').to_ascii_lowercase();
    let label = pfx_named_conf::zone::Zone::label(&name);
    // As BIND's: relative $INCLUDE names are under the working directory.
    match pfx_named_conf::zone::load(&name, &args.file, Path::new(".")) {
        Ok(z) => {
            if !args.quiet {
                for w in &z.warnings {
                    println!("{w}");
                }
                println!("{label}: loaded serial {}", z.serial);
                println!("OK");
            }
        }
        Err(e) => {
            if !args.quiet {
                println!("{e}");
                println!("{label}: not loaded due to errors.");
            }
            std::process::exit(1);
        }
    }
}
