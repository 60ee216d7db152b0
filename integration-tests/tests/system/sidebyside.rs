//! postfix-rs and Debian's Postfix run on the same main.cf and tables,
//! each relaying to its own fake next hop, for tests that send both the
//! same sessions and compare what comes out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{Instance, Smtp};

/// Both systems on the same main.cf (`TABLES` the directory of `tables`,
/// `SINK` the port of each one's own fake next hop): postfix-rs, Debian's
/// Postfix, and the two next hops.
pub(crate) struct SideBySide {
    pub(crate) tables: tempfile::TempDir,
    pub(crate) m: testkit::MailInstance,
    pub(crate) pf: testkit::debian::Postfix,
    pub(crate) ours_mx: FakeMx,
    pub(crate) theirs_mx: FakeMx,
}

/// [`side_by_side_with`] without lines of postfix-rs's own.
pub(crate) fn side_by_side(main_cf: &str, tables: &[(&str, &str)]) -> Option<SideBySide> {
    side_by_side_with(main_cf, "", tables)
}

/// Both systems started on `main_cf`, postfix-rs with `ours` after it (its
/// own parameters); `None` when Debian's Postfix cannot run here (it needs
/// root).
pub(crate) fn side_by_side_with(
    main_cf: &str,
    ours: &str,
    tables: &[(&str, &str)],
) -> Option<SideBySide> {
    if !(nix::unistd::Uid::effective().is_root() && Path::new("/usr/sbin/postfix").exists()) {
        eprintln!("skipped: the side-by-side run with Debian's Postfix needs root");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("pfx-sidebyside-")
        .tempdir()
        .unwrap();
    // Delivery agents running as users look inside.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in tables {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let ours_mx = FakeMx::start("127.0.0.1", Script::default());
    let theirs_mx = FakeMx::start("127.0.0.1", Script::default());
    let cf = |port: u16| {
        main_cf
            .replace("TABLES", &dir.path().display().to_string())
            .replace("SINK", &port.to_string())
    };
    let m = Instance::mail(&format!("{}{ours}", cf(ours_mx.port)));
    m.add_smtp();
    m.start();
    let pf = testkit::debian::Postfix::new(None, &cf(theirs_mx.port));
    pf.start();
    Some(SideBySide {
        tables: dir,
        m,
        pf,
        ours_mx,
        theirs_mx,
    })
}

/// A session from `source` (outside `mynetworks` when not 127.0.0.1).
pub(crate) fn converse_from(source: &str, port: u16, session: &[&str]) -> Vec<String> {
    let (mut c, greeting) = Smtp::connect_from(source, port);
    let mut out = vec![greeting];
    let mut data = false;
    for step in session {
        let reply = if data {
            data = false;
            c.send(step.as_bytes());
            c.send(b".\r\n");
            c.reply()
        } else {
            data = *step == "DATA";
            c.cmd(step)
        };
        // Queue IDs differ.
        let reply = match reply.find("queued as ") {
            Some(i) => reply[..i + 10].to_owned(),
            None => reply,
        };
        out.push(reply);
    }
    out
}

/// Every reply of `session`, from `source`, the same from both systems.
pub(crate) fn same_replies(both: &SideBySide, source: &str, session: &[&str]) {
    let theirs = converse_from(source, both.pf.port, session);
    let ours = converse_from(source, both.m.port, session);
    for (step, (a, b)) in std::iter::once(&"(greeting)")
        .chain(session.iter())
        .zip(theirs.iter().zip(&ours))
    {
        if step.starts_with("EHLO") || *step == "(greeting)" {
            continue;
        }
        assert_eq!(
            a,
            b,
            "{step}\nPostfix:    {a}\npostfix-rs: {b}\npostfix-rs log:\n{}",
            both.m.log_text()
        );
    }
}
