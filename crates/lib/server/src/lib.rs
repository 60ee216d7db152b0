//! The daemon skeleton: what every postfix-rs service does before and after its own work.
//!
//! A daemon's `main` is one call to [`run`] with its program name and a
//! service function. The skeleton, in order: reads its arguments as master
//! passes them (`-c DIR -n SERVICE -t TYPE [-u] [-o name=value]... [-v]`),
//! reads main.cf and applies the `-o` overrides, opens the mail log, takes the
//! endpoint master created (fd 6) and the status socket (fd 5), drops to
//! `$mail_owner` when started as root with `-u` (master.cf `unpriv = y`),
//! tells master it is ready, and runs the service until SIGTERM or until master
//! goes away. SIGHUP re-reads main.cf and publishes it through
//! [`Context::config`]. See `pfx_sys::fds` for the descriptor contract.

mod serve;

pub use serve::{
    serve_channels, serve_deliveries, serve_deliveries_on_threads, serve_stream, serve_triggers,
    Stream,
};

use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pfx_config::Config;
use pfx_sys::fds::{LISTEN_FD, STATUS_FD, STATUS_READY, STATUS_USED};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a service may take to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "A postfix-rs daemon; normally started by master(8) from master.cf")]
struct Args {
    /// Configuration directory (default: $MAIL_CONFIG or /etc/postfix).
    #[arg(short = 'c')]
    config_dir: Option<PathBuf>,
    /// The master.cf service name.
    #[arg(short = 'n')]
    service: Option<String>,
    /// The master.cf service type (inet, unix, fifo, unix-dgram, pass).
    #[arg(short = 't', default_value = "unix")]
    kind: String,
    /// Run as $mail_owner (master passes this for `unpriv = y`).
    #[arg(short = 'u')]
    unprivileged: bool,
    /// Confine the process to $queue_directory (master passes this for
    /// `chroot = y`).
    #[arg(short = 'j')]
    jail: bool,
    /// Parameter override, as in master.cf.
    #[arg(short = 'o', value_name = "NAME=VALUE")]
    overrides: Vec<String>,
    /// Verbose logging.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Accepted for compatibility (Postfix's debugger flag); ignored.
    #[arg(short = 'D')]
    debug: bool,
    /// The service's own arguments from master.cf (pipe's `flags=... argv=...`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// The endpoint master created for this service.
#[derive(Debug)]
pub enum Endpoint {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
    /// A FIFO opened read-write by master (so it never reads end-of-file).
    Fifo(OwnedFd),
    UnixDgram(tokio::net::UnixDatagram),
}

/// What a service gets from the skeleton.
#[derive(Clone, Debug)]
pub struct Context {
    /// Program name (`smtpd`), used in the log tag.
    pub program: &'static str,
    /// master.cf service name (`smtp`, `127.0.0.1:2525`, `cleanup`...).
    pub service: String,
    /// The current configuration; a new value arrives after each reload.
    pub config: watch::Receiver<Arc<Config>>,
    /// At most this many sessions at once (master.cf maxproc); 0 is unlimited.
    pub max_sessions: usize,
    /// The arguments master.cf gives the service after its options.
    pub args: Vec<String>,
    /// The configuration the daemon started with (what `run_prepared`'s
    /// preparation was built from), whatever reloads came since.
    pub initial_config: Arc<Config>,
    shutdown: watch::Receiver<bool>,
    used: Arc<AtomicBool>,
    status: Arc<tokio::sync::Mutex<Option<tokio::net::unix::OwnedWriteHalf>>>,
}

impl Context {
    /// The configuration as it is now.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Resolves when the daemon has been told to stop.
    pub async fn shutdown(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Tells master, once, that the service has been used (arms `wakeup ...?`).
    pub async fn mark_used(&self) {
        if self.used.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(s) = self.status.lock().await.as_mut() {
            let _ = s.write_all(&[STATUS_USED]).await;
        }
    }
}

fn load_config(args: &Args, program: &str) -> Result<Config, pfx_config::Error> {
    let dir = pfx_config::config_dir(args.config_dir.as_deref());
    let mut cfg = Config::load(&dir)?;
    for o in &args.overrides {
        if let Some((k, v)) = o.split_once('=') {
            cfg.set_override(k.trim(), v.trim());
        }
    }
    if let Some(s) = &args.service {
        cfg.set_override("service_name", s);
    }
    cfg.set_override("process_name", program);
    cfg.validate()?;
    // With the overrides in place: what a chroot would cut off.
    cfg.preload_files();
    Ok(cfg)
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// The endpoint as master passed it, before the runtime exists.
enum RawEndpoint {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
    Fifo(OwnedFd),
    UnixDgram(std::os::unix::net::UnixDatagram),
}

fn take_endpoint(kind: &str) -> std::io::Result<Option<RawEndpoint>> {
    if !fd_is_open(LISTEN_FD) {
        return Ok(None);
    }
    // SAFETY: master hands us LISTEN_FD and nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(Some(match kind {
        "inet" => RawEndpoint::Tcp(fd.into()),
        "fifo" => RawEndpoint::Fifo(fd),
        "unix-dgram" => RawEndpoint::UnixDgram(fd.into()),
        _ => RawEndpoint::Unix(fd.into()),
    }))
}

