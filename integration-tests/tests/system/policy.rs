//! Access policy (issue 21): the smtpd restriction lists, access tables of
//! every type, restriction classes and actions, checked reply by reply and
//! log line by log line against Debian's Postfix running the same main.cf,
//! master.cf services and tables side by side.

use std::path::Path;
use std::time::Duration;

use testkit::{free_port, wait_for, Instance, Smtp};

/// One case: a service with these `-o` overrides (values may name the
/// main.cf parameters of [`MAIN_CF`]), and a session from 127.0.0.2.
struct Case {
    name: &'static str,
    overrides: &'static [&'static str],
    session: &'static [&'static str],
    /// The replies that matter, as Postfix gives them (checked without
    /// Debian's Postfix too): (step index, reply).
    expect: &'static [(usize, &'static str)],
}

/// main.cf lines both systems get; `TABLES` is replaced with the table
/// directory.
const MAIN_CF: &str = "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\nsmtpd_peername_lookup = no\n\
myorigin = $myhostname\nmydestination = $myhostname, localhost, $mydomain\n\
smtpd_restriction_classes = strict, friendly\nstrict = reject_unauth_destination, reject\nfriendly = permit\n\
smtpd_reject_footer = \\c (see https://help.ywnds.com/$client_address)\n\
c_client = check_client_access cidr:TABLES/clients.cidr, permit\n\
c_helo = check_helo_access texthash:TABLES/helo, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n\
c_sender = check_sender_access hash:TABLES/senders, check_sender_access regexp:TABLES/senders.regexp, reject_non_fqdn_sender\n\
c_rcpt = check_recipient_access pcre:TABLES/rcpt.pcre, check_recipient_access inline:{ hadoop@ywnds.com=REJECT, { admin@ywnds.com = 450 4.2.2 mailbox full } }, reject_non_fqdn_recipient, permit_mynetworks, reject_unauth_destination\n\
c_warn = warn_if_reject reject_non_fqdn_helo_hostname, warn_if_reject check_sender_access texthash:TABLES/actions, check_sender_access texthash:TABLES/actions\n\
c_defer = defer_if_permit, permit\n\
c_dir = defer_if_reject, reject\n\
c_data = reject_unauth_pipelining, reject_multi_recipient_bounce\n\
c_names = reject_unknown_reverse_client_hostname\n\
c_down = check_policy_service inet:127.0.0.1:9\n\
c_down_dunno = check_policy_service { inet:127.0.0.1:9, default_action=DUNNO, try_limit=1 }, permit\n\
c_etrn = check_etrn_access texthash:TABLES/etrn\n\
c_users = texthash:TABLES/users\n";

/// The tables, as (file, text); `hash:` ones are built by Debian's postmap
/// (Berkeley DB, which postfix-rs reads as it is).
const TABLES: &[(&str, &str)] = &[
    (
        "clients.cidr",
        "127.0.0.3/32 REJECT go away\n127.0.0.4 DEFER_IF_PERMIT come back later\n127.0.0.0/8 DUNNO\n",
    ),
    (
        "helo",
        "bad.example DEFER\nworse.example 554 5.7.0 no thanks\nfriendly.example friendly\n",
    ),
    (
        "senders",
        "spam@bad.example 550 5.7.0 no spam\nbad.example REJECT\n<> REJECT no bounces here\nstrict.example strict\nlist@x.example permit_mynetworks, reject\n",
    ),
    (
        "senders.regexp",
        "/^eve@(.*)$/ REJECT eve from $1 is not welcome\n",
    ),
    (
        "rcpt.pcre",
        "/^openstack\\+.*@/i REJECT no extensions\n/^nobody@/ OK\n",
    ),
    ("users", "openstack x\nhadoop x\n"),
    ("etrn", "ywnds.com REJECT not here\n"),
    (
        "actions",
        "hold@x.example HOLD\ndrop@x.example DISCARD kept away\nwarn@x.example WARN looked at\nbad@x.example REJECT\nredirect@x.example REDIRECT openstack@ywnds.com\n",
    ),
];

