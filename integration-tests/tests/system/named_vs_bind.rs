//! named against BIND 9.18 on the same named.conf and zones: a few hundred
//! queries generated from the zones' contents (every name with the common
//! types, names that do not exist, mixed case, RD on and off, EDNS on and
//! off, TCP), BIND's CH names (`version.bind` and the others), NOTIFY and
//! UPDATE, EDNS versions, DNS COOKIES, TSIG and a signed zone asked with
//! DO, compared by rcode, flags and every section as a set.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::{
    bin, bind_and_named as both, bind_available, dig, dig_from, dns_status, wait_for, ywnds_zone,
    REVERSE_ZONE,
};

/// Wildcards, an empty non-terminal, a delegation with glue, CNAME
/// chains (in and out of the zone), DNAMEs (in and out of the zone), a
/// large RRset, SRV, TXT, SPF, AAAA, LOC, RP and a type of RFC 3597's
/// generic form.
const EXTRA: &str = "\
www IN CNAME mail
alias IN CNAME www
away IN CNAME mx.elsewhere.test.
*.wild IN MX 10 mail
*.wild IN TXT \"wildcard\"
host.wild IN A 192.0.2.1
a.b.deep IN A 192.0.2.2
sub IN NS ns.sub
sub IN NS ns.elsewhere.test.
ns.sub IN A 192.0.2.53
_smtp._tcp IN SRV 0 5 25 mail
txt IN TXT \"v=spf1 mx -all\"
txt IN SPF \"v=spf1 mx -all\"
v6 IN AAAA 2001:db8::1
old IN DNAME ywnds.com.
gone IN DNAME elsewhere.test.
where IN LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m
who IN RP root.ywnds.com. txt.ywnds.com.
raw IN TYPE65280 \\# 4 0A000001
near IN TXT \"1 ............................................................................................to 100\"
near IN TXT \"2 ............................................................................................to 100\"
near IN TXT \"3 ............................................................................................to 100\"
near IN TXT \"4 ............................................................................................to 100\"
";

/// The owner names asked about (relative to ywnds.com), with names that
/// do not exist, wildcard matches and names below the delegation.
const NAMES: &[&str] = &[
    "@",
    "ns",
    "mail",
    "MAIL",
    "www",
    "alias",
    "away",
    "host.wild",
    "x.wild",
    "y.z.wild",
    "wild",
    "x.host.wild",
    "b.deep",
    "a.b.deep",
    "deep",
    "sub",
    "ns.sub",
    "www.sub",
    "_smtp._tcp",
    "txt",
    "v6",
    "big",
    "near",
    "nothere",
    "a.nothere",
];

const TYPES: &[&str] = &[
    "A",
    "AAAA",
    "MX",
    "NS",
    "SOA",
    "TXT",
    "CNAME",
    "SRV",
    "ANY",
    "DNAME",
    "SPF",
    "LOC",
    "RP",
    "TYPE65280",
];

/// The owner names asked about in the signed zone.
const SIGNED_NAMES: &[&str] = &[
    "@",
    "mail",
    "www",
    "x.wild",
    "host.wild",
    "y.z.wild",
    "nothere",
    "a.nothere",
    "sub",
    "www.sub",
    "secure",
    "ns.secure",
    "b.deep",
    "a.b.deep",
    "zzz",
    "x.alias",
    "x.gone",
];

/// Writes signed.test, signed with fresh keys by BIND's dnssec-signzone.
fn sign_zone(d: &Path) {
    let zone = d.join("signed.test.zone");
    let mut text = String::from(
        "$TTL 3600\n@ IN SOA ns.signed.test. root.signed.test. 1 3600 900 604800 300\n\
         @ IN NS ns\nns IN A 127.0.0.1\n@ IN MX 10 mail\nmail IN A 127.0.0.1\nwww IN CNAME mail\n\
         *.wild IN MX 10 mail\n*.wild IN TXT \"wildcard\"\nhost.wild IN A 192.0.2.1\na.b.deep IN A 192.0.2.2\n\
         *.alias IN CNAME www\n*.gone IN CNAME nothere\n\
         sub IN NS ns.sub\nns.sub IN A 192.0.2.53\nsecure IN NS ns.secure\nns.secure IN A 192.0.2.54\n\
         secure IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\n",
    );
    for args in [
        &["-a", "ECDSAP256SHA256"][..],
        &["-f", "KSK", "-a", "ECDSAP256SHA256"],
    ] {
        let out = Command::new("/usr/bin/dnssec-keygen")
            .args(["-q", "-K"])
            .arg(d)
            .args(args)
            .arg("signed.test")
            .output()
            .expect("dnssec-keygen (bind9-utils)");
        assert!(out.status.success(), "{out:?}");
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        text.push_str(&format!("$INCLUDE {}/{name}.key\n", d.display()));
    }
    std::fs::write(&zone, text).unwrap();
    let out = Command::new("/usr/bin/dnssec-signzone")
        .args(["-q", "-K"])
        .arg(d)
        .args(["-d"])
        .arg(d)
        .args(["-o", "signed.test", "-f"])
        .arg(d.join("signed.test.zone.signed"))
        .arg(&zone)
        .output()
        .expect("dnssec-signzone (bind9-utils)");
    assert!(out.status.success(), "{out:?}");
}

