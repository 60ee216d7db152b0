//! Lookup tables in Postfix's own formats: what Debian's postmap and
//! postalias build, postfix-rs reads, and the other way round, for hash,
//! btree, lmdb and cdb; Debian's aliases.db resolves in delivery.

use std::path::Path;
use std::process::{Command, Output};

use testkit::{bin, Instance, Smtp};

const TYPES: [&str; 4] = ["hash", "btree", "lmdb", "cdb"];

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup installs it)", program.display()))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn debian(program: &str) -> std::path::PathBuf {
    Path::new("/usr/sbin").join(program)
}

#[test]
fn each_system_reads_the_tables_the_other_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("main.cf"),
        "compatibility_level = 3.6\nmyhostname = mail.ywnds.com\n",
    )
    .unwrap();
    let aliases = "root: openstack\nAdmin: openstack, hadoop\npostmaster: root\n";
    let table = "foo@example.com OK\nexample.org smtp:[127.0.0.1]:2526\nDup first\ndup second\n";
    let conf = d.display().to_string();
    for ty in TYPES {
        for (who, postalias, postmap, reader_alias, reader_map) in [
            (
                "ours",
                bin("postalias"),
                bin("postmap"),
                debian("postalias"),
                debian("postmap"),
            ),
            (
                "Debian's",
                debian("postalias"),
                debian("postmap"),
                bin("postalias"),
                bin("postmap"),
            ),
        ] {
            let a = d.join(format!("aliases-{ty}-{who}"));
            let t = d.join(format!("table-{ty}-{who}"));
            std::fs::write(&a, aliases).unwrap();
            std::fs::write(&t, table).unwrap();
            let a = format!("{ty}:{}", a.display());
            let t = format!("{ty}:{}", t.display());
            assert!(
                run(&postalias, &["-c", &conf, &a]).status.success(),
                "{who} {a}"
            );
            let built = run(&postmap, &["-c", &conf, &t]);
            assert!(built.status.success(), "{who} {t}");
            // The first of two duplicate keys wins, with Postfix's warning.
            assert!(
                String::from_utf8_lossy(&built.stderr).contains("duplicate entry: \"dup\""),
                "{who} {t}: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            let q = |prog: &Path, key: &str, table: &str| {
                stdout(&run(prog, &["-c", &conf, "-q", key, table]))
            };
            assert_eq!(
                q(&reader_alias, "admin", &a),
                "openstack, hadoop\n",
                "{who} {a}"
            );
            assert_eq!(q(&reader_alias, "ROOT", &a), "openstack\n", "{who} {a}");
            assert_eq!(
                q(&reader_map, "example.org", &t),
                "smtp:[127.0.0.1]:2526\n",
                "{who} {t}"
            );
            assert_eq!(q(&reader_map, "dup", &t), "first\n", "{who} {t}");
            let missing = run(&reader_map, &["-c", &conf, "-q", "nobody", &t]);
            assert_eq!(missing.status.code(), Some(1));
            // Both list the same records (sendmail's "@" and the YP records
            // included) in the same order.
            let list = |prog: &Path, table: &str| stdout(&run(prog, &["-c", &conf, "-s", table]));
            if ty != "cdb" {
                // (Postfix 3.7 cannot list a cdb table.)
                assert_eq!(list(&reader_map, &t), list(&postmap, &t), "{who} {t}");
                let listed = list(&reader_alias, &a);
                assert!(
                    listed.contains("@:\t@\n")
                        && listed.contains("YP_MASTER_NAME:\tmail.ywnds.com\n"),
                    "{listed}"
                );
            }
        }
    }
}

#[test]
fn debians_aliases_db_resolves_in_delivery() {
    let m = Instance::mail("");
    // Rebuild the instance's aliases.db with Debian's postalias.
    std::fs::write(
        m.etc.join("aliases"),
        "postmaster: root\nroot: openstack\nadmin: openstack, hadoop\n",
    )
    .unwrap();
    let out = run(
        &debian("postalias"),
        &[&format!("hash:{}", m.etc.join("aliases").display())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "a@example.org",
        &["admin@ywnds.com"],
        b"Subject: x\r\n\r\nhi",
    );
    m.wait_maildir("openstack", 1);
    m.wait_maildir("hadoop", 1);

    // Rebuilt while running (in place, as Postfix does): seen at once.
    std::fs::write(
        m.etc.join("aliases"),
        "postmaster: root\nroot: openstack\nadmin: hadoop\n",
    )
    .unwrap();
    assert!(run(
        &bin("postalias"),
        &[&format!("hash:{}", m.etc.join("aliases").display())]
    )
    .status
    .success());
    c.queued(
        "a@example.org",
        &["admin@ywnds.com"],
        b"Subject: y\r\n\r\nhi",
    );
    m.wait_maildir("hadoop", 2);
    // The alias no longer leads to openstack.
    m.exactly("openstack", 1);
}
