//! named(8): serves the zones of a BIND named.conf.
//!
//! Two ways to run it. Under master (a `master.cf` line, see docs/man/named.md)
//! it is a postfix-rs daemon: named.conf is `$named_config_file`, messages go
//! to the mail log, SIGHUP (`postfix reload`) re-reads named.conf and the
//! zones. On its own it takes BIND's flags (`named -c FILE -g -u USER -p PORT`):
//! without `-f`/`-g` it detaches and logs to syslog like BIND.

use std::path::{Path, PathBuf};

use clap::Parser;
use named::commands::{self, Mode};
use named::control::Controls;
use named::listen::{self, Family};
use named::serve::{self, Named};
use tracing::info;

fn main() {
    if pfx_sys::fds::started_by_master() {
        under_master()
    } else {
        standalone()
    }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn under_master() -> ! {
    pfx_server::run_prepared(
        "named",
        pfx_server::Threads::Many,
        |cfg| {
            let path = cfg.get("named_config_file").map_err(|e| e.to_string())?;
            let mut named = load(Path::new(&path))?;
            named.threads = workers();
            named.use_logging = true;
            named::logging::install(named.conf().logging.as_ref());
            let sockets = listen::bind(named.conf(), None, Family::Both, workers())?;
            let controls = Controls::bind(named.conf());
            Ok((named, sockets, controls))
        },
        |ctx, _endpoint, (mut named, sockets, mut controls)| async move {
            let mut listening = listen::start(sockets, named.handler())?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            named.set_events(tx.clone());
            controls.start(tx)?;
            info!("running");
            let mut cfg = ctx.config.clone();
            let mut scan = interfaces_timer(named.conf());
            loop {
                named.tend();
                tokio::select! {
                    changed = cfg.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        if named.reload().is_ok() {
                            controls.configure(named.conf());
                            listening.rescan(named.conf());
                            scan = interfaces_timer(named.conf());
                        }
                    }
                    Some(event) = rx.recv() => {
                        commands::handle(&mut named, &mut controls, &mut listening, event, Mode::Master);
                    }
                    _ = scan.tick() => listening.rescan(named.conf()),
                    () = ctx.shutdown() => break,
                }
            }
            Ok(())
        },
    )
}

/// Ticks every `interface-interval` (first after one interval); never with 0.
fn interfaces_timer(conf: &pfx_named_conf::conf::NamedConf) -> tokio::time::Interval {
    let minutes = conf.options.interface_interval;
    // 0 turns scanning off: a tick a century away.
    let period = std::time::Duration::from_secs(if minutes == 0 {
        100 * 365 * 86_400
    } else {
        u64::from(minutes) * 60
    });
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

fn load(path: &Path) -> Result<Named, String> {
    info!("loading configuration from '{}'", path.display());
    let named = Named::load(path).map_err(|e| format!("{e}\nloading configuration: failure"))?;
    serve::log_recursion(named.conf());
    info!("all zones loaded");
    Ok(named)
}

#[derive(Parser)]
#[command(
    name = "named",
    about = "postfix-rs named: authoritative DNS server for BIND's named.conf and zone files",
    override_usage = "named [-4|-6] [-c conffile] [-d debuglevel] [-f|-g] [-n number_of_cpus] [-p port] [-t chrootdir] [-u username]\n       named [-v|-V]",
    disable_version_flag = true
)]
struct Bind {
    /// IPv4 only.
    #[arg(short = '4', conflicts_with = "v6")]
    v4: bool,
    /// IPv6 only.
    #[arg(short = '6')]
    v6: bool,
    /// The configuration file.
    #[arg(short = 'c', default_value = "/etc/bind/named.conf")]
    config: PathBuf,
    /// Debug level (accepted for compatibility; ignored).
    #[arg(short = 'd', default_value_t = 0)]
    _debug: u32,
    /// Stay in the foreground (logging to syslog).
    #[arg(short = 'f')]
    foreground: bool,
    /// Stay in the foreground and log to stderr.
    #[arg(short = 'g')]
    stderr: bool,
    /// Worker threads (default: one per CPU).
    #[arg(short = 'n')]
    cpus: Option<usize>,
    /// Port for listen-on statements that name none (default 53).
    #[arg(short = 'p')]
    port: Option<u16>,
    /// chroot to this directory before reading the configuration.
    #[arg(short = 't')]
    chroot: Option<PathBuf>,
    /// Run as this user once the sockets are bound.
    #[arg(short = 'u')]
    user: Option<String>,
    /// Print the version and exit.
    #[arg(short = 'v')]
    version: bool,
    /// Print the version and build details and exit.
    #[arg(short = 'V')]
    version_long: bool,
}

fn fatal(text: impl std::fmt::Display) -> ! {
    pfx_maillog::fatal(format!("{text}\nexiting (due to fatal error)"))
}

fn standalone() -> ! {
    let args = match Bind::try_parse() {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            print!("{e}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{}", e.render());
            std::process::exit(1)
        }
    };
    if args.version || args.version_long {
        println!(
            "postfix-rs named {} (BIND-compatible, hickory-server 0.26)",
            env!("CARGO_PKG_VERSION")
        );
        std::process::exit(0);
    }
    pfx_maillog::init_stderr("named");
    if let Some(dir) = &args.chroot {
        if let Err(e) = nix::unistd::chroot(dir).and_then(|()| nix::unistd::chdir("/")) {
            fatal(format!("chroot(): {e}"));
        }
    }
    info!("starting postfix-rs named {}", env!("CARGO_PKG_VERSION"));
    let mut named = load(&args.config).unwrap_or_else(|e| fatal(e));
    let family = if args.v4 {
        Family::V4
    } else if args.v6 {
        Family::V6
    } else {
        Family::Both
    };
    let threads = args.cpus.unwrap_or_else(workers).max(1);
    named.threads = threads;
    let sockets =
        listen::bind(named.conf(), args.port, family, threads).unwrap_or_else(|e| fatal(e));
    let mut controls = Controls::bind(named.conf());
    if let Some(user) = &args.user {
        let ids = pfx_sys::users::user(user).unwrap_or_else(|e| fatal(e));
        pfx_sys::users::drop_privileges(ids).unwrap_or_else(|e| fatal(e));
    }
    if !args.stderr {
        if !args.foreground {
            nix::unistd::daemon(true, false).unwrap_or_else(|e| fatal(format!("daemon(): {e}")));
        }
        pfx_maillog::init_daemon_syslog("named");
        named.use_logging = true;
        named::logging::install(named.conf().logging.as_ref());
    } else if named.conf().logging.is_some() {
        info!("not using config file logging statement for logging due to -g option");
    }
    let pid_file = named.conf().options.pid_file.clone();
    if let Some(p) = &pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            fatal(format!("couldn't open pid file '{}': {e}", p.display()));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(e));
    let result: Result<(), String> = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut listening = listen::start(sockets, named.handler())?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        named.set_events(tx.clone());
        controls.start(tx)?;
        let mut scan = interfaces_timer(named.conf());
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        info!("running");
        loop {
            named.tend();
            tokio::select! {
                _ = hup.recv() => {
                    if named.reload().is_ok() {
                        controls.configure(named.conf());
                        listening.rescan(named.conf());
                        scan = interfaces_timer(named.conf());
                    }
                }
                Some(event) = rx.recv() => {
                    if commands::handle(&mut named, &mut controls, &mut listening, event, Mode::Standalone) {
                        break;
                    }
                }
                _ = scan.tick() => listening.rescan(named.conf()),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        info!("exiting");
        Ok(())
    });
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    if let Err(e) = result {
        fatal(e);
    }
    std::process::exit(0)
}