/// The secret of the TSIG key both servers know.
const TSIG_SECRET: &str = "qV0JuJwJsxz9ihbuyLjL3z/6iG0jxE7+5FaCnA59R0k=";

/// A server's answer, as compared: status, flags, sections as sets.
fn answer(port: u16, args: &[&str]) -> String {
    let out = dig(port, args);
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no answer)");
    let flags = out
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .and_then(|l| l.split(';').nth(2))
        .unwrap_or("")
        .trim()
        .to_owned();
    let edns = out
        .lines()
        .find(|l| l.starts_with("; EDNS:"))
        .unwrap_or("")
        .to_owned();
    // A cookie's bytes differ between servers; its presence, the client
    // part and whether dig found it good must not.
    let cookie = out
        .lines()
        .find_map(|l| l.strip_prefix("; COOKIE: "))
        .map(|c| {
            let hex = c.split_whitespace().next().unwrap_or("");
            // dig's own client cookie is random unless given.
            let client = &hex[..hex.len().min(16)];
            format!(
                " COOKIE {} +{} bytes{}",
                if client == "0102030405060708" {
                    client
                } else {
                    "(dig's)"
                },
                hex.len().saturating_sub(16) / 2,
                if c.ends_with("(good)") { " (good)" } else { "" }
            )
        })
        .unwrap_or_default();
    // TSIG: key, algorithm, MAC size and error (time and MAC differ), and
    // whether dig could verify the answer.
    let tsig = out
        .lines()
        .skip_while(|l| *l != ";; TSIG PSEUDOSECTION:")
        .nth(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let pick = |i: usize| f.get(i).copied().unwrap_or("");
            // NAME TTL ANY TSIG ALG TIME FUDGE MACSIZE [MAC] ID ERROR OTHERLEN
            let mac_size = pick(7);
            let error = if mac_size == "0" { pick(9) } else { pick(10) };
            format!(" TSIG {} {} mac {mac_size} {error}", pick(0), pick(4))
        })
        .unwrap_or_default();
    let verified = if out.contains("Couldn't verify signature") {
        " (not verified)"
    } else {
        ""
    };
    let mut text = format!("{status} [{flags}] {edns}{cookie}{tsig}{verified}\n");
    for name in ["ANSWER", "AUTHORITY", "ADDITIONAL"] {
        let head = format!(";; {name} SECTION:");
        let lines: BTreeSet<String> = out
            .lines()
            .skip_while(|l| *l != head)
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        text.push_str(&format!("{name}: {lines:?}\n"));
    }
    text
}

