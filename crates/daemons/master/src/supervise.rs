//! Spawning and supervising the services of master.cf.
//!
//! Each service has a slot: its endpoint (kept across restarts) and at most
//! one child, which serves many clients at once (maxproc bounds those
//! sessions, see `pfx_server`). A child that dies is restarted alone; one that
//! dies before it said it was ready has a startup problem and its service is
//! throttled for `service_throttle_time`, as Postfix does. Each spawn gets a
//! new generation number, so news about a replaced child is recognised and
//! ignored. SIGHUP re-reads both files and applies only the differences.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid};
use pfx_config::{Config, Service, ServiceType};
use pfx_sys::fds::{STATUS_READY, STATUS_USED};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::endpoint::{self, Endpoint};

/// How long an orderly stop waits for children before killing them.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A ready child that dies sooner than this is restarted after this delay, not at once.
const MIN_LIFETIME: Duration = Duration::from_secs(1);

type Key = (String, ServiceType);

fn key(s: &Service) -> Key {
    (s.name.clone(), s.kind)
}

/// Two entries are "the same service" when everything but their line number matches.
fn same_entry(a: &Service, b: &Service) -> bool {
    Service {
        line: 0,
        ..a.clone()
    } == Service {
        line: 0,
        ..b.clone()
    }
}

/// The endpoint can be reused when what it is bound to did not change.
fn same_endpoint(a: &Service, b: &Service) -> bool {
    a.name == b.name && a.kind == b.kind && a.private == b.private
}

#[derive(Debug)]
struct Child {
    pid: Pid,
    generation: u64,
    ready: bool,
    started: Instant,
}

#[derive(Debug)]
struct Slot {
    svc: Service,
    endpoint: Endpoint,
    child: Option<Child>,
    /// Set while a delayed (re)start is pending.
    restart_pending: bool,
    used: Arc<AtomicBool>,
    _wakeup: Option<AbortOnDrop>,
}

/// A background task that ends with its owner (a slot's wakeup timer).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
enum Event {
    Exited {
        key: Key,
        generation: u64,
        status: std::io::Result<ExitStatus>,
    },
    Status {
        key: Key,
        generation: u64,
        byte: u8,
    },
    Restart {
        key: Key,
    },
}

/// What master needs to know about the instance.
pub(crate) struct Instance {
    pub(crate) cfg: Config,
    pub(crate) services: Vec<Service>,
    pub(crate) queue_dir: PathBuf,
    /// Owner of sockets and FIFOs when running as root.
    pub(crate) owner: Option<(Uid, Gid)>,
    /// Children inherit master's stdout/stderr only in the foreground; a
    /// detached master must not hold its starter's output open through them.
    pub(crate) foreground: bool,
}

pub(crate) struct Supervisor {
    inst: Instance,
    slots: HashMap<Key, Slot>,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
}

impl Supervisor {
    pub(crate) fn new(inst: Instance) -> Self {
        let (events, inbox) = mpsc::unbounded_channel();
        Self {
            inst,
            slots: HashMap::new(),
            generation: 0,
            events,
            inbox,
        }
    }

    fn command_path(&self, svc: &Service) -> PathBuf {
        let cmd = Path::new(&svc.command);
        if cmd.is_absolute() {
            cmd.to_owned()
        } else {
            let dir = self.inst.cfg.get("daemon_directory").unwrap_or_default();
            Path::new(&dir).join(cmd)
        }
    }

    /// Creates every endpoint and starts every service. An endpoint that
    /// cannot be created is fatal at start (a typo in master.cf should not
    /// leave half a mail system running).
    pub(crate) fn start_all(&mut self) -> Result<(), String> {
        // Every endpoint first: a service that starts early (qmgr, with mail
        // waiting) finds the sockets of those that start after it.
        let mut created = Vec::new();
        for svc in self.inst.services.clone() {
            let ep = endpoint::create(&svc, &self.inst.cfg, &self.inst.queue_dir, self.inst.owner)?;
            created.push((svc, ep));
        }
        for (svc, ep) in created {
            self.install_slot(svc, ep);
        }
        Ok(())
    }

