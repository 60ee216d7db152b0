//! postfix-rs named: an authoritative DNS server for the mail system's own
//! zones, reading BIND's named.conf and zone files and answering with
//! hickory-server. The `named` program runs under master (see main.rs) or on
//! its own with BIND's flags; `named-checkconf` and `named-checkzone` check
//! the same files without serving them.

pub mod acl;
pub mod conf;
pub mod serve;
mod udp;
pub mod zone;

/// Loads every zone of `conf` as named would, printing BIND's messages;
/// returns whether all loaded (`named-checkconf -z`, `postfix check`).
pub fn check_zones(conf: &conf::NamedConf, out: &mut dyn std::io::Write) -> bool {
    let mut ok = true;
    for z in &conf.zones {
        let label = zone::Zone::label(&z.name);
        match zone::load(&z.name, &z.file) {
            Ok(zone) => {
                for w in &zone.warnings {
                    let _ = writeln!(out, "{w}");
                }
                let _ = writeln!(out, "{label}: loaded serial {}", zone.serial);
            }
            Err(e) => {
                let _ = writeln!(out, "{e}");
                let _ = writeln!(out, "{label}: not loaded due to errors.");
                ok = false;
            }
        }
    }
    ok
}