#[test]
fn answers_are_binds() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut big = String::new();
    for i in 0..40 {
        big.push_str(&format!(
            "big IN TXT \"record number {i} of a set too large for 512 bytes\"\n"
        ));
    }
    std::fs::write(
        d.join("ywnds.com.zone"),
        ywnds_zone(1, &format!("{EXTRA}{big}")),
    )
    .unwrap();
    std::fs::write(d.join("127.0.0.zone"), REVERSE_ZONE).unwrap();
    let conf = |port: u16| {
        format!(
            "options {{\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{}\";\n\
             recursion no;\n  pid-file \"{}/named-{port}.pid\";\n  session-keyfile \"{}/session-{port}.key\";\n\
             dnssec-validation no;\n  version \"9.18-test\";\n  server-id \"ns1.test\";\n}};\n\
             controls {{ }};\n\
             key \"tsig-key\" {{ algorithm hmac-sha256; secret \"{TSIG_SECRET}\"; }};\n\
             key \"tsig-short\" {{ algorithm hmac-sha256-128; secret \"{TSIG_SECRET}\"; }};\n\
             zone \"ywnds.com\" IN {{ type master; file \"ywnds.com.zone\"; }};\n\
             zone \"0.0.127.in-addr.arpa\" IN {{ type master; file \"127.0.0.zone\"; }};\n\
             zone \"signed.test\" IN {{ type master; file \"signed.test.zone.signed\"; }};\n",
            d.display(),
            d.display(),
            d.display()
        )
    };
    sign_zone(d);
    let (theirs, ours, _servers) = both(d, "-g", |_, port| conf(port));
    let mut queries: Vec<Vec<String>> = Vec::new();
    for name in NAMES {
        let fqdn = if *name == "@" {
            "ywnds.com.".to_owned()
        } else {
            format!("{name}.ywnds.com.")
        };
        for t in TYPES {
            queries.push(vec![fqdn.clone(), (*t).into(), "+norec".into()]);
            queries.push(vec![
                fqdn.clone(),
                (*t).into(),
                "+rec".into(),
                "+noedns".into(),
            ]);
        }
        queries.push(vec![
            fqdn.clone(),
            "A".into(),
            "+tcp".into(),
            "+norec".into(),
        ]);
        queries.push(vec![
            fqdn.clone(),
            "MX".into(),
            "+dnssec".into(),
            "+bufsize=4096".into(),
        ]);
    }
    // BIND's built-in CH names, NOTIFY and UPDATE.
    for q in [
        "version.bind TXT CH +norec",
        "version.bind TXT CH",
        "hostname.bind TXT CH",
        "id.server TXT CH",
        "version.bind A CH",
        "x.version.bind TXT CH",
        "nothere.bind TXT CH",
        "+opcode=notify ywnds.com SOA +norec",
        "+opcode=notify nothere.test SOA +norec",
        "+opcode=update ywnds.com SOA",
        "+opcode=update nothere.test SOA",
        // EDNS versions and DNS COOKIES (RFC 7873): a client cookie, one
        // with a server cookie not ours, a malformed one, over TCP too.
        "mail.ywnds.com A +edns=1 +noednsneg",
        "mail.ywnds.com A +edns=1 +noednsneg +cookie=0102030405060708",
        "mail.ywnds.com A +cookie=0102030405060708",
        "mail.ywnds.com A +cookie",
        "nothere.ywnds.com A +cookie +norec",
        "mail.ywnds.com A +cookie +tcp",
        "mail.ywnds.com A +cookie=0102030405060708aabbccddeeff00112233445566778899",
        "mail.ywnds.com A +cookie=01020304",
        "nothere.test A +cookie=0102030405060708",
        "version.bind TXT CH +cookie=0102030405060708",
    ] {
        queries.push(q.split(' ').map(String::from).collect());
    }
    // TSIG (RFC 8945): a good key (the answer signed), a wrong secret
    // (BADSIG), a wrong algorithm and an unknown key (BADKEY), over UDP
    // and TCP, with and without EDNS.
    for q in [
        format!("mail.ywnds.com A -y hmac-sha256:tsig-key:{TSIG_SECRET}"),
        format!("mail.ywnds.com MX +tcp -y hmac-sha256:tsig-key:{TSIG_SECRET}"),
        format!("nothere.ywnds.com A +noedns -y hmac-sha256:tsig-key:{TSIG_SECRET}"),
        "mail.ywnds.com A -y hmac-sha256:tsig-key:c2VjcmV0c2VjcmV0".to_owned(),
        format!("mail.ywnds.com A -y hmac-sha512:tsig-key:{TSIG_SECRET}"),
        format!("mail.ywnds.com A +noedns -y hmac-sha256:nokey:{TSIG_SECRET}"),
        // MACs cut short: below the key's digest bits (BADTRUNC), below
        // half the algorithm's (FORMERR); a key of 128 digest bits.
        format!("mail.ywnds.com A -y hmac-sha256-128:tsig-key:{TSIG_SECRET}"),
        format!("mail.ywnds.com A -y hmac-sha256-80:tsig-key:{TSIG_SECRET}"),
        format!("mail.ywnds.com A -y hmac-sha256-128:tsig-short:{TSIG_SECRET}"),
        format!("mail.ywnds.com A -y hmac-sha256:tsig-short:{TSIG_SECRET}"),
        // EDNS errors to signed queries, and before a bad signature.
        format!("mail.ywnds.com A +edns=1 +noednsneg -y hmac-sha256:tsig-key:{TSIG_SECRET}"),
        "mail.ywnds.com A +edns=1 +noednsneg -y hmac-sha256:tsig-key:c2VjcmV0c2VjcmV0".to_owned(),
        format!("mail.ywnds.com A +cookie=01020304 -y hmac-sha256:tsig-key:{TSIG_SECRET}"),
        format!("mail.ywnds.com A +noedns -y hmac-sha256-128:tsig-key:{TSIG_SECRET}"),
        // An answer that fits 512 bytes alone but not with its TSIG or
        // its cookie: truncated (+ignore keeps dig from retrying on TCP).
        format!("near.ywnds.com TXT +noedns +ignore -y hmac-sha256:tsig-key:{TSIG_SECRET}"),
        "near.ywnds.com TXT +noedns +ignore".to_owned(),
        "near.ywnds.com TXT +bufsize=512 +ignore".to_owned(),
        "near.ywnds.com TXT +bufsize=512 +ignore +cookie=0102030405060708".to_owned(),
    ] {
        queries.push(q.split(' ').map(String::from).collect());
    }
    // A zone signed by dnssec-signzone, asked with DO: RRSIGs with each
    // RRset, NSEC proofs for NODATA, NXDOMAIN and wildcards, DS or its
    // absence proven at delegations.
    for name in SIGNED_NAMES {
        let fqdn = if *name == "@" {
            "signed.test.".to_owned()
        } else {
            format!("{name}.signed.test.")
        };
        for t in [
            "A", "MX", "TXT", "NS", "SOA", "DS", "DNSKEY", "NSEC", "RRSIG", "ANY", "CNAME",
        ] {
            queries.push(vec![
                fqdn.clone(),
                t.into(),
                "+dnssec".into(),
                "+norec".into(),
            ]);
        }
        queries.push(vec![fqdn.clone(), "A".into(), "+dnssec".into()]);
        queries.push(vec![fqdn.clone(), "A".into()]);
    }
    queries.push(vec!["1.0.0.127.in-addr.arpa.".into(), "PTR".into()]);
    queries.push(vec!["2.0.0.127.in-addr.arpa.".into(), "PTR".into()]);
    let mut differences = Vec::new();
    for q in &queries {
        let args: Vec<&str> = q.iter().map(String::as_str).collect();
        let (a, b) = (answer(theirs, &args), answer(ours, &args));
        if a != b {
            differences.push(format!("dig {}\nBIND:\n{a}postfix-rs:\n{b}", q.join(" ")));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} queries differ:\n{}",
        differences.len(),
        queries.len(),
        differences.join("\n")
    );
}

