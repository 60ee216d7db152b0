//! named-checkconf: checks named.conf (and with -z its zones) as BIND's does.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "named-checkconf",
    about = "Check a named.conf file (postfix-rs named)",
    override_usage = "named-checkconf [-z] [-t directory] [filename]"
)]
struct Args {
    /// Also load the primary zones it names.
    #[arg(short = 'z')]
    zones: bool,
    /// chroot to this directory first.
    #[arg(short = 't')]
    chroot: Option<PathBuf>,
    /// Accepted for compatibility: print the configuration (not implemented, ignored).
    #[arg(short = 'p')]
    print: bool,
    /// The file to check.
    #[arg(default_value = "/etc/bind/named.conf")]
    file: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.chroot {
        if let Err(e) = nix::unistd::chroot(dir).and_then(|()| nix::unistd::chdir("/")) {
            println!("chroot {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
    let conf = match pfx_named_conf::conf::load(&args.file) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            std::process::exit(1);
        }
    };
    for w in &conf.warnings {
        println!("{w}");
    }
    if args.zones && !pfx_named_conf::check_zones(&conf, &mut std::io::stdout()) {
        std::process::exit(1);
    }
}
