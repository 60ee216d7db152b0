//! postfix(1): the administrator's control command for a postfix-rs instance.
//!
//! `start`, `start-fg`, `stop`, `abort`, `reload`, `status`, `check` and
//! `flush` (postqueue -f), with
//! `-c DIR` (or `$MAIL_CONFIG`) naming the instance. Messages are Postfix's,
//! on stderr and in the mail log as `postfix/postfix-script: ...`; every
//! failure exits non-zero with the reason.

mod check;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pfx_config::Config;
use pfx_maillog::fatal;
use tracing::{info, warn};

const USAGE: &str = "postfix [-c config_dir] [-Dv] command";

#[derive(Parser, Debug)]
#[command(
    name = "postfix",
    version,
    about = "Control a postfix-rs mail system",
    after_help = "Commands:\n  start      start the mail system (master detaches once every service is up)\n  start-fg   start the mail system with master in the foreground\n  stop       stop the mail system in an orderly fashion\n  abort      stop the mail system at once (services are killed)\n  reload     re-read main.cf and master.cf; only changed services restart\n  status     say whether the mail system is running, and master's PID\n  check      validate main.cf, master.cf, programs and queue directories\n  flush      deliver the deferred mail now (postqueue -f)",
    // -c keeps the help text this command has always printed.
    mut_arg(pfx_cli::CONFIG_DIR, |a| a.help("Configuration directory (default: $MAIL_CONFIG or /etc/postfix)"))
)]
struct Args {
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Accepted for compatibility (Postfix's debugger flag).
    #[arg(short = 'D')]
    debug: bool,
    /// Verbose logging.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// start, start-fg, stop, abort, reload, status, check or flush.
    command: String,
}

struct Instance {
    dir: PathBuf,
    cfg: Config,
    pid_file: PathBuf,
}

impl Instance {
    fn master_pid(&self) -> Option<Pid> {
        pfx_sys::lock::holder(&self.pid_file).map(Pid::from_raw)
    }

    fn master_path(&self) -> PathBuf {
        Path::new(
            &self
                .cfg
                .get("daemon_directory")
                .unwrap_or_else(|e| fatal(e)),
        )
        .join("master")
    }

    fn running_or_die(&self) -> Pid {
        self.master_pid()
            .unwrap_or_else(|| fatal("the Postfix mail system is not running"))
    }

    fn not_running_or_die(&self) {
        if self.master_pid().is_some() {
            fatal("the Postfix mail system is already running");
        }
    }

    /// Waits until master has released the instance lock.
    fn wait_stopped(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.master_pid().is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.master_pid().is_none()
    }
}

fn main() {
    let args: Args = pfx_cli::parse_args("postfix", USAGE);
    let dir = args.config.dir();
    let cfg = pfx_cli::load_config(&dir);
    // Messages from here on are postfix-script's, on stderr and in the mail log.
    let opts = pfx_maillog::Options {
        service: "postfix-script".into(),
        stderr_name: Some("postfix/postfix-script".into()),
        stderr_info: true,
        verbose: args.verbose > 0,
    };
    if pfx_maillog::init(&cfg, opts).is_err() {
        // The log is not writable by this user: keep messages on stderr.
        pfx_maillog::init_stderr("postfix/postfix-script");
    }
    let queue_dir = PathBuf::from(cfg.get("queue_directory").unwrap_or_else(|e| fatal(e)));
    let pid_dir = cfg.get("process_id_directory").unwrap_or_else(|e| fatal(e));
    let inst = Instance {
        pid_file: queue_dir.join(pid_dir).join("master.pid"),
        dir,
        cfg,
    };
    match args.command.as_str() {
        "start" => {
            check::run_or_die(&inst.dir, &inst.cfg, check::Dns::Lenient);
            inst.not_running_or_die();
            info!("starting the Postfix mail system");
            let status = std::process::Command::new(inst.master_path())
                .arg("-c")
                .arg(&inst.dir)
                .args(verbose_flag(args.verbose))
                .status()
                .unwrap_or_else(|e| fatal(format!("{}: {e}", inst.master_path().display())));
            if !status.success() {
                fatal("mail system startup failed");
            }
        }
        "start-fg" => {
            check::run_or_die(&inst.dir, &inst.cfg, check::Dns::Lenient);
            inst.not_running_or_die();
            info!("starting the Postfix mail system");
            let err = std::process::Command::new(inst.master_path())
                .arg("-c")
                .arg(&inst.dir)
                .arg("-d")
                .args(verbose_flag(args.verbose))
                .exec();
            fatal(format!("{}: {err}", inst.master_path().display()));
        }
        "stop" => {
            let pid = inst.running_or_die();
            info!("stopping the Postfix mail system");
            let _ = kill(pid, Signal::SIGTERM);
            if !inst.wait_stopped(Duration::from_secs(20)) {
                warn!("stopping the Postfix mail system with force");
                let _ = kill(pid, Signal::SIGKILL);
                inst.wait_stopped(Duration::from_secs(5));
            }
        }
        "abort" => {
            let pid = inst.running_or_die();
            info!("aborting mail system");
            let _ = kill(pid, Signal::SIGINT);
            inst.wait_stopped(Duration::from_secs(10));
        }
        "reload" => {
            check::run_or_die(&inst.dir, &inst.cfg, check::Dns::Lenient);
            let pid = inst.running_or_die();
            info!("refreshing the Postfix mail system");
            let _ = kill(pid, Signal::SIGHUP);
        }
        "status" => match inst.master_pid() {
            Some(pid) => info!("the Postfix mail system is running: PID: {pid}"),
            None => {
                info!("the Postfix mail system is not running");
                std::process::exit(1);
            }
        },
        "check" => check::run_or_die(&inst.dir, &inst.cfg, check::Dns::Strict),
        // As postfix-script: postqueue -f does it (and says when the mail
        // system is down).
        "flush" => {
            let commands = inst
                .cfg
                .get("command_directory")
                .unwrap_or_else(|e| fatal(e));
            let err = std::process::Command::new(Path::new(&commands).join("postqueue"))
                .arg("-c")
                .arg(&inst.dir)
                .arg("-f")
                .exec();
            fatal(format!("execute {commands}/postqueue: {err}"));
        }
        other => {
            eprintln!("postfix: fatal: unknown command: '{other}'. Usage: {USAGE}");
            std::process::exit(1);
        }
    }
}

fn verbose_flag(n: u8) -> Option<&'static str> {
    (n > 0).then_some("-v")
}