impl RawEndpoint {
    /// Registers the endpoint with the runtime (must run inside it).
    fn into_tokio(self) -> std::io::Result<Endpoint> {
        Ok(match self {
            Self::Tcp(l) => {
                l.set_nonblocking(true)?;
                Endpoint::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            Self::Unix(l) => {
                l.set_nonblocking(true)?;
                Endpoint::Unix(tokio::net::UnixListener::from_std(l)?)
            }
            Self::Fifo(fd) => Endpoint::Fifo(fd),
            Self::UnixDgram(s) => {
                s.set_nonblocking(true)?;
                Endpoint::UnixDgram(tokio::net::UnixDatagram::from_std(s)?)
            }
        })
    }
}

fn take_status() -> Option<std::os::unix::net::UnixStream> {
    if !fd_is_open(STATUS_FD) {
        return None;
    }
    // SAFETY: master hands us STATUS_FD and nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Set by [`restart_on_reload`].
static RESTART_ON_RELOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For a daemon whose preparation reads what only root may read (smtpd's
/// and smtp's TLS private keys): on reload it stops, and master starts a new
/// process that prepares again as root, as for a confined daemon and as
/// Postfix's daemons do. Others re-read main.cf in place.
pub fn restart_on_reload() {
    RESTART_ON_RELOAD.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Which tokio runtime a daemon runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread: lowest latency per request, nothing may block.
    One,
    /// A worker per core: for daemons that block (file work as another user).
    Many,
}

/// Runs a daemon on a multi-threaded runtime; see [`run_with`].
pub fn run<F, Fut>(program: &'static str, service: F) -> !
where
    F: FnOnce(Context, Endpoint) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    run_with(program, Threads::Many, service)
}

/// Runs a daemon: sets everything up, then `service(ctx, endpoint)` until told
/// to stop. Never returns; the exit status is 0 after an orderly stop, 1 after
/// a fatal error (logged).
pub fn run_with<F, Fut>(program: &'static str, threads: Threads, service: F) -> !
where
    F: FnOnce(Context, Endpoint) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    run_prepared(
        program,
        threads,
        |_| Ok(()),
        |ctx, endpoint, ()| service(ctx, endpoint),
    )
}

/// As [`run_with`], with `prepare` run on the configuration before privileges
/// are dropped and before a chroot (named binds port 53 there, smtpd opens
/// its tables); its result goes to the service.
pub fn run_prepared<P, S, F, Fut>(
    program: &'static str,
    threads: Threads,
    prepare: P,
    service: F,
) -> !
where
    P: FnOnce(&Config) -> Result<S, pfx_config::BuildError>,
    F: FnOnce(Context, Endpoint, S) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    pfx_maillog::init_stderr(program);
    let args = Args::parse();
    let cfg = load_config(&args, program).unwrap_or_else(|e| pfx_maillog::fatal(e));
    if let Err(e) = pfx_maillog::init(
        &cfg,
        pfx_maillog::Options {
            service: program.to_owned(),
            stderr_name: None,
            stderr_info: false,
            verbose: args.verbose > 0,
        },
    ) {
        pfx_maillog::fatal(e);
    }
    // Fail closed, in the mail log: a setting this daemon cannot honour
    // (main.cf edited since the last check) stops it, as postfix check would.
    if let Err(e) = cfg.fail_closed(&[]) {
        pfx_maillog::fatal(e);
    }
    let endpoint = match take_endpoint(&args.kind) {
        Ok(Some(e)) => e,
        Ok(None) => pfx_maillog::fatal(format!(
            "no service endpoint on descriptor {LISTEN_FD}: {program} is started by master(8)"
        )),
        Err(e) => pfx_maillog::fatal(format!("service endpoint: {e}")),
    };
    let status = take_status();
    let mut cfg = cfg;
    // Confined, the queue directory is the root: what prepare builds (the
    // paths of the queue and its sockets) must already say so.
    let jail = args.jail.then(|| {
        // Tables named `proxy:` are asked of proxymap from inside the jail.
        pfx_maps::jail();
        let dir = cfg
            .get("queue_directory")
            .unwrap_or_else(|e| pfx_maillog::fatal(e));
        cfg.set_override("queue_directory", "/");
        dir
    });
    let prepared = prepare(&cfg).unwrap_or_else(|e| pfx_maillog::fatal(e));
    // Names are looked up before the jail, which has no password file.
    let owner = (args.unprivileged && pfx_sys::users::is_root()).then(|| {
        let owner = cfg
            .get("mail_owner")
            .unwrap_or_else(|e| pfx_maillog::fatal(e));
        let ids = pfx_sys::users::user(&owner)
            .unwrap_or_else(|e| pfx_maillog::fatal(format!("mail_owner: {e}")));
        if ids.uid.is_root() {
            pfx_maillog::fatal("mail_owner must not be root");
        }
        ids
    });
    if let Some(dir) = jail {
        pfx_sys::users::chroot(std::path::Path::new(&dir))
            .unwrap_or_else(|e| pfx_maillog::fatal(e));
    }
    if let Some(ids) = owner {
        if let Err(e) = pfx_sys::users::drop_privileges(ids) {
            pfx_maillog::fatal(e);
        }
    }
    let max_sessions = std::env::var("MAXPROC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::Many => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .unwrap_or_else(|e| pfx_maillog::fatal(format!("start runtime: {e}")));
    let code = runtime.block_on(serve(
        program,
        args,
        cfg,
        endpoint,
        status,
        max_sessions,
        |ctx, endpoint| service(ctx, endpoint, prepared),
    ));
    if let Err(e) = code {
        pfx_maillog::fatal(e);
    }
    std::process::exit(0)
}

async fn serve<F, Fut>(
    program: &'static str,
    args: Args,
    cfg: Config,
    endpoint: RawEndpoint,
    status: Option<std::os::unix::net::UnixStream>,
    max_sessions: usize,
    service: F,
) -> Result<(), String>
where
    F: FnOnce(Context, Endpoint) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    use tokio::signal::unix::{signal, SignalKind};
    let rest = args.rest.clone();
    let endpoint = endpoint
        .into_tokio()
        .map_err(|e| format!("service endpoint: {e}"))?;
    let initial_config = Arc::new(cfg);
    let (cfg_tx, cfg_rx) = watch::channel(initial_config.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let mut writer = None;
    if let Some(s) = status.and_then(|s| tokio::net::UnixStream::from_std(s).ok()) {
        let (mut r, w) = s.into_split();
        writer = Some(w);
        // End of file on the status socket: master is gone, and so are we.
        let stop = stop_tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = stop.send(true);
        });
    }
    if args.jail {
        // A table rebuilt under a confined daemon: it cannot reopen it, so
        // it stops and master starts a new process, as Postfix's do.
        let stop = stop_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if pfx_maps::restart_requested() {
                    let _ = stop.send(true);
                    break;
                }
            }
        });
    }
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let stop = stop_tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = stop.send(true); break; }
                _ = hup.recv() => {
                    if args.jail || RESTART_ON_RELOAD.load(std::sync::atomic::Ordering::Relaxed) {
                        // Confined, it cannot read main.cf again: it stops,
                        // and master starts a new process with the new
                        // configuration, as Postfix's chrooted daemons do.
                        let _ = stop.send(true);
                        break;
                    }
                    match load_config(&args, program).and_then(|c| c.fail_closed(&[]).map(|_| c)) {
                        Ok(c) => {
                            info!("reload: configuration {}", c.dir().display());
                            let _ = cfg_tx.send(Arc::new(c));
                        }
                        Err(e) => warn!("reload failed, keeping the previous configuration: {e}"),
                    }
                }
            }
        }
    });
    let status = Arc::new(tokio::sync::Mutex::new(writer));
    if let Some(w) = status.lock().await.as_mut() {
        let _ = w.write_all(&[STATUS_READY]).await;
    }
    let service_name = cfg_rx.borrow().raw("service_name").unwrap_or_default();
    let ctx = Context {
        program,
        service: service_name,
        config: cfg_rx,
        max_sessions,
        args: rest,
        initial_config,
        shutdown: stop_rx.clone(),
        used: Arc::new(AtomicBool::new(false)),
        status,
    };
    let work = service(ctx, endpoint);
    tokio::pin!(work);
    let mut stop_rx = stop_rx;
    tokio::select! {
        r = &mut work => r,
        _ = stop_rx.wait_for(|s| *s) => {
            // Let the service finish what it is doing, within reason.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut work).await;
            Ok(())
        }
    }
}