/// Views: the same zone name served differently by client address, by
/// local address (match-destinations, here ::1) and by whether recursion
/// is asked (match-recursive-only), each with its own allow-query, and no
/// view for some clients: every answer as BIND 9.18's.
#[test]
fn views_answer_as_binds() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for view in ["internal", "v6", "rec", "external"] {
        std::fs::write(
            d.join(format!("{view}.zone")),
            ywnds_zone(
                1,
                &format!("who IN TXT \"{view}\"\n{view} IN A 192.0.2.9\n"),
            ),
        )
        .unwrap();
    }
    let conf = |port: u16| {
        format!(
            "options {{\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 port {port} {{ ::1; }};\n\
             directory \"{d}\";\n  recursion no;\n  pid-file none;\n  session-keyfile \"{d}/session-{port}.key\";\n\
             dnssec-validation no;\n}};\ncontrols {{ }};\n\
             view \"internal\" {{\n  match-clients {{ 127.0.0.1; }};\n  match-destinations {{ 127.0.0.1; }};\n\
             zone \"ywnds.com\" {{ type master; file \"internal.zone\"; }};\n}};\n\
             view \"v6\" {{\n  match-destinations {{ ::1; }};\n  zone \"ywnds.com\" {{ type master; file \"v6.zone\"; }};\n}};\n\
             view \"rec\" {{\n  match-clients {{ 127.0.0.5; }};\n  match-recursive-only yes;\n\
             zone \"ywnds.com\" {{ type master; file \"rec.zone\"; }};\n}};\n\
             view \"external\" {{\n  match-clients {{ !127.0.0.6; any; }};\n  allow-query {{ !127.0.0.4; any; }};\n\
             zone \"ywnds.com\" {{ type master; file \"external.zone\"; }};\n}};\n",
            d = d.display()
        )
    };
    let (theirs, ours, _servers) = both(d, "-g", |_, port| conf(port));
    // (server, source address, extra dig options)
    let askers: &[(&str, &str, &[&str])] = &[
        ("127.0.0.1", "127.0.0.1", &[]),
        ("127.0.0.1", "127.0.0.2", &[]),
        ("::1", "::1", &[]),
        ("127.0.0.1", "127.0.0.5", &[]),
        ("127.0.0.1", "127.0.0.5", &["+norec"]),
        ("127.0.0.1", "127.0.0.4", &[]),
        ("127.0.0.1", "127.0.0.6", &[]),
        ("127.0.0.1", "127.0.0.2", &["+tcp"]),
    ];
    let ask = |port: u16| -> Vec<String> {
        let mut out = Vec::new();
        for (server, source, extra) in askers {
            // Twice: the second may come from the answer cache.
            for _ in 0..2 {
                for q in [["who.ywnds.com", "TXT"], ["external.ywnds.com", "A"]] {
                    let mut args: Vec<&str> = extra.to_vec();
                    args.extend(q);
                    let text = dig_from(server, source, port, &args);
                    let status = dns_status(&text);
                    let answer: Vec<&str> = text
                        .lines()
                        .skip_while(|l| *l != ";; ANSWER SECTION:")
                        .skip(1)
                        .take_while(|l| !l.is_empty())
                        .collect();
                    out.push(format!(
                        "{server} from {source} {extra:?} {q:?}: {status} {answer:?}"
                    ));
                }
            }
        }
        out
    };
    let bind_said = ask(theirs);
    let ours_said = ask(ours);
    assert_eq!(
        ours_said, bind_said,
        "postfix-rs named (left) and BIND (right) differ"
    );
    // The views did choose: each asker got its own view's data.
    let text = ours_said.join("\n");
    // (Debug-quoted TXT data: \"internal\")
    for view in ["internal", "v6", "rec", "external"] {
        let want = format!("\\\"{view}\\\"");
        assert!(text.contains(&want), "{want} not seen in:\n{text}");
    }
    assert!(text.contains("REFUSED"), "{text}");
}

