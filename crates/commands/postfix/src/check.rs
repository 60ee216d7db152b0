//! `postfix check`: everything that can be validated without starting anything.
//!
//! main.cf syntax and typed values, that no setting asks for what postfix-rs
//! does not implement (the fail-closed check), master.cf syntax, that every service's
//! program exists and is executable, and the queue directory tree's owners
//! and modes. Problems that would stop the system are errors (exit 1);
//! others are warnings.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pfx_config::Config;
use pfx_queue::layout::Owners;
use tracing::{error, warn};

/// How problems in named's files count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dns {
    /// `postfix check`: a broken named.conf or zone is an error.
    Strict,
    /// start and reload: a warning only. DNS trouble must not keep mail from
    /// flowing, and named keeps serving what it had (as BIND does).
    Lenient,
}

/// Runs every check; exits 1 after reporting if any error was found.
pub(crate) fn run_or_die(dir: &Path, cfg: &Config, dns: Dns) {
    let errors = run(dir, cfg, dns);
    if errors > 0 {
        pfx_maillog::fatal(format!("{errors} configuration error(s) found; see above"));
    }
}

fn run(dir: &Path, cfg: &Config, dns: Dns) -> usize {
    let mut errors = 0;
    let services = match pfx_config::read_master_cf(dir) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    let master_cf = dir.join("master.cf");
    let master_values: Vec<String> = services
        .iter()
        .flat_map(|s| s.overrides())
        .map(|(_, v)| v)
        .collect();
    for e in cfg.unused(&master_values) {
        warn!(
            "{}, line {}: unused parameter: {}={}",
            cfg.main_cf().display(),
            e.line,
            e.name,
            e.value
        );
    }
    for r in cfg.refusals(&services, &master_cf) {
        error!("{r}");
        errors += 1;
    }
    let daemon_dir = cfg.get("daemon_directory").unwrap_or_default();
    for svc in &services {
        for (name, value) in svc.overrides() {
            if cfg.param(&name).is_none() && !cfg.is_set(&name) {
                warn!(
                    "{}, line {}: unused parameter: {name}={value}",
                    master_cf.display(),
                    svc.line
                );
            }
        }
        if pfx_config::mastercf::program(&svc.command) != pfx_config::mastercf::Program::Spawned {
            continue;
        }
        let program = Path::new(&daemon_dir).join(&svc.command);
        let executable =
            std::fs::metadata(&program).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !matches!(executable, Ok(true)) {
            error!(
                "{}, line {}: service {}: program {} is missing or not executable",
                master_cf.display(),
                svc.line,
                svc.id(),
                program.display()
            );
            errors += 1;
        }
    }
    if services.iter().any(|s| s.command == "named") {
        let (problems, notes) = check_named(cfg);
        for n in &notes {
            warn!("{n}");
        }
        for p in &problems {
            match dns {
                Dns::Strict => error!("{p}"),
                Dns::Lenient => warn!("{p}"),
            }
        }
        if dns == Dns::Strict {
            errors += problems.len();
        }
    }
    let queue_dir = Path::new(&cfg.get("queue_directory").unwrap_or_default()).to_owned();
    if queue_dir.is_dir() {
        if let Some(owners) = expected_owners(cfg) {
            for problem in pfx_queue::layout::check(&queue_dir, &owners) {
                warn!("{problem}");
            }
        }
    }
    errors
}

/// named-checkconf -z on `$named_config_file`: its problems and its
/// warnings (options accepted but not acted on), one per line.
fn check_named(cfg: &Config) -> (Vec<String>, Vec<String>) {
    let path = cfg.get("named_config_file").unwrap_or_default();
    let conf = match pfx_named_conf::conf::load(Path::new(&path)) {
        Ok(c) => c,
        Err(e) => return (vec![e.to_string()], vec![]),
    };
    let mut out = Vec::new();
    let ok = pfx_named_conf::check_zones(&conf, &mut out);
    let mut problems = Vec::new();
    if !ok {
        problems.extend(
            String::from_utf8_lossy(&out)
                .lines()
                .filter(|l| !l.contains(": loaded serial "))
                .map(str::to_owned),
        );
    }
    (problems, conf.warnings)
}

/// The owners master would give the queue tree, when they can be resolved.
fn expected_owners(cfg: &Config) -> Option<Owners> {
    if !pfx_sys::users::is_root() {
        let me = pfx_sys::users::current();
        return Some(Owners::single(me.uid, me.gid));
    }
    let owner = match pfx_sys::users::user(&cfg.get("mail_owner").ok()?) {
        Ok(o) => o,
        Err(e) => {
            warn!("mail_owner: {e}");
            return None;
        }
    };
    let setgid = match pfx_sys::users::group(&cfg.get("setgid_group").ok()?) {
        Ok(g) => g,
        Err(e) => {
            warn!("setgid_group: {e}");
            return None;
        }
    };
    Some(Owners {
        root: (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0)),
        mail_owner: (owner.uid, owner.gid),
        setgid_group: setgid,
    })
}
