//! master(8): the resident process of a postfix-rs instance.
//!
//! Reads `main.cf` and `master.cf` from the configuration directory, creates
//! the queue directory tree (with Postfix's owners and modes when started as
//! root), takes the instance lock `$queue_directory/pid/master.pid`, creates
//! every service endpoint and spawns and supervises the services. Without
//! `-d` it detaches, and the foreground process exits 0 only once the
//! services are started (Postfix's `master -w`), 1 with the reason otherwise.

mod endpoint;
mod env;
mod supervise;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use clap::Parser;
use pfx_config::Config;
use pfx_queue::layout::Owners;
use tracing::info;

#[derive(Parser, Debug)]
#[command(
    name = "master",
    version,
    about = "postfix-rs master daemon: starts and supervises the services in master.cf",
    // -c keeps the help text this command has always printed.
    mut_arg(pfx_cli::CONFIG_DIR, |a| a.help("Configuration directory (default: $MAIL_CONFIG or /etc/postfix)"))
)]
struct Args {
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Stay in the foreground (do not detach); `postfix start-fg` uses this.
    #[arg(short = 'd')]
    foreground: bool,
    /// Test mode: exit 0 if no master runs for this instance, 1 if one does.
    #[arg(short = 't')]
    test: bool,
    /// Accepted for compatibility: the detaching master always waits for its services (Postfix's -w).
    #[arg(short = 'w')]
    wait: bool,
    /// Verbose logging.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn fatal(msg: impl std::fmt::Display) -> ! {
    pfx_maillog::fatal(msg)
}

fn owners(cfg: &Config) -> (Owners, Option<(nix::unistd::Uid, nix::unistd::Gid)>) {
    if !pfx_sys::users::is_root() {
        let me = pfx_sys::users::current();
        return (Owners::single(me.uid, me.gid), None);
    }
    let main_cf = cfg.main_cf().display().to_string();
    let name = cfg.get("mail_owner").unwrap_or_else(|e| fatal(e));
    let owner = pfx_sys::users::user(&name).unwrap_or_else(|_| {
        fatal(format!(
            "file {main_cf}: parameter mail_owner: unknown user name value: {name}"
        ))
    });
    if owner.uid.is_root() {
        fatal(format!(
            "file {main_cf}: parameter mail_owner: user {name} has privileged user ID"
        ));
    }
    let group = cfg.get("setgid_group").unwrap_or_else(|e| fatal(e));
    let setgid = pfx_sys::users::group(&group).unwrap_or_else(|_| {
        fatal(format!(
            "file {main_cf}: parameter setgid_group: unknown group name: {group}"
        ))
    });
    let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
    let owners = Owners {
        root,
        mail_owner: (owner.uid, owner.gid),
        setgid_group: setgid,
    };
    (owners, Some((owner.uid, owner.gid)))
}

/// Forks; the parent waits until the child reports its services started.
/// Returns the write end the child uses to report, in the child.
fn detach() -> std::fs::File {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .unwrap_or_else(|e| fatal(format!("pipe: {e}")));
    // SAFETY: still single-threaded (no runtime yet), so fork is sound.
    match unsafe { nix::unistd::fork() } {
        Err(e) => fatal(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            let mut msg = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
            std::process::exit(if msg == "ok" { 0 } else { 1 });
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            std::fs::File::from(w)
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null once nobody waits on them.
fn close_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn main() {
    pfx_maillog::init_stderr("postfix/master");
    let args = Args::parse();
    let dir = args.config.dir();
    let cfg = Config::load(&dir)
        .and_then(|c| c.validate().map(|()| c))
        .unwrap_or_else(|e| fatal(e));
    let services = pfx_config::read_master_cf(&dir).unwrap_or_else(|e| fatal(e));
    if let Err(e) = cfg.fail_closed(&services) {
        fatal(e);
    }
    let services = supervise::started(services);
    let queue_dir = PathBuf::from(cfg.get("queue_directory").unwrap_or_else(|e| fatal(e)));
    let pid_file = queue_dir
        .join(cfg.get("process_id_directory").unwrap_or_else(|e| fatal(e)))
        .join("master.pid");
    if args.test {
        std::process::exit(i32::from(pfx_sys::lock::holder(&pid_file).is_some()));
    }
    let (owners, owner) = owners(&cfg);
    if let Err(e) = pfx_queue::layout::create(&queue_dir, &owners) {
        fatal(format!("create queue directories: {e}"));
    }
    if let Some(pid) = pfx_sys::lock::holder(&pid_file) {
        fatal(format!(
            "the Postfix mail system is already running (pid {pid})"
        ));
    }
    let report = (!args.foreground).then(detach);
    let _lock = match pfx_sys::lock::PidLock::acquire(&pid_file) {
        Ok(l) => l,
        Err(pfx_sys::lock::LockError::Held(pid)) => fatal(format!(
            "the Postfix mail system is already running (pid {})",
            pid.map_or_else(|| "unknown".into(), |p| p.to_string())
        )),
        Err(pfx_sys::lock::LockError::Io(e)) => {
            fatal(format!("open lock file {}: {e}", pid_file.display()))
        }
    };
    let log_opts = |stderr_name: Option<&str>| pfx_maillog::Options {
        service: "master".into(),
        stderr_name: stderr_name.map(str::to_owned),
        stderr_info: false,
        verbose: args.verbose > 0,
    };
    pfx_maillog::init(&cfg, log_opts(Some("postfix/master"))).unwrap_or_else(|e| fatal(e));
    let after_start = cfg.clone();
    info!(
        "daemon started -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(format!("start runtime: {e}")));
    let inst = supervise::Instance {
        cfg,
        services,
        queue_dir,
        owner,
        foreground: args.foreground,
    };
    runtime.block_on(async {
        let mut sup = supervise::Supervisor::new(inst);
        sup.start_all().unwrap_or_else(|e| fatal(e));
        if let Some(mut report) = report {
            let _ = report.write_all(b"ok");
            drop(report);
            close_stdio();
        }
        // From here on, messages go to the mail log only, as Postfix's master does.
        pfx_maillog::init(&after_start, log_opts(None)).unwrap_or_else(|e| fatal(e));
        sup.run().await.unwrap_or_else(|e| fatal(e));
    });
}
