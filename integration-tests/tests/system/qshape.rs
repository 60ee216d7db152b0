//! qshape side by side with Debian's (Postfix 3.7's Perl script) on the same
//! queue: queue files Debian's Postfix wrote, one postfix-rs queued, and
//! maildrop-style files spread over ages and domains, with each option.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use testkit::{bin, wait_for, Instance, Smtp};

const DEBIAN: &str = "/usr/sbin/qshape";

/// A queue file record: type, length in base-128 groups, data.
fn rec(t: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![t];
    let mut len = data.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(data);
    out
}

/// A complete maildrop-style file (dated by its mtime) `age` minutes old.
fn message(dir: &Path, id: &str, age: u64, sender: &str, rcpts: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut b = rec(b'S', sender.as_bytes());
    for r in rcpts {
        b.extend(rec(b'R', r.as_bytes()));
    }
    b.extend(rec(b'M', b""));
    b.extend(rec(b'N', b"Subject: shape"));
    b.extend(rec(b'X', b""));
    b.extend(rec(b'E', b""));
    let p = dir.join(id);
    std::fs::write(&p, b).unwrap();
    set_mode(&p, 0o700);
    let when = SystemTime::now() - Duration::from_secs(age * 60);
    std::fs::File::open(&p)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(when))
        .unwrap();
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The queue: every kind of file in the places a queue has them.
fn queue(root: &Path) -> PathBuf {
    let q = root.join("queue");
    let samples =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/lib/queue/tests/postfix-3.7");
    for e in std::fs::read_dir(&samples).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        let (dir, id) = match parts[..] {
            [how, id] if how.starts_with("maildrop") => ("maildrop".to_owned(), id),
            [_, queue, id] => (format!("{queue}/{}", &id[..1]), id),
            _ => continue,
        };
        let to = q.join(dir);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(&p, to.join(id)).unwrap();
        set_mode(&to.join(id), 0o700);
    }
    // Ages in the middle of buckets, so a second between the two runs
    // moves nothing; domains in every shape qshape files them in.
    let subs = ["a", "b", "c", "d", "e", "f"];
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("5{n:05}ABCDE")
    };
    for (i, age) in [2, 7, 15, 30, 60, 90, 200, 450, 900, 1900, 5000, 20000]
        .into_iter()
        .enumerate()
    {
        let sub = subs[i % subs.len()];
        let rcpts = [
            format!("u{i}@{sub}.mx.example.com"),
            format!("V{i}@Upper.Example.ORG"),
            format!("w@{sub}.deep.{sub}.sub.example.net"),
        ];
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let dir = if i % 3 == 0 {
            q.join("active")
        } else {
            q.join("deferred/5")
        };
        message(
            &dir,
            &id(),
            age,
            &format!("s{}@sender{}.example", i % 4, i % 2),
            &rcpts[..1 + i % 3],
        );
    }
    let odd = [
        (
            "",
            &[
                "x@trailing.dot.example.",
                "y@.leading.example",
                "z@double..dots.example",
            ][..],
        ),
        ("bounce@x", &["nodomain", "a@b@at.example"]),
        (
            "long@x",
            &["user@averyveryverylongsubdomainname.ofaverylongdomainname.example.com"],
        ),
    ];
    for (i, (sender, rcpts)) in odd.into_iter().enumerate() {
        message(&q.join("incoming"), &id(), 3 + 40 * i as u64, sender, rcpts);
    }
    // Not counted: being written, force-expired, misnamed, a pointer loop.
    message(
        &q.join("incoming"),
        "WRITING1",
        1,
        "s@x",
        &["r@not.counted"],
    );
    set_mode(&q.join("incoming/WRITING1"), 0o600);
    message(
        &q.join("deferred/5"),
        "MARKED11",
        1,
        "s@x",
        &["r@not.counted"],
    );
    set_mode(&q.join("deferred/5/MARKED11"), 0o710);
    message(&q.join("active"), "short", 1, "s@x", &["r@not.counted"]);
    q
}

fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        // Perl's own warning for each file that starts as Postfix 3.7's
        // maildrop files do (a time record, which the script predates): it
        // counts nothing of them, and neither does ours, silently.
        String::from_utf8_lossy(&out.stderr)
            .replace(program, "QSHAPE")
            .lines()
            .filter(|l| !l.starts_with("Use of uninitialized value $qt in subtraction"))
            .map(|l| format!("{l}\n"))
            .collect(),
    )
}

/// The table with rows of equal count and width in one order (qshape
/// leaves their order to Perl's hash).
fn normalized(table: &str) -> Vec<String> {
    let mut lines: Vec<String> = table.lines().map(str::to_owned).collect();
    let key = |l: &str| {
        let mut f = l.split_whitespace();
        (f.next().map(str::len), f.next().map(str::to_owned))
    };
    let mut start = 1.min(lines.len());
    while start < lines.len() {
        let k = key(&lines[start]);
        let end = (start..lines.len())
            .find(|&i| key(&lines[i]) != k)
            .unwrap_or(lines.len());
        lines[start..end].sort();
        start = end;
    }
    lines
}