    fn add_service(&mut self, svc: Service) -> Result<(), String> {
        let ep = endpoint::create(&svc, &self.inst.cfg, &self.inst.queue_dir, self.inst.owner)?;
        self.install_slot(svc, ep);
        Ok(())
    }

    fn install_slot(&mut self, svc: Service, endpoint: Endpoint) {
        let k = key(&svc);
        let used = Arc::new(AtomicBool::new(false));
        let wakeup = self.wakeup_task(&svc, &endpoint, used.clone());
        self.slots.insert(
            k.clone(),
            Slot {
                svc,
                endpoint,
                child: None,
                restart_pending: false,
                used,
                _wakeup: wakeup,
            },
        );
        self.spawn(&k);
    }

    /// The periodic `W` trigger for services with a wakeup time.
    fn wakeup_task(
        &self,
        svc: &Service,
        ep: &Endpoint,
        used: Arc<AtomicBool>,
    ) -> Option<AbortOnDrop> {
        let w = svc.wakeup?;
        let path = ep.path.clone()?;
        let kind = svc.kind;
        let id = svc.id();
        Some(AbortOnDrop(tokio::spawn(async move {
            let period = Duration::from_secs(w.seconds.into());
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                if w.after_first_use && !used.load(Ordering::Relaxed) {
                    continue;
                }
                if let Err(e) = send_trigger(&path, kind, b"W").await {
                    warn!("wakeup {id}: {e}");
                }
            }
        })))
    }

    fn spawn(&mut self, k: &Key) {
        self.generation += 1;
        let generation = self.generation;
        let Some(slot) = self.slots.get(k) else {
            return;
        };
        let path = self.command_path(&slot.svc);
        let result = self.spawn_child(&slot.svc, &slot.endpoint, &path, generation);
        let slot = self.slots.get_mut(k).expect("slot checked above");
        match result {
            Ok((pid, child, status)) => {
                slot.child = Some(Child {
                    pid,
                    generation,
                    ready: false,
                    started: Instant::now(),
                });
                let tx = self.events.clone();
                let key = k.clone();
                tokio::spawn(async move {
                    let mut child = child;
                    let status = child.wait().await;
                    let _ = tx.send(Event::Exited {
                        key,
                        generation,
                        status,
                    });
                });
                let tx = self.events.clone();
                let key = k.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = tokio::net::UnixStream::from_std(status) else {
                        return;
                    };
                    let mut buf = [0u8; 16];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        for &byte in &buf[..n] {
                            let _ = tx.send(Event::Status {
                                key: key.clone(),
                                generation,
                                byte,
                            });
                        }
                    }
                    // Keep our end open until the child is gone: its EOF means "master died".
                    let _ = s.shutdown().await;
                });
            }
            Err(e) => {
                warn!("spawn command {}: {e}", path.display());
                self.throttle(k, &path);
            }
        }
    }

    fn spawn_child(
        &self,
        svc: &Service,
        ep: &Endpoint,
        path: &Path,
        generation: u64,
    ) -> std::io::Result<(Pid, tokio::process::Child, std::os::unix::net::UnixStream)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let maxproc = match svc.maxproc {
            Some(n) => n.to_string(),
            None => self
                .inst
                .cfg
                .get("default_process_limit")
                .unwrap_or_else(|_| "100".into()),
        };
        let mut cmd = tokio::process::Command::new(path);
        cmd.arg("-c")
            .arg(self.inst.cfg.dir())
            .arg("-n")
            .arg(&svc.name)
            .arg("-t")
            .arg(svc.kind.as_str());
        if svc.unpriv {
            cmd.arg("-u");
        }
        if svc.chroot {
            cmd.arg("-j");
        }
        cmd.args(&svc.args);
        cmd.env_clear();
        let import = self.inst.cfg.list("import_environment").unwrap_or_default();
        cmd.envs(crate::env::imported(&import, |v| std::env::var_os(v)));
        cmd.env("MAIL_CONFIG", self.inst.cfg.dir());
        cmd.env("GENERATION", generation.to_string());
        cmd.env("MAXPROC", maxproc);
        cmd.stdin(std::process::Stdio::null());
        if !self.inst.foreground {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        let status_fd = theirs.as_raw_fd();
        let listen_fd = ep.fd.as_raw_fd();
        // SAFETY: install_child_fds only uses async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || pfx_sys::fds::install_child_fds(status_fd, Some(listen_fd)));
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let pid = Pid::from_raw(child.id().map(|p| p as i32).unwrap_or(0));
        Ok((pid, child, ours))
    }

    fn throttle(&mut self, k: &Key, path: &Path) {
        let delay = self
            .inst
            .cfg
            .time("service_throttle_time")
            .unwrap_or(Duration::from_secs(60));
        warn!("{}: bad command startup -- throttling", path.display());
        self.schedule_restart(k, delay);
    }

    fn schedule_restart(&mut self, k: &Key, delay: Duration) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        slot.restart_pending = true;
        let tx = self.events.clone();
        let key = k.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Event::Restart { key });
        });
    }

    fn on_exit(&mut self, k: Key, generation: u64, status: std::io::Result<ExitStatus>) {
        let Some(slot) = self.slots.get_mut(&k) else {
            return;
        };
        let Some(child) = slot.child.take_if(|c| c.generation == generation) else {
            return; // A replaced child finishing: expected, not news.
        };
        let svc = slot.svc.clone();
        let path = self.command_path(&svc);
        match status {
            Ok(st) => {
                if let Some(sig) = st.signal() {
                    warn!(
                        "process {} pid {} killed by signal {sig}",
                        path.display(),
                        child.pid
                    );
                } else if let Some(code) = st.code().filter(|&c| c != 0) {
                    warn!(
                        "process {} pid {} exit status {code}",
                        path.display(),
                        child.pid
                    );
                }
            }
            Err(e) => warn!("process {} pid {}: wait: {e}", path.display(), child.pid),
        }
        if !child.ready {
            self.throttle(&k, &path);
        } else if child.started.elapsed() < MIN_LIFETIME {
            self.schedule_restart(&k, MIN_LIFETIME);
        } else {
            self.spawn(&k);
        }
    }

    fn on_status(&mut self, k: Key, generation: u64, byte: u8) {
        let Some(slot) = self.slots.get_mut(&k) else {
            return;
        };
        let Some(child) = slot.child.as_mut().filter(|c| c.generation == generation) else {
            return;
        };
        match byte {
            STATUS_READY => child.ready = true,
            STATUS_USED => slot.used.store(true, Ordering::Relaxed),
            other => warn!(
                "ignoring status byte {other:#04x} from child pid {}",
                child.pid
            ),
        }
    }

    fn on_restart(&mut self, k: Key) {
        let Some(slot) = self.slots.get_mut(&k) else {
            return;
        };
        if slot.restart_pending && slot.child.is_none() {
            slot.restart_pending = false;
            self.spawn(&k);
        }
    }

    fn signal_child(slot: &Slot, sig: Signal) {
        if let Some(c) = &slot.child {
            let _ = kill(c.pid, sig);
        }
    }

    /// SIGHUP: re-read main.cf and master.cf; start added services, stop
    /// removed ones, restart changed ones, and pass SIGHUP to the others so
    /// they re-read main.cf.
    fn reload(&mut self) {
        let dir = self.inst.cfg.dir().to_owned();
        let loaded = Config::load(&dir)
            .and_then(|c| c.validate().map(|()| c))
            .and_then(|c| pfx_config::read_master_cf(&dir).map(|s| (c, s)))
            .and_then(|(c, s)| c.fail_closed(&s).map(|()| (c, s)));
        let (cfg, services) = match loaded {
            Ok((c, s)) => (c, started(s)),
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        info!(
            "reload -- version {}, configuration {}",
            env!("CARGO_PKG_VERSION"),
            dir.display()
        );
        self.inst.cfg = cfg;
        let wanted: HashMap<Key, Service> = services.iter().map(|s| (key(s), s.clone())).collect();
        let gone: Vec<Key> = self
            .slots
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(slot) = self.slots.remove(&k) {
                Self::signal_child(&slot, Signal::SIGTERM);
            }
        }
        for svc in services {
            let k = key(&svc);
            match self.slots.remove(&k) {
                None => {
                    if let Err(e) = self.add_service(svc) {
                        error!("cannot start service: {e}");
                    }
                }
                Some(mut slot) if same_entry(&slot.svc, &svc) => {
                    Self::signal_child(&slot, Signal::SIGHUP);
                    slot.svc = svc;
                    self.slots.insert(k, slot);
                }
                Some(slot) => {
                    Self::signal_child(&slot, Signal::SIGTERM);
                    // Keep the socket (and the clients waiting on it) when only the process changes.
                    let reuse = same_endpoint(&slot.svc, &svc);
                    let Slot { endpoint: old, .. } = slot;
                    let endpoint = if reuse {
                        old
                    } else {
                        drop(old);
                        match endpoint::create(
                            &svc,
                            &self.inst.cfg,
                            &self.inst.queue_dir,
                            self.inst.owner,
                        ) {
                            Ok(ep) => ep,
                            Err(e) => {
                                error!("cannot restart service: {e}");
                                continue;
                            }
                        }
                    };
                    self.install_slot(svc, endpoint);
                }
            }
        }
        self.inst.services = wanted.into_values().collect();
    }

    /// Runs until SIGTERM (orderly stop: children get SIGTERM and time to
    /// finish) or SIGINT (abort: children are killed at once).
    pub(crate) async fn run(&mut self) -> Result<(), String> {
        use tokio::signal::unix::{signal, SignalKind};
        let sig = |k| signal(k).map_err(|e| e.to_string());
        let (mut hup, mut term, mut int) = (
            sig(SignalKind::hangup())?,
            sig(SignalKind::terminate())?,
            sig(SignalKind::interrupt())?,
        );
        loop {
            tokio::select! {
                Some(ev) = self.inbox.recv() => match ev {
                    Event::Exited { key, generation, status } => self.on_exit(key, generation, status),
                    Event::Status { key, generation, byte } => self.on_status(key, generation, byte),
                    Event::Restart { key } => self.on_restart(key),
                },
                _ = hup.recv() => self.reload(),
                _ = term.recv() => {
                    info!("terminating on signal 15");
                    self.stop(Signal::SIGTERM).await;
                    return Ok(());
                }
                _ = int.recv() => {
                    info!("terminating on signal 2");
                    self.stop(Signal::SIGKILL).await;
                    return Ok(());
                }
            }
        }
    }

    /// Signals every child and waits until all are gone (SIGKILL after the grace time).
    async fn stop(&mut self, sig: Signal) {
        for slot in self.slots.values() {
            Self::signal_child(slot, sig);
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        let mut killed = sig == Signal::SIGKILL;
        while self.slots.values().any(|s| s.child.is_some()) {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(Event::Exited {
                    key, generation, ..
                })) => {
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.child.take_if(|c| c.generation == generation);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) if !killed => {
                    for slot in self.slots.values() {
                        Self::signal_child(slot, Signal::SIGKILL);
                    }
                    killed = true;
                }
                Err(_) => break,
            }
        }
        self.slots.clear();
        // Every cleanup is gone: no spare queue files stay behind.
        pfx_queue::reserve::remove_spares(&pfx_queue::Queue::new(&self.inst.queue_dir));
    }
}

/// The services master starts: not the lines whose Postfix helper's job
/// postfix-rs does inside its daemons, nor those of the delivery agents it
/// does not have yet (mail for them waits in the queue).
pub(crate) fn started(services: Vec<Service>) -> Vec<Service> {
    services
        .into_iter()
        .filter(|s| {
            pfx_config::mastercf::program(&s.command) == pfx_config::mastercf::Program::Spawned
        })
        .collect()
}

/// Sends trigger bytes to a unix or fifo service, as master's wakeup and
/// Postfix's trigger clients do.
pub(crate) async fn send_trigger(
    path: &Path,
    kind: ServiceType,
    bytes: &[u8],
) -> std::io::Result<()> {
    let write = async {
        match kind {
            ServiceType::Fifo => {
                let mut tx = tokio::net::unix::pipe::OpenOptions::new().open_sender(path)?;
                tx.write_all(bytes).await
            }
            _ => {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                s.write_all(bytes).await?;
                s.shutdown().await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}
