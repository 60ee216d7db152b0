//! named's configuration: BIND's named.conf ([`conf`]), its address match
//! lists ([`acl`]) and zone files ([`zone`]), read and checked without
//! serving them. named serves what this reads; named-checkconf,
//! named-checkzone and `postfix check` check the same files with it, and
//! the fuzz targets drive its parsers.

pub mod acl;
pub mod conf;
pub mod controls;
mod directives;
mod dnssec;
pub mod logging;
pub mod remote;
pub mod zone;

/// Loads every zone of `conf` as named would, printing BIND's messages;
/// returns whether all loaded (`named-checkconf -z`, `postfix check`).
pub fn check_zones(conf: &conf::NamedConf, out: &mut dyn std::io::Write) -> bool {
    let mut ok = true;
    for z in &conf.zones {
        let label = zone::Zone::label(&z.name);
        match zone::load(&z.name, &z.file, &conf.options.directory) {
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