/// The `logging` statement: the query log and denied queries written to
/// file channels in BIND's format (print-time, print-category,
/// print-severity), the same lines as BIND 9.18 writes for the same
/// queries (the time, the client object and port masked).
#[test]
fn logging_channels_write_what_bind_writes() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ywnds.com.zone"), ywnds_zone(1, "")).unwrap();
    std::fs::write(d.join("127.0.0.zone"), REVERSE_ZONE).unwrap();
    let conf = |name: &str, port: u16| {
        let logs = d.join(name);
        std::fs::create_dir_all(&logs).unwrap();
        format!(
            "options {{\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{d}\";\n\
             recursion no;\n  pid-file none;\n  session-keyfile \"{d}/session-{port}.key\";\n  dnssec-validation no;\n\
             querylog yes;\n}};\ncontrols {{ }};\n\
             logging {{\n  channel q {{ file \"{l}/queries.log\"; print-time yes; print-category yes; print-severity yes; }};\n\
             channel s {{ file \"{l}/security.log\" versions 2 size 1m; print-category yes; }};\n\
             category queries {{ q; }};\n  category security {{ s; }};\n  category default {{ null; }};\n}};\n\
             zone \"ywnds.com\" IN {{ type master; file \"ywnds.com.zone\"; }};\n\
             zone \"0.0.127.in-addr.arpa\" IN {{ type master; file \"127.0.0.zone\"; allow-query {{ none; }}; }};\n",
            d = d.display(),
            l = logs.display()
        )
    };
    // -f: in the foreground with the logging statement (-g would ignore it).
    let (theirs, ours, _servers) = both(d, "-f", |name, port| conf(name, port));
    for port in [theirs, ours] {
        dig(port, &["Mail.ywnds.com", "MX", "+norec"]);
        dig(port, &["www.ywnds.com", "A", "+tcp"]);
        dig(port, &["-x", "127.0.0.1"]);
    }
    // Times, client objects and ports masked; the start-up probes left out.
    let masked = |name: &str, file: &str| -> Vec<String> {
        let path = d.join(name).join(file);
        let mut text = String::new();
        wait_for(Duration::from_secs(5), || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            text.lines().count() >= 3 || (file == "security.log" && !text.is_empty())
        });
        text.lines()
            // The readiness probes: as many as each server took to start.
            .filter(|l| !l.contains("query: ywnds.com IN SOA"))
            .map(|l| {
                l.split_whitespace()
                    .map(|w| {
                        if w.starts_with("@0x") {
                            "@CLIENT".to_owned()
                        } else if let Some((addr, _)) = w.split_once('#') {
                            format!("{addr}#PORT")
                        } else if w.len() == 11 && w.chars().nth(2) == Some('-') {
                            "DATE".to_owned()
                        } else if w.len() == 12 && w.chars().nth(2) == Some(':') {
                            "TIME".to_owned()
                        } else {
                            w.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    for file in ["queries.log", "security.log"] {
        let (b, o) = (masked("bind", file), masked("ours", file));
        assert!(!b.is_empty(), "BIND wrote no {file}");
        assert_eq!(o, b, "{file}: postfix-rs named (left), BIND (right)");
    }
}

/// Access by client and by local address (`blackhole`,
/// `allow-query-on`, `allow-recursion-on`), the `port` option, and a
/// named.conf full of options that only tune BIND: both servers load it
/// and answer alike.
#[test]
fn access_options_and_inert_options_as_binds() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ywnds.com.zone"), ywnds_zone(1, "")).unwrap();
    let conf = |port: u16| {
        format!(
            "options {{\n  port {port};\n  listen-on {{ 127.0.0.1; }};\n  listen-on-v6 {{ ::1; }};\n  directory \"{d}\";\n\
             recursion no;\n  pid-file none;\n  session-keyfile \"{d}/session-{port}.key\";\n  dnssec-validation no;\n\
             blackhole {{ 127.0.0.9; }};\n  allow-query-on {{ 127.0.0.1; }};\n  allow-recursion-on {{ 127.0.0.1; }};\n\
             minimal-responses no-auth-recursive;\n  minimal-any no;\n  max-cache-size 64m;\n  max-cache-ttl 3600;\n\
             tcp-clients 100;\n  notify no;\n  allow-transfer {{ none; }};\n  check-names master ignore;\n\
             statistics-file \"{d}/stats-{port}\";\n  zone-statistics yes;\n  transfers-out 5;\n  serial-query-rate 10;\n\
             edns-udp-size 1232;\n  max-udp-size 1232;\n  qname-minimization relaxed;\n  prefetch 2 9;\n\
             tcp-idle-timeout 300;\n  rrset-order {{ order cyclic; }};\n  empty-zones-enable no;\n}};\ncontrols {{ }};\n\
             zone \"ywnds.com\" IN {{ type master; file \"ywnds.com.zone\"; }};\n",
            d = d.display()
        )
    };
    let (theirs, ours, _servers) = both(d, "-g", |_, port| conf(port));
    for program in [
        Path::new("/usr/bin/named-checkconf"),
        &bin("named-checkconf"),
    ] {
        for name in ["bind.conf", "ours.conf"] {
            let out = Command::new(program).arg(d.join(name)).output().unwrap();
            assert!(out.status.success(), "{program:?} {name}: {out:?}");
        }
    }
    let ask = |port: u16| -> Vec<String> {
        [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.9"),
            ("::1", "::1"),
            ("127.0.0.1", "127.0.0.2"),
        ]
        .iter()
        .map(|(server, source)| {
            let text = dig_from(server, source, port, &["mail.ywnds.com", "A"]);
            let status = dns_status(&text);
            format!("{server} from {source}: {status}")
        })
        .collect()
    };
    let ours_said = ask(ours);
    assert_eq!(
        ours_said,
        ask(theirs),
        "postfix-rs named (left), BIND (right)"
    );
    assert_eq!(
        ours_said,
        [
            "127.0.0.1 from 127.0.0.1: NOERROR",
            "127.0.0.1 from 127.0.0.9: (no answer)",
            "::1 from ::1: REFUSED",
            "127.0.0.1 from 127.0.0.2: NOERROR",
        ]
    );
}