const CASES: &[Case] = &[
    Case {
        name: "unlisted sender and recipient, unknown client name",
        overrides: &[
            "local_recipient_maps=$c_users",
            "smtpd_reject_unlisted_sender=yes",
            "smtpd_client_restrictions=$c_names",
        ],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<ghost@ywnds.com>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<openstack@ywnds.com>",
            "RCPT TO:<ghost@ywnds.com>",
            "RCPT TO:<hadoop@ywnds.com>",
        ],
        expect: &[
            (
                2,
                "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.2] (see https://help.ywnds.com/127.0.0.2)",
            ),
        ],
    },
    Case {
        name: "unlisted sender and recipient",
        overrides: &[
            "local_recipient_maps=$c_users",
            "smtpd_reject_unlisted_sender=yes",
        ],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<ghost@ywnds.com>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<openstack@ywnds.com>",
            "RCPT TO:<ghost@ywnds.com>",
            "RCPT TO:<hadoop@ywnds.com>",
        ],
        expect: &[
            (
                2,
                "550 5.1.0 <ghost@ywnds.com>: Sender address rejected: User unknown in local recipient table (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                5,
                "550 5.1.1 <ghost@ywnds.com>: Recipient address rejected: User unknown in local recipient table (see https://help.ywnds.com/127.0.0.2)",
            ),
            (6, "250 2.1.5 Ok"),
        ],
    },
    Case {
        name: "a policy server that does not answer",
        overrides: &["smtpd_recipient_restrictions=$c_down"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[(
            2,
            "451 4.3.5 <openstack@ywnds.com>: Recipient address rejected: Server configuration problem (see https://help.ywnds.com/127.0.0.2)",
        )],
    },
    Case {
        name: "a policy server that does not answer, default_action=DUNNO",
        overrides: &["smtpd_recipient_restrictions=$c_down_dunno"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[(2, "250 2.1.5 Ok")],
    },
    Case {
        name: "ETRN access",
        overrides: &["smtpd_etrn_restrictions=$c_etrn"],
        session: &["EHLO client.example", "ETRN ywnds.com"],
        expect: &[(
            1,
            "554 5.7.1 <ywnds.com>: Etrn command rejected: not here (see https://help.ywnds.com/127.0.0.2)",
        )],
    },
    Case {
        name: "client access (cidr) and the footer",
        overrides: &["smtpd_client_restrictions=$c_client"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[(2, "250 2.1.5 Ok")],
    },
    Case {
        name: "helo access, classes, invalid and non-FQDN names",
        overrides: &["smtpd_helo_restrictions=$c_helo"],
        session: &[
            "EHLO bad.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "EHLO worse.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "EHLO bad!name",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "EHLO [1.2.3]",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "EHLO short",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "EHLO friendly.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[
            (
                2,
                "450 4.7.1 <bad.example>: Helo command rejected: Access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                5,
                "554 5.7.0 <worse.example>: Helo command rejected: no thanks (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                8,
                "501 5.5.2 <bad!name>: Helo command rejected: Invalid name (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                11,
                "501 5.5.2 <[1.2.3]>: Helo command rejected: invalid ip address (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                14,
                "504 5.5.2 <short>: Helo command rejected: need fully-qualified hostname (see https://help.ywnds.com/127.0.0.2)",
            ),
            (17, "250 2.1.5 Ok"),
        ],
    },
    Case {
        name: "sender access (hash, regexp), null sender, parent domains, classes",
        overrides: &["smtpd_sender_restrictions=$c_sender"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<spam@bad.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<ham@sub.bad.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<eve@elsewhere.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<x@strict.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<list@x.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<user>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[
            (
                2,
                "550 5.7.0 <spam@bad.example>: Sender address rejected: no spam (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                5,
                "554 5.7.1 <ham@sub.bad.example>: Sender address rejected: Access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                8,
                "554 5.7.1 <>: Sender address rejected: no bounces here (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                11,
                "554 5.7.1 <eve@elsewhere.example>: Sender address rejected: eve from elsewhere.example is not welcome (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                14,
                "554 5.7.1 <x@strict.example>: Sender address rejected: Access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                17,
                "554 5.7.1 <list@x.example>: Sender address rejected: Access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                20,
                "504 5.5.2 <user>: Sender address rejected: need fully-qualified address (see https://help.ywnds.com/127.0.0.2)",
            ),
        ],
    },
    Case {
        name: "recipient access (pcre, inline), relay, bare postmaster",
        overrides: &["smtpd_recipient_restrictions=$c_rcpt"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack+x@ywnds.com>",
            "RCPT TO:<hadoop@ywnds.com>",
            "RCPT TO:<admin@ywnds.com>",
            "RCPT TO:<someone@elsewhere.example>",
            "RCPT TO:<nobody@elsewhere.example>",
            "RCPT TO:<bob>",
            "RCPT TO:<postmaster>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[
            (
                2,
                "554 5.7.1 <openstack+x@ywnds.com>: Recipient address rejected: no extensions (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                3,
                "554 5.7.1 <hadoop@ywnds.com>: Recipient address rejected: Access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                4,
                "450 4.2.2 <admin@ywnds.com>: Recipient address rejected: mailbox full (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                5,
                "454 4.7.1 <someone@elsewhere.example>: Relay access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                6,
                "454 4.7.1 <nobody@elsewhere.example>: Relay access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                7,
                "504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address (see https://help.ywnds.com/127.0.0.2)",
            ),
            (8, "250 2.1.5 Ok"),
            (9, "250 2.1.5 Ok"),
        ],
    },
    Case {
        name: "warn_if_reject, WARN, HOLD, DISCARD, REDIRECT",
        overrides: &["smtpd_sender_restrictions=$c_warn"],
        session: &[
            "EHLO short",
            "MAIL FROM:<bad@x.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<warn@x.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "RSET",
            "MAIL FROM:<hold@x.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "DATA",
            ".",
            "MAIL FROM:<drop@x.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "DATA",
            ".",
            "MAIL FROM:<redirect@x.example>",
            "RCPT TO:<hadoop@ywnds.com>",
        ],
        expect: &[
            (
                2,
                "554 5.7.1 <bad@x.example>: Sender address rejected: Access denied (see https://help.ywnds.com/127.0.0.2)",
            ),
            (5, "250 2.1.5 Ok"),
            (10, "250 2.0.0 Ok: queued as ID"),
            (14, "250 2.0.0 Ok: queued as ID"),
            (16, "250 2.1.5 Ok"),
        ],
    },
    Case {
        name: "defer_if_permit, defer_if_reject",
        overrides: &[
            "smtpd_client_restrictions=$c_defer",
            "smtpd_helo_restrictions=$c_dir",
        ],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        // Both deferrals are pending, so the list stops before `reject`
        // and the one kept for a permit applies.
        expect: &[(
            2,
            "450 4.7.0 <unknown[127.0.0.2]>: Client host rejected: defer_if_permit requested (see https://help.ywnds.com/127.0.0.2)",
        )],
    },
    Case {
        name: "defer_if_permit alone",
        overrides: &["smtpd_client_restrictions=$c_defer"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[(
            2,
            "450 4.7.0 <unknown[127.0.0.2]>: Client host rejected: defer_if_permit requested (see https://help.ywnds.com/127.0.0.2)",
        )],
    },
    Case {
        name: "data restrictions: multi-recipient bounce, unauthorized pipelining",
        overrides: &["smtpd_data_restrictions=$c_data"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<>",
            "RCPT TO:<openstack@ywnds.com>",
            "RCPT TO:<hadoop@ywnds.com>",
            "DATA",
            "RSET",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
            "DATA\r\nSubject: early\r\n\r\ntoo soon\r\n.",
        ],
        expect: &[
            (
                4,
                "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce (see https://help.ywnds.com/127.0.0.2)",
            ),
            (
                8,
                "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining (see https://help.ywnds.com/127.0.0.2)",
            ),
        ],
    },
    Case {
        name: "plaintext session, plain reject and defer",
        overrides: &["smtpd_helo_restrictions=reject_plaintext_session"],
        session: &[
            "EHLO client.example",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<openstack@ywnds.com>",
        ],
        expect: &[(
            2,
            "450 4.7.1 Session encryption is required (see https://help.ywnds.com/127.0.0.2)",
        )],
    },
];

/// `n` free ports, none of them in `taken` nor twice: free_port() may give
/// a port again until something listens on it.
fn distinct_ports(n: usize, taken: &[u16]) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    while out.len() < n {
        let p = free_port();
        if !taken.contains(&p) && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Writes the tables into `dir` (readable by every daemon) and builds the
/// hash: one with Debian's postmap.
fn write_tables(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in TABLES {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = std::process::Command::new("/usr/sbin/postmap")
        .arg(format!("hash:{}", dir.join("senders").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A master.cf line per case, on its own port; returns the ports.
fn services(ports: &[u16]) -> String {
    let mut out = String::new();
    for (case, port) in CASES.iter().zip(ports) {
        out.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
        for o in case.overrides {
            out.push_str(&format!("  -o {o}\n"));
        }
    }
    out
}

/// Runs a case's session from 127.0.0.2; the replies, with queue IDs
/// made `ID`.
fn converse(port: u16, case: &Case) -> Vec<String> {
    let (mut s, _) = Smtp::connect_from("127.0.0.2", port);
    case.session
        .iter()
        .map(|step| {
            let r = s.cmd(step);
            let r = match r.rsplit_once("queued as ") {
                Some((head, _)) => format!("{head}queued as ID"),
                None => r,
            };
            // One line per reply (the footer's continuation lines joined),
            // without DSN and CHUNKING, which postfix-rs does not offer yet
            // (issue 22).
            let code = r.get(..3).unwrap_or("").to_owned();
            let lines: Vec<&str> = r
                .lines()
                .map(|l| l.get(4..).unwrap_or(""))
                .filter(|l| *l != "DSN" && *l != "CHUNKING")
                .collect();
            format!("{code} {}", lines.join(" | "))
        })
        .collect()
}

/// What the restrictions log, in order, without time, host and process.
fn policy_lines(log: &str) -> Vec<String> {
    let marks = [
        ": reject: ",
        ": reject_warning: ",
        ": hold: ",
        ": discard: ",
        ": warn: ",
        ": redirect: ",
        "problem talking to server 127.0.0.1:",
    ];
    log.lines()
        .filter(|l| marks.iter().any(|m| l.contains(m)))
        .filter_map(|l| l.split_once("]: ").map(|(_, rest)| rest))
        // Queue IDs differ from system to system.
        .map(|l| match l.split_once(": ") {
            Some((id, rest)) if id != "NOQUEUE" => format!("ID: {rest}"),
            _ => l.to_owned(),
        })
        .collect()
}

#[test]
fn restrictions_access_tables_and_actions_answer_as_debian_postfix() {
    let tables = tempfile::Builder::new()
        .prefix("pfx-tables-")
        .tempdir()
        .unwrap();
    let main_cf = MAIN_CF.replace("TABLES", &tables.path().display().to_string());
    let have_postfix =
        nix::unistd::Uid::effective().is_root() && Path::new("/usr/sbin/postmap").exists();
    if !have_postfix {
        eprintln!("skipped: Debian's Postfix (postmap for the hash: table, and the side-by-side run) needs root");
        return;
    }
    write_tables(tables.path());

    let m = Instance::mail(&main_cf);
    let pf = testkit::debian::Postfix::new(None, &main_cf);
    let ports = distinct_ports(CASES.len(), &[m.port, pf.port]);
    let pf_ports = distinct_ports(CASES.len(), &[&ports[..], &[m.port, pf.port]].concat());
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str(&services(&ports));
    m.write_master_cf(&master);
    m.start();

    let mut master = std::fs::read_to_string(pf.etc.join("master.cf")).unwrap();
    master.push_str(&services(&pf_ports));
    std::fs::write(pf.etc.join("master.cf"), master).unwrap();
    pf.start();

    for (i, case) in CASES.iter().enumerate() {
        let ours = converse(ports[i], case);
        let theirs = converse(pf_ports[i], case);
        for (step, (a, b)) in case.session.iter().zip(theirs.iter().zip(&ours)) {
            assert_eq!(
                a,
                b,
                "{}: {step}\nPostfix:    {a}\npostfix-rs: {b}\npostfix-rs log:\n{}\nPostfix log:\n{}",
                case.name,
                m.log_text(),
                pf.log_text()
            );
        }
        for (step, want) in case.expect {
            assert_eq!(ours[*step], *want, "{}: step {step}", case.name);
        }
    }
    // The log says the same, in the same order.
    wait_for(Duration::from_secs(10), || {
        policy_lines(&pf.log_text()).len() == policy_lines(&m.log_text()).len()
    });
    let (theirs, ours) = (policy_lines(&pf.log_text()), policy_lines(&m.log_text()));
    for (a, b) in theirs.iter().zip(&ours) {
        assert_eq!(
            a, b,
            "log lines differ:\nPostfix:    {a}\npostfix-rs: {b}\nPostfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}"
        );
    }
    assert_eq!(
        theirs.len(),
        ours.len(),
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}"
    );
    assert!(ours.len() >= 20, "{ours:#?}");
    for action in ["reject_warning", "hold", "discard", "warn", "redirect"] {
        let mark = format!(": {action}: ");
        assert!(
            ours.iter().any(|l| l.contains(&mark)),
            "no {action} in {ours:#?}"
        );
    }
    // HOLD put the message in hold/, DISCARD kept it out of the queue,
    // and each side accepted both.
    assert!(wait_for(Duration::from_secs(10), || m
        .queue_files("hold")
        .len()
        == 1));
    pf.stop();
}

/// Zones the DNS tests serve with the instance's own named: block lists
/// (`bl.test` with a TXT reason, `dbl.test` for domains), an allow list
/// and a domain with an MX host.
const DNS_ZONES: &[(&str, &str)] = &[
    (
        "bl.test",
        "2.0.0.127 IN A 127.0.0.2\n2.0.0.127 IN TXT \"Listed for testing\"\n4.0.0.127 IN A 127.0.0.4\n",
    ),
    ("dbl.test", "spam.example IN A 127.0.1.2\n"),
    ("wl.test", "3.0.0.127 IN A 127.0.2.1\n"),
    (
        "other.test",
        "@ IN MX 10 mx.other.test.\nmx IN A 127.0.0.9\nwww IN A 127.0.0.8\n",
    ),
];

/// Adds named with [`DNS_ZONES`] to `m`; its smtpd asks it (dns_servers).
fn add_dns_zones(m: &Instance) -> u16 {
    let port = m.add_named("", "");
    let zones = m.etc.join("zones");
    let mut conf = std::fs::read_to_string(m.etc.join("named.conf")).unwrap();
    for (zone, records) in DNS_ZONES {
        std::fs::write(
            zones.join(format!("{zone}.zone")),
            format!(
                "$TTL 1H\n@ IN SOA ns.{zone}. root.{zone}. 1 3H 15M 1W 1D\n\tIN NS ns.{zone}.\nns IN A 127.0.0.1\n{records}"
            ),
        )
        .unwrap();
        conf.push_str(&format!(
            "zone \"{zone}\" IN {{ type master; file \"{zone}.zone\"; }};\n"
        ));
    }
    std::fs::write(m.etc.join("named.conf"), conf).unwrap();
    port
}

/// One attempt: client address, HELO, sender, recipient, reply to RCPT.
type Attempt = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[test]
fn dns_block_and_allow_lists_and_domain_checks_ask_our_own_named() {
    let rbl_replies = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rbl_replies.path(),
        "bl.test=127.0.0.4 450 4.7.1 $rbl_what is on $rbl_domain, try later\n",
    )
    .unwrap();
    let mx_table = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(mx_table.path(), "mx.other.test REJECT bad mail exchanger\n").unwrap();
    let main_cf = format!(
        "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\n\
         rbl_reply_maps = texthash:{}\n\
         d_rbl = reject_rbl_client bl.test=127.0.0.4, reject_rbl_client bl.test=127.0.0.[2..3], reject_rbl_client down.test\n\
         d_rhs = reject_rhsbl_sender dbl.test\n\
         d_wl = permit_dnswl_client wl.test, reject\n\
         d_dom = reject_unknown_sender_domain, reject_unknown_helo_hostname, check_sender_mx_access texthash:{}\n",
        rbl_replies.path().display(),
        mx_table.path().display()
    );
    let m = Instance::mail(&main_cf);
    let named_port = add_dns_zones(&m);
    m.add_main_cf(&format!("dns_servers = 127.0.0.1:{named_port}\n"));
    let cases: &[(&str, &[Attempt])] = &[
        (
            "smtpd_client_restrictions=$d_rbl",
            &[
                // (client, HELO, sender, recipient, reply to RCPT)
                (
                    "127.0.0.2",
                    "client.example",
                    "a@b.example",
                    "openstack@ywnds.com",
                    "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; Listed for testing",
                ),
                (
                    "127.0.0.4",
                    "client.example",
                    "a@b.example",
                    "openstack@ywnds.com",
                    "450 4.7.1 127.0.0.4 is on bl.test, try later",
                ),
                ("127.0.0.3", "client.example", "a@b.example", "openstack@ywnds.com", "250 2.1.5 Ok"),
            ],
        ),
        (
            "smtpd_sender_restrictions=$d_rhs",
            &[
                (
                    "127.0.0.3",
                    "client.example",
                    "eve@spam.example",
                    "openstack@ywnds.com",
                    "554 5.7.1 Service unavailable; Sender address [eve@spam.example] blocked using dbl.test",
                ),
                ("127.0.0.3", "client.example", "eve@ham.example", "openstack@ywnds.com", "250 2.1.5 Ok"),
            ],
        ),
        (
            "smtpd_client_restrictions=$d_wl",
            &[
                ("127.0.0.3", "client.example", "a@b.example", "openstack@ywnds.com", "250 2.1.5 Ok"),
                (
                    "127.0.0.2",
                    "client.example",
                    "a@b.example",
                    "openstack@ywnds.com",
                    "554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Access denied",
                ),
            ],
        ),
        (
            "smtpd_sender_restrictions=$d_dom",
            &[
                (
                    "127.0.0.3",
                    "client.example",
                    "a@nx.other.test",
                    "openstack@ywnds.com",
                    "450 4.1.8 <a@nx.other.test>: Sender address rejected: Domain not found",
                ),
                // The domain the address resolves to is the one checked.
                (
                    "127.0.0.3",
                    "client.example",
                    "a%nx.other.test@ywnds.com",
                    "openstack@ywnds.com",
                    "450 4.1.8 <a%nx.other.test@ywnds.com>: Sender address rejected: Domain not found",
                ),
                (
                    "127.0.0.3",
                    "nx.other.test",
                    "a@www.other.test",
                    "openstack@ywnds.com",
                    "450 4.7.1 <nx.other.test>: Helo command rejected: Host not found",
                ),
                (
                    "127.0.0.3",
                    "www.other.test",
                    "a@other.test",
                    "openstack@ywnds.com",
                    "554 5.7.1 <a@other.test>: Sender address rejected: bad mail exchanger",
                ),
                ("127.0.0.3", "www.other.test", "a@www.other.test", "openstack@ywnds.com", "250 2.1.5 Ok"),
            ],
        ),
    ];
    let ports = distinct_ports(cases.len(), &[m.port, named_port]);
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    for ((overrides, _), port) in cases.iter().zip(&ports) {
        master.push_str(&format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n  -o {overrides}\n"
        ));
    }
    m.write_master_cf(&master);
    m.start();
    assert!(
        wait_for(Duration::from_secs(10), || testkit::dig(
            named_port,
            &["2.0.0.127.bl.test", "TXT", "+short"]
        )
        .contains("Listed")),
        "named does not serve bl.test:\n{}",
        m.log_text()
    );
    for ((overrides, sessions), port) in cases.iter().zip(&ports) {
        for (client, helo, sender, rcpt, want) in sessions.iter() {
            let (mut s, _) = Smtp::connect_from(client, *port);
            s.cmd(&format!("EHLO {helo}"));
            s.cmd(&format!("MAIL FROM:<{sender}>"));
            let got = s.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(got, *want, "{overrides}: {client} {helo} {sender}");
        }
    }
    // A list that does not answer lets the client pass, with a warning.
    m.log_line("warning: 3.0.0.127.down.test: RBL lookup error:");
    m.log_line(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; Listed for testing; from=<a@b.example> to=<openstack@ywnds.com> proto=ESMTP helo=<client.example>",
    );
}

/// A policy server from Debian, started on a loopback port with its own
/// files; killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// postgrey on `port` with a `delay`-second greylist, its database in
/// `dir`, and no allow lists.
fn postgrey(dir: &Path, port: u16, delay: u32) -> Server {
    use std::os::unix::fs::PermissionsExt;
    let (user, group) = if nix::unistd::Uid::effective().is_root() {
        ("postgrey".to_owned(), "postgrey".to_owned())
    } else {
        let u = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap();
        let g = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .unwrap()
            .unwrap();
        (u.name, g.name)
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let empty = dir.join("none");
    std::fs::write(&empty, "").unwrap();
    let child = std::process::Command::new("/usr/sbin/postgrey")
        .arg(format!("--inet=127.0.0.1:{port}"))
        .arg(format!("--dbdir={}", dir.display()))
        .arg(format!("--delay={delay}"))
        .arg(format!("--user={user}"))
        .arg(format!("--group={group}"))
        .arg(format!("--whitelist-clients={}", empty.display()))
        .arg(format!("--whitelist-recipients={}", empty.display()))
        .arg("--auto-whitelist-clients=0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("postgrey");
    // Ready when it answers a request (it listens before its database is
    // open): a triplet of its own, never used by the tests.
    let answers = || -> std::io::Result<bool> {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.9\n\
              client_name=probe.example\nsender=probe@probe.example\n\
              recipient=probe@probe.example\n\n",
        )?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        Ok(line.starts_with("action="))
    };
    assert!(
        wait_for(Duration::from_secs(30), || answers().unwrap_or(false)),
        "postgrey did not start"
    );
    Server(child)
}

#[test]
fn greylisting_with_postgrey_defers_the_first_attempt_and_takes_the_retry() {
    if !Path::new("/usr/sbin/postgrey").exists() {
        eprintln!("skipped: postgrey is not installed (scripts/setup installs it)");
        return;
    }
    let db = tempfile::Builder::new()
        .prefix("pfx-postgrey-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let _grey = postgrey(db.path(), port, 2);
    let main_cf = format!(
        "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\nmydestination = $myhostname, localhost, $mydomain\nsmtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, check_policy_service inet:127.0.0.1:{port}\n"
    );
    let m = Instance::mail(&main_cf);
    m.start();
    let first = {
        let (mut s, _) = Smtp::connect_from("127.0.0.2", m.port);
        s.cmd("EHLO client.example");
        s.cmd("MAIL FROM:<grey@b.example>");
        s.cmd("RCPT TO:<openstack@ywnds.com>")
    };
    assert!(
        first
            .starts_with("450 4.2.0 <openstack@ywnds.com>: Recipient address rejected: Greylisted"),
        "{first}\n{}",
        m.log_text()
    );
    if nix::unistd::Uid::effective().is_root() {
        // Debian's Postfix gives the same answer for its own first attempt.
        let pf = testkit::debian::Postfix::new(None, &main_cf);
        pf.start();
        let (mut s, _) = Smtp::connect_from("127.0.0.2", pf.port);
        s.cmd("EHLO client.example");
        s.cmd("MAIL FROM:<grey2@b.example>");
        let theirs = s.cmd("RCPT TO:<openstack@ywnds.com>");
        assert_eq!(theirs, first, "Postfix: {theirs}\npostfix-rs: {first}");
        pf.stop();
    }
    // After the delay the retry is accepted and delivered.
    std::thread::sleep(Duration::from_secs(3));
    let (mut s, _) = Smtp::connect_from("127.0.0.2", m.port);
    s.cmd("EHLO client.example");
    s.queued(
        "grey@b.example",
        &["openstack@ywnds.com"],
        b"Subject: greylisted\r\n\r\nretried\r\n",
    );
    m.wait_maildir("openstack", 1);
    m.log_line("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 450 4.2.0 <openstack@ywnds.com>: Recipient address rejected: Greylisted");
}

/// A network and mount namespace of the test's own, with its loopback up
/// and `/etc/resolv.conf` naming 127.0.0.1 inside it: a policy server
/// there asks the instance's named on port 53, and nothing leaves it.
/// Removed (its holder killed) when dropped.
struct Namespace {
    holder: std::process::Child,
    _resolv: tempfile::NamedTempFile,
}

impl Namespace {
    fn new() -> Self {
        let resolv = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(resolv.path(), "nameserver 127.0.0.1\n").unwrap();
        // Policy servers run as ordinary users.
        std::fs::set_permissions(
            resolv.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let holder = testkit::namespace_holder(
            &["--net", "--mount"],
            &format!("mount --bind {} /etc/resolv.conf", resolv.path().display()),
        );
        Self {
            holder,
            _resolv: resolv,
        }
    }

    /// nsenter's option for one of the holder's namespaces.
    fn ns(&self, option: &str, kind: &str) -> String {
        format!("--{option}=/proc/{}/ns/{kind}", self.holder.id())
    }

    /// Runs a command inside.
    fn run(&self, program: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new("nsenter")
            .args([self.ns("net", "net"), self.ns("mount", "mnt")])
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `f` on a thread that joined the namespace's network.
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let net = std::fs::File::open(format!("/proc/{}/ns/net", self.holder.id())).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(net, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn spf_through_debians_policyd_spf_run_by_spawn_against_our_named() {
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/usr/bin/policyd-spf").exists() {
        eprintln!("skipped: needs root (a network namespace) and postfix-policyd-spf-python");
        return;
    }
    let ns = Namespace::new();
    let conf = tempfile::NamedTempFile::new().unwrap();
    // Debian's settings, except that loopback clients are checked too.
    std::fs::write(
        conf.path(),
        "debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n\
         PermError_reject = False\nTempError_Defer = False\nskip_addresses = 192.0.2.0/24\n",
    )
    .unwrap();
    std::fs::set_permissions(
        conf.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let m = Instance::mail(
        "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\ndns_servers = 127.0.0.1:53\n\
         policyd-spf_time_limit = 3600\n\
         smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, check_policy_service unix:private/policyd-spf\n",
    );
    let zones = m.etc.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(
        zones.join("spf.test.zone"),
        "$TTL 1H\n@ IN SOA ns.spf.test. root.spf.test. 1 3H 15M 1W 1D\n\tIN NS ns.spf.test.\nns IN A 127.0.0.1\n\
         pass IN TXT \"v=spf1 ip4:127.0.0.2 -all\"\nclient IN A 127.0.0.2\n",
    )
    .unwrap();
    std::fs::write(
        m.etc.join("named.conf"),
        "options {\n  listen-on port 53 { 127.0.0.1; };\n  listen-on-v6 { none; };\n  directory \"zones\";\n  recursion no;\n};\ncontrols { };\n\
         zone \"spf.test\" IN { type master; file \"spf.test.zone\"; };\n",
    )
    .unwrap();
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    // Debian's entry (README.Debian of postfix-policyd-spf-python).
    master.push_str(&format!(
        "named unix - - n - 1 named\npolicyd-spf unix - n n - 0 spawn\n  user=nobody argv=/usr/bin/policyd-spf {}\n",
        conf.path().display()
    ));
    m.write_master_cf(&master);
    let out = ns.run(
        &testkit::bin("postfix"),
        &["-c", &m.etc.display().to_string(), "start"],
    );
    assert!(out.status.success(), "{out:?}\n{}", m.log_text());
    let port = m.port;
    let (fail, pass) = ns.within(move || {
        let attempt = |client: &str| {
            let (mut s, _) = Smtp::connect_from(client, port);
            s.cmd("EHLO client.spf.test");
            s.cmd("MAIL FROM:<a@pass.spf.test>");
            let rcpt = s.cmd("RCPT TO:<openstack@ywnds.com>");
            if !rcpt.starts_with("250") {
                return rcpt;
            }
            s.cmd("DATA");
            s.send(b"Subject: spf\r\n\r\nchecked\r\n.\r\n");
            s.reply()
        };
        (attempt("127.0.0.3"), attempt("127.0.0.2"))
    });
    assert!(
        fail.starts_with(
            "550 5.7.23 <openstack@ywnds.com>: Recipient address rejected: Message rejected due to: SPF fail - not authorized."
        ),
        "{fail}\n{}",
        m.log_text()
    );
    assert!(
        pass.starts_with("250 2.0.0 Ok: queued as"),
        "{pass}\n{}",
        m.log_text()
    );
    // policyd-spf's PREPEND: the header comes before smtpd's Received:.
    let msg = String::from_utf8(m.wait_maildir("openstack", 1).remove(0)).unwrap();
    let received_spf =
        msg.find("Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.2;");
    let received = msg.find("Received: from client.spf.test");
    assert!(received_spf.is_some() && received_spf < received, "{msg}");
}