/// Something built from the configuration (parsed lists, opened tables) and
/// rebuilt only when a reload brings a new configuration.
pub struct PerConfig<T> {
    current: std::sync::Mutex<Option<Built<T>>>,
}

/// A value and the configuration it was built from.
type Built<T> = (Arc<Config>, Arc<T>);

impl<T> Default for PerConfig<T> {
    fn default() -> Self {
        Self {
            current: std::sync::Mutex::new(None),
        }
    }
}

impl<T> PerConfig<T> {
    /// Starts with `value`, built before the daemon was confined to the
    /// queue directory (see [`run_prepared`]), for the configuration it
    /// started with.
    pub fn seeded(value: T, built_from: Arc<Config>) -> Self {
        Self {
            current: std::sync::Mutex::new(Some((built_from, Arc::new(value)))),
        }
    }

    /// The value for `cfg`, built with `build` the first time this configuration is seen.
    pub fn get(
        &self,
        cfg: Arc<Config>,
        build: impl FnOnce(Arc<Config>) -> Result<T, pfx_config::BuildError>,
    ) -> Result<Arc<T>, pfx_config::BuildError> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, v)) = cur.as_ref() {
            if Arc::ptr_eq(c, &cfg) {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(build(cfg.clone())?);
        *cur = Some((cfg, v.clone()));
        Ok(v)
    }
}
