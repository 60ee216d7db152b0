//! A fleet of hosts for the tests: each host a network namespace of its
//! own with one address (10.77.0.N/24) on a shared switch, a bridge in a
//! namespace of its own, joined by veth pairs. The test makes them all
//! and the fleet removes them when dropped; nothing in them has a route
//! anywhere else, so no packet leaves the namespaces the test made.
//! Links can be taken down and brought back, and given loss and delay
//! (`tc netem`), to play the faults of a real network.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// One host: its namespace and address.
pub struct Host {
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
    /// The switch's end of the host's link.
    port: String,
}

/// The hosts and their switch.
pub struct Fleet {
    pub hosts: Vec<Host>,
    switch: String,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fleet {
    /// Whether a fleet can be made here (root, iproute2); says why not.
    pub fn available() -> bool {
        let ok = nix::unistd::Uid::effective().is_root()
            && Command::new("ip").arg("-V").output().is_ok();
        if !ok {
            eprintln!("skipped: a fleet of network namespaces needs root and iproute2");
        }
        ok
    }

    /// Hosts named `names`, addressed 10.77.0.1, .2, ... in that order.
    pub fn new(names: &[&str]) -> Self {
        // Unique per process and fleet, short enough for namespace names.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("pfx{}-{n}", std::process::id());
        let switch = format!("{tag}-sw");
        let mut fleet = Self {
            hosts: Vec::new(),
            switch: switch.clone(),
        };
        ip_ok(&["netns", "add", &switch]);
        ip_ok(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let netns = format!("{tag}-{name}");
            let port = format!("p{i}");
            let addr = Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).expect("a small fleet"));
            ip_ok(&["netns", "add", &netns]);
            fleet.hosts.push(Host {
                name: (*name).to_owned(),
                netns: netns.clone(),
                addr,
                port: port.clone(),
            });
            ip_ok(&[
                "link", "add", "eth0", "netns", &netns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ]);
            ip_ok(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &switch, "link", "set", &port, "up"]);
            ip_ok(&["-n", &netns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip_ok(&["-n", &netns, "link", "set", "eth0", "up"]);
        }
        fleet
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Cuts `name`'s link (packets to and from it are lost), or brings
    /// it back.
    pub fn link(&self, name: &str, up: bool) {
        let port = &self.host(name).port;
        ip_ok(&[
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            if up { "up" } else { "down" },
        ]);
    }

    /// `tc netem` on `name`'s link (e.g. `loss 5% delay 20ms`); empty
    /// takes it away. False when the kernel has no netem (the sch_netem
    /// module): then the link stays as it is.
    pub fn netem(&self, name: &str, spec: &str) -> bool {
        let h = self.host(name);
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &h.netns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ])
            .output();
        if spec.is_empty() {
            return true;
        }
        let out = Command::new("ip")
            .args([
                "netns", "exec", &h.netns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
            ])
            .args(spec.split_whitespace())
            .output()
            .expect("tc (iproute2)");
        if String::from_utf8_lossy(&out.stderr).contains("qdisc kind is unknown") {
            return false;
        }
        assert!(out.status.success(), "tc netem {spec}: {out:?}");
        true
    }

    /// Runs `program args` inside `name`'s namespace.
    pub fn exec(&self, name: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.host(name).netns, program])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.netns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}
