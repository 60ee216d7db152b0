//! named as a resolver: `recursion yes` without forwarders resolves names
//! outside its zones from the root servers of its hint zone, as BIND 9.18
//! does on the same named.conf. The "Internet" is two authoritative named
//! on loopback addresses, port 53: a root zone delegating `test.` to a
//! second server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{bin, dig, dig_from, dns_status, free_port, wait_for};

const ROOT: &str = "127.0.0.201";
const TLD: &str = "127.0.0.202";

struct Named(Child);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(program: &Path, conf: &Path, log: &Path) -> Named {
    Named(
        Command::new(program)
            .args(["-g", "-c"])
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// An authoritative server for `zone` on `addr` port 53.
fn authority(dir: &Path, addr: &str, zone: &str, text: &str) -> Named {
    let file = dir.join(format!("{addr}.zone"));
    std::fs::write(&file, text).unwrap();
    let conf = dir.join(format!("{addr}.conf"));
    std::fs::write(
        &conf,
        format!(
            "options {{ listen-on port 53 {{ {addr}; }}; listen-on-v6 {{ none; }}; directory \"{}\"; recursion no; pid-file none; }};\n\
             controls {{ }};\nzone \"{zone}\" {{ type primary; file \"{}\"; }};\n",
            dir.display(),
            file.display()
        ),
    )
    .unwrap();
    let named = run(&bin("named"), &conf, &dir.join(format!("{addr}.log")));
    let probe = if zone == "." { "." } else { zone };
    assert!(
        wait_for(Duration::from_secs(10), || {
            let out = Command::new("dig")
                .args([
                    &format!("@{addr}"),
                    "+time=1",
                    "+tries=1",
                    "+norec",
                    probe,
                    "SOA",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("status: NOERROR")
        }),
        "{zone} on {addr} did not start: {}",
        std::fs::read_to_string(dir.join(format!("{addr}.log"))).unwrap_or_default()
    );
    named
}

/// A resolver's named.conf: recursion for 127.0.0.1 only, our root hints.
fn resolver_conf(dir: &Path, name: &str, port: u16) -> PathBuf {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "options {{\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{d}\";\n\
             recursion yes;\n  allow-recursion {{ 127.0.0.1; }};\n  dnssec-validation no;\n  pid-file none;\n\
             session-keyfile \"{d}/{name}-session.key\";\n}};\ncontrols {{ }};\n\
             zone \".\" {{ type hint; file \"root.hints\"; }};\n",
            d = dir.display()
        ),
    )
    .unwrap();
    conf
}

/// What a resolver answered, without TTLs (they count down) or IDs.
fn summary(out: &str) -> String {
    let status = dns_status(out);
    let flags = out
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .and_then(|l| l.strip_prefix(";; flags:"))
        .and_then(|l| l.split(';').next())
        .unwrap_or("")
        .trim()
        .to_owned();
    let answer: Vec<String> = out
        .lines()
        .skip_while(|l| *l != ";; ANSWER SECTION:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name TTL class type rdata...
            let mut g = vec![f[0]];
            g.extend(&f[2..]);
            g.join(" ")
        })
        .collect();
    format!("{status} [{flags}] {answer:?}")
}

#[test]
fn recursion_resolves_from_the_root_hints_as_bind_does() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: the root and TLD servers of this test need port 53 (root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _root = authority(
        d,
        ROOT,
        ".",
        &format!(
            "$TTL 3600\n. IN SOA a.root-servers.net. hostmaster.root-servers.net. 1 3600 600 86400 300\n\
             . IN NS a.root-servers.net.\na.root-servers.net. IN A {ROOT}\n\
             test. IN NS ns.test.\nns.test. IN A {TLD}\n"
        ),
    );
    let _tld = authority(
        d,
        TLD,
        "test",
        &format!(
            "$TTL 300\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n@ IN NS ns.test.\n\
             ns IN A {TLD}\nexample IN MX 10 mail.example\nmail.example IN A 127.0.0.25\n\
             alias.example IN CNAME mail.example\n"
        ),
    );
    std::fs::write(
        d.join("root.hints"),
        format!(". 3600000 NS a.root-servers.net.\na.root-servers.net. 3600000 A {ROOT}\n"),
    )
    .unwrap();
    let queries: &[&[&str]] = &[
        &["mail.example.test", "A"],
        &["example.test", "MX"],
        &["alias.example.test", "A"],
        &["nosuch.test", "A"],
        &["example.test", "TXT"],
        &["MAIL.Example.TEST", "A"],
    ];
    let ask = |port: u16| -> Vec<String> {
        let mut out: Vec<String> = queries
            .iter()
            .map(|q| format!("{q:?}: {}", summary(&dig(port, q))))
            .collect();
        // A client outside allow-recursion is refused.
        let o = dig_from("127.0.0.1", "127.0.0.2", port, &["mail.example.test", "A"]);
        out.push(format!("from 127.0.0.2: {}", summary(&o)));
        out
    };
    let port = free_port();
    let conf = resolver_conf(d, "ours", port);
    let _ours = run(&bin("named"), &conf, &d.join("ours.log"));
    assert!(
        wait_for(Duration::from_secs(10), || dig(
            port,
            &["mail.example.test", "A"]
        )
        .contains("127.0.0.25")),
        "our resolver did not resolve: {}\n{}",
        dig(port, &["mail.example.test", "A"]),
        std::fs::read_to_string(d.join("ours.log")).unwrap_or_default()
    );
    let ours = ask(port);
    let text = ours.join("\n");
    for want in [
        "[\"mail.example.test\", \"A\"]: NOERROR [qr rd ra] [\"mail.example.test. IN A 127.0.0.25\"]",
        "[\"example.test\", \"MX\"]: NOERROR [qr rd ra] [\"example.test. IN MX 10 mail.example.test.\"]",
        "[\"nosuch.test\", \"A\"]: NXDOMAIN [qr rd ra] []",
        "from 127.0.0.2: REFUSED",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // With validation asked for (BIND's default `auto`), named, which
    // validates nothing, refuses outside names instead of answering them
    // unvalidated, and says why.
    let strict_port = free_port();
    let strict = d.join("strict.conf");
    std::fs::write(
        &strict,
        std::fs::read_to_string(&conf)
            .unwrap()
            .replace(&format!("port {port} "), &format!("port {strict_port} "))
            .replace("dnssec-validation no;", "dnssec-validation auto;"),
    )
    .unwrap();
    let _strict = run(&bin("named"), &strict, &d.join("strict.log"));
    assert!(
        wait_for(Duration::from_secs(10), || dns_status(&dig(
            strict_port,
            &["mail.example.test", "A"]
        )) == "REFUSED"),
        "{}",
        dig(strict_port, &["mail.example.test", "A"])
    );
    assert!(std::fs::read_to_string(d.join("strict.log"))
        .unwrap_or_default()
        .contains("named does not validate: names outside the served zones are refused"));
    let bind_bin = Path::new("/usr/sbin/named");
    if !bind_bin.exists() {
        eprintln!("BIND's named is not installed: not compared (scripts/setup installs bind9)");
        return;
    }
    let bind_port = free_port();
    let conf = resolver_conf(d, "bind", bind_port);
    let _bind = run(bind_bin, &conf, &d.join("bind.log"));
    assert!(
        wait_for(Duration::from_secs(20), || dig(
            bind_port,
            &["mail.example.test", "A"]
        )
        .contains("127.0.0.25")),
        "BIND did not resolve: {}",
        std::fs::read_to_string(d.join("bind.log")).unwrap_or_default()
    );
    assert_eq!(
        ours,
        ask(bind_port),
        "postfix-rs named (left), BIND (right)"
    );
}
