//! What a delivery costs the disk: on ext4 with a journal (Debian's
//! default), a Maildir delivery is made durable, link included, by one
//! journal commit (docs/RELIABILITY.md, step 4).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{wait_for, Instance, Smtp};

/// A new ext4 file system with a journal in a sparse image, loop-mounted
/// over `at`; unmounted and deleted when dropped.
struct JournaledFs {
    at: PathBuf,
    image: PathBuf,
}

impl JournaledFs {
    fn mount(at: &Path, image: PathBuf) -> Self {
        let run = |program: &str, args: &[&str]| {
            let out = Command::new(program).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let img = image.to_str().unwrap();
        run("mkfs.ext4", &["-q", "-F", img]);
        run("mount", &["-o", "loop", img, at.to_str().unwrap()]);
        Self {
            at: at.to_owned(),
            image,
        }
    }

    /// Journal commits so far (jbd2's count for the loop device).
    fn commits(&self) -> u64 {
        let out = Command::new("findmnt")
            .args(["-no", "SOURCE"])
            .arg(&self.at)
            .output()
            .unwrap();
        let source = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let dev = Path::new(&source).file_name().unwrap().to_string_lossy();
        let info = std::fs::read_to_string(format!("/proc/fs/jbd2/{dev}-8/info")).unwrap();
        info.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for JournaledFs {
    fn drop(&mut self) {
        // Lazy: the instance's local may still hold the directory open.
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn a_maildir_delivery_on_a_journaled_file_system_is_one_commit() {
    if !nix::unistd::Uid::effective().is_root() {
        return eprintln!("skipped: mounting a file system needs root");
    }
    let m = Instance::mail("");
    let home = m.home.join("openstack");
    let owner = std::fs::metadata(&home).unwrap();
    let fs = JournaledFs::mount(&home, m.root.path().join("home.ext4"));
    use std::os::unix::fs::MetadataExt;
    nix::unistd::chown(&home, Some(owner.uid().into()), Some(owner.gid().into())).unwrap();
    m.start();
    // One at a time, so that no two deliveries share a commit by chance.
    const N: u64 = 30;
    let before = fs.commits();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    for i in 0..N {
        c.queued(
            "sender@example.org",
            &["openstack@ywnds.com"],
            format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes(),
        );
        let want = i as usize + 1;
        assert!(
            wait_for(Duration::from_secs(10), || m.maildir("openstack").len()
                == want),
            "message {i} not delivered:\n{}",
            m.log_text()
        );
    }
    let commits = fs.commits() - before;
    eprintln!("{commits} journal commits for {N} deliveries");
    // A file sync and a directory sync per delivery would be 2N; allow a
    // few of the file system's own five-second commits.
    assert!(
        commits <= N + N / 4,
        "{commits} journal commits for {N} deliveries"
    );
    c.cmd("QUIT");
}
