//! Who owns what: started as root, daemons run as mail_owner and the queue
//! has Postfix's owners and modes; started as an ordinary user, everything
//! is that user's.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::{bin, wait_for, Instance};

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    let md = std::fs::metadata(p).unwrap();
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

fn ids(user: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("user {user} must exist (.ci/run creates it)"));
    (u.uid.as_raw(), u.gid.as_raw())
}

#[test]
fn as_root_queue_has_postfix_owners_and_daemons_run_as_mail_owner() {
    if !nix::unistd::Uid::effective().is_root() {
        // Covered by the ordinary-user test below when not root.
        return;
    }
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\nrooted unix - n n - - fixture-service\n",
        "",
    );
    inst.postfix("start");
    let [alpha, rooted] = inst.wait_children(&["alpha", "rooted"])[..] else {
        unreachable!()
    };
    let (uid, _) = ids("postfix");
    let postdrop = nix::unistd::Group::from_name("postdrop")
        .unwrap()
        .expect("group postdrop")
        .gid
        .as_raw();
    let q = &inst.queue;
    assert_eq!(owner_and_mode(q), (0, 0, 0o755));
    assert_eq!(owner_and_mode(&q.join("pid")), (0, 0, 0o755));
    assert_eq!(owner_and_mode(&q.join("maildrop")), (uid, postdrop, 0o730));
    assert_eq!(owner_and_mode(&q.join("public")), (uid, postdrop, 0o710));
    // postfix:root, as Postfix's postfix-files (and Debian) make them.
    for d in [
        "incoming", "active", "deferred", "hold", "corrupt", "private", "bounce", "defer",
    ] {
        assert_eq!(owner_and_mode(&q.join(d)), (uid, 0, 0o700), "{d}");
    }
    let uid_of = |pid: i32| {
        testkit::processes()
            .iter()
            .find(|p| p.pid == pid)
            .unwrap()
            .uid
    };
    // The daemon gives up root itself (`-u`), just after it starts: the
    // process can be seen before that.
    assert!(
        wait_for(Duration::from_secs(5), || uid_of(alpha) == uid),
        "unpriv=y service runs as mail_owner (uid {})",
        uid_of(alpha)
    );
    assert_eq!(uid_of(rooted), 0, "unpriv=n service keeps root");
    assert_eq!(uid_of(inst.master_pid().unwrap()), 0);
    assert_eq!(
        owner_and_mode(&q.join("private/alpha")).0,
        uid,
        "socket belongs to mail_owner"
    );
}

#[test]
fn as_root_unknown_mail_owner_is_fatal() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\n",
        "mail_owner = no-such-user-here\n",
    );
    let out = inst.run("postfix", &["start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("parameter mail_owner: unknown user name value: no-such-user-here"),
        "{err}"
    );
}

/// Runs a command as `nobody` when we are root, else as ourselves.
fn as_ordinary_user(program: &Path, args: &[&str]) -> std::process::Output {
    if nix::unistd::Uid::effective().is_root() {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program)
            .args(args)
            .output()
            .expect("setpriv (util-linux)")
    } else {
        Command::new(program).args(args).output().unwrap()
    }
}

#[test]
fn as_ordinary_user_everything_runs_as_that_user() {
    let inst = Instance::new("alpha unix - - n - - fixture-service\n", "");
    // Copies, not links: the user must be able to run them wherever the build tree is.
    for name in ["master", "fixture-service", "postfix"] {
        let dst = inst.libexec.join(name);
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(bin(name), &dst).unwrap();
    }
    let user = if nix::unistd::Uid::effective().is_root() {
        ids("nobody")
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    if nix::unistd::Uid::effective().is_root() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.0, user.1))
            .arg(inst.root.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let postfix = inst.libexec.join("postfix");
    let etc = inst.etc.to_str().unwrap();
    let out = as_ordinary_user(&postfix, &["-c", etc, "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let [alpha] = inst.wait_children(&["alpha"])[..] else {
        unreachable!()
    };
    let procs = testkit::processes();
    let uid_of = |pid: i32| procs.iter().find(|p| p.pid == pid).unwrap().uid;
    assert_eq!(uid_of(inst.master_pid().unwrap()), user.0);
    assert_eq!(uid_of(alpha), user.0);
    for d in ["", "pid", "maildrop", "incoming", "private", "public"] {
        let (uid, gid, _) = owner_and_mode(&inst.queue.join(d));
        assert_eq!((uid, gid), user, "{d}");
    }
    assert_eq!(owner_and_mode(&inst.queue.join("maildrop")).2, 0o730);
    let out = as_ordinary_user(&postfix, &["-c", etc, "stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_for(Duration::from_secs(5), || inst
        .master_pid()
        .is_none()));
}