#[test]
fn qshape_shows_the_queue_as_debians_qshape() {
    let m = Instance::mail("minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let reply = c.mail(
        "hadoop@ywnds.com",
        &["one@example.test", "two@example.test"],
        b"Subject: ours\r\n\r\nbody\r\n",
    );
    c.cmd("QUIT");
    let ours = reply.rsplit(' ').next().unwrap().to_owned();
    assert!(wait_for(Duration::from_secs(20), || m
        .queue_files("deferred")
        == [ours.clone()]));
    let root = tempfile::tempdir().unwrap();
    let q = queue(root.path());
    let to = q.join("deferred").join(&ours[..1]);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(
        m.queue.join("deferred").join(&ours[..1]).join(&ours),
        to.join(&ours),
    )
    .unwrap();

    let qs: Vec<String> = ["maildrop", "incoming", "active", "deferred", "hold"]
        .iter()
        .map(|d| q.join(d).display().to_string())
        .collect();
    let ours = bin("qshape").display().to_string();
    for opts in [
        &[][..],
        &["-s"],
        &["-p"],
        &["-p", "-m", "2"],
        &["-sp", "-m1"],
        &["-l"],
        &["-b", "5"],
        &["-t", "1"],
        &["-l", "-t", "2", "-b", "4"],
        &["-t", "0.5", "-b", "14"],
        &["-b", "1"],
        &["-w", "120", "-p", "-m", "1"],
        &["-w", "40"],
    ] {
        // With -s, Debian's counts each of Postfix 3.7's maildrop files as
        // mail from MAILER-DAEMON of 1970 (it reads no sender from them):
        // maildrop/ is left out there.
        let sender = opts.iter().any(|o| o.starts_with("-s"));
        let args: Vec<&str> = opts
            .iter()
            .copied()
            .chain(qs.iter().skip(usize::from(sender)).map(String::as_str))
            .collect();
        let (mine, debian) = (run(&ours, &args, &[]), run(DEBIAN, &args, &[]));
        assert_eq!((mine.0, &mine.2), (debian.0, &debian.2), "qshape {opts:?}");
        assert_eq!(
            normalized(&mine.1),
            normalized(&debian.1),
            "qshape {opts:?}"
        );
        assert!(mine.1.lines().count() > 8, "{}", mine.1);
    }

    // Relative names are in main.cf's queue_directory (default: incoming
    // and active).
    let conf = root.path().join("etc");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("main.cf"),
        format!("queue_directory = {}\n", q.display()),
    )
    .unwrap();
    std::fs::write(conf.join("master.cf"), "").unwrap();
    let conf_arg = conf.display().to_string();
    for args in [
        &["-c", &conf_arg][..],
        &["-c", &conf_arg, "-s", "deferred", "hold"],
    ] {
        let (mine, debian) = (run(&ours, args, &[]), run(DEBIAN, args, &[]));
        assert_eq!(mine.0, debian.0, "{args:?}: {}", mine.2);
        assert_eq!(normalized(&mine.1), normalized(&debian.1), "{args:?}");
    }
    let env = [("MAIL_CONFIG", conf.as_path())];
    let (mine, debian) = (
        run(&ours, &["deferred"], &env),
        run(DEBIAN, &["deferred"], &env),
    );
    assert_eq!(normalized(&mine.1), normalized(&debian.1), "MAIL_CONFIG");
    // Options end at the first queue name: a later -s names a queue.
    let args = [qs[3].as_str(), "-s"];
    let (mine, debian) = (run(&ours, &args, &env), run(DEBIAN, &args, &env));
    assert_eq!(
        (mine.0, normalized(&mine.1)),
        (debian.0, normalized(&debian.1)),
        "{args:?}"
    );
    assert!(mine.2.starts_with("Can't stat -s: "), "{}", mine.2);

    // What goes wrong, and how it is said.
    let dollar = root.path().join("dollar");
    std::fs::create_dir_all(&dollar).unwrap();
    std::fs::write(dollar.join("main.cf"), "queue_directory = $foo/q\n").unwrap();
    std::fs::write(dollar.join("master.cf"), "").unwrap();
    let gone = root.path().join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(gone.join("main.cf"), "queue_directory = /nonexistent/q\n").unwrap();
    std::fs::write(gone.join("master.cf"), "").unwrap();
    let (dollar, gone) = (dollar.display().to_string(), gone.display().to_string());
    for args in [&["-h"][..], &["-z"], &["-c", &dollar], &["-c", &gone]] {
        let (mine, debian) = (run(&ours, args, &[]), run(DEBIAN, args, &[]));
        let last = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("postconf: "))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (mine.0, last(&mine.2)),
            (debian.0, last(&debian.2)),
            "qshape {args:?}"
        );
        assert_eq!(mine.1, debian.1, "qshape {args:?}");
    }
    let args = ["-c", "/nonexistent"];
    let (mine, debian) = (run(&ours, &args, &[]), run(DEBIAN, &args, &[]));
    assert_eq!(mine.0, debian.0, "{}", mine.2);
    assert!(mine.2.ends_with("QSHAPE: postconf failed\n"), "{}", mine.2);
    let args = ["/nonexistent/deferred"];
    let (mine, debian) = (run(&ours, &args, &[]), run(DEBIAN, &args, &[]));
    assert_eq!((mine.0, &mine.1), (debian.0, &debian.1));
    assert!(
        mine.2
            .starts_with("Can't stat /nonexistent/deferred: No such file or directory"),
        "{}",
        mine.2
    );
}
