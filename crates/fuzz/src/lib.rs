//! Fuzzing entry points. Each function takes arbitrary bytes to one parser
//! that reads input from outside (SMTP clients, maildrop files written by
//! any local user, peers on a socket) or from an administrator's files, and
//! panics only when a property that must hold is broken: a parser may reject
//! its input, never crash on it.
//!
//! The libFuzzer targets in `fuzz/fuzz_targets/` call these (run them with
//! `scripts/fuzz`); `tests/corpus.rs` replays the checked-in corpus through
//! the same functions on every test run, so a fixed crash stays fixed.

use std::path::Path;

use pfx_ipc::proto;
use pfx_smtp_proto::data::{DataDecoder, Progress};
use serde::{de::DeserializeOwned, Serialize};

/// A fuzzing entry point.
pub type Target = fn(&[u8]);

/// Every target: its name (the corpus and fuzz target are named after it) and entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("smtp_command", smtp_command),
    ("smtp_data", smtp_data),
    ("main_cf", main_cf),
    ("master_cf", master_cf),
    ("aliases", aliases),
    ("named_conf", named_conf),
    ("zone_file", zone_file),
    ("control_message", control_message),
    ("queue_file", queue_file),
    ("ipc_frame", ipc_frame),
    ("restrictions", restrictions),
    ("lookup_table", lookup_table),
];

/// SMTP command lines, as smtpd splits them: any bytes, one line at a time.
pub fn smtp_command(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match pfx_smtp_proto::parse_command(line) {
            Ok(cmd) => assert!(!cmd.verb().is_empty()),
            Err(e) => assert!(
                e.reply.code >= 400,
                "a refused command gets an error reply: {e:?}"
            ),
        }
    }
}

/// The DATA decoder: the first byte picks a chunk size, the rest is what
/// follows `354`. However the bytes arrive (TCP may cut them anywhere), the
/// content, the end of the message and the bare-LF count are the same.
pub fn smtp_data(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, usize::from(chunk).max(1));
    assert_eq!(whole, pieces, "split into {chunk}-byte pieces");
    let (content, end, _) = &whole;
    if let Some(end) = end {
        // Only CRLF.CRLF ends a message, and it is the last thing consumed.
        assert!(input[..*end].ends_with(b"\r\n.\r\n") || *end == 3 && input.starts_with(b".\r\n"));
    }
    assert!(!content.contains(&b'\r'), "content has LF line ends only");
}

fn decode(input: &[u8], chunk: usize) -> (Vec<u8>, Option<usize>, usize) {
    let mut dec = DataDecoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    for piece in input.chunks(chunk) {
        if let Progress::Done { consumed } = dec.feed(piece, &mut out) {
            assert!(consumed <= piece.len());
            return (out, Some(at + consumed), dec.bare_lf_count());
        }
        at += piece.len();
    }
    (out, None, dec.bare_lf_count())
}

/// main.cf: parse, then expand and type-check every value as the daemons do.
pub fn main_cf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let dir = Path::new("/nonexistent/fuzz");
    let Ok(cfg) = pfx_config::Config::from_text(dir, &text) else {
        return;
    };
    for e in cfg.entries() {
        let _ = cfg.get(&e.name);
        let _ = cfg.list(&e.name);
    }
    let _ = cfg.validate();
    let _ = cfg.unused(&[]);
}

/// master.cf: parse; what `postconf -M` prints for an entry reads back as the same entry
/// (its daemon options normalized, as postconf shows them).
pub fn master_cf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("master.cf");
    let Ok(services) = pfx_config::mastercf::parse(path, &text) else {
        return;
    };
    for s in services {
        let _ = s.overrides();
        if s.kind == pfx_config::ServiceType::Inet {
            let _ = pfx_config::mastercf::inet_port(&s.name);
        }
        for fold in [false, true] {
            let shown = pfx_config::mastercf::format_entry(&s, fold);
            let again = pfx_config::mastercf::parse(path, &shown)
                .unwrap_or_else(|e| panic!("{shown:?} does not read back: {e}"));
            assert_eq!(again.len(), 1, "{shown:?}");
            let again = &again[0];
            let mut args = s.args.clone();
            pfx_config::mastercf::normalize_options(&mut args);
            assert_eq!(
                (&again.name, again.kind, &again.command, &again.args),
                (&s.name, s.kind, &s.command, &args),
                "{shown:?}"
            );
        }
    }
}

/// /etc/aliases: strict and lenient parsing agree, and every value splits into targets.
pub fn aliases(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (entries, errors) = pfx_maps::aliases::parse_lenient("aliases", &text);
    match pfx_maps::aliases::parse("aliases", &text) {
        Ok(strict) => {
            assert!(errors.is_empty());
            assert_eq!(strict, entries);
        }
        Err(e) => assert_eq!(e.to_string(), errors[0].to_string()),
    }
    for (_, value) in &entries {
        let _ = pfx_maps::aliases::targets(value);
    }
}

/// An smtpd restriction list (main.cf text, `{ }` groups, arguments,
/// policy service settings, DNS list filters), as `postfix check` and smtpd
/// read it: a list parses or is refused with a message, and what parses
/// names each of its tables.
pub fn restrictions(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(items) = pfx_config::restriction::tokens(&text) else {
        return;
    };
    let classes = ["mine".to_owned()];
    match pfx_config::restriction::parse("smtpd_recipient_restrictions", &items, &classes) {
        Ok(list) => {
            for r in list {
                assert!(!r.keyword().is_empty());
                if let Some(t) = r.tables() {
                    assert!(t.contains(':'), "{t}");
                }
            }
        }
        Err(e) => assert!(e.contains("smtpd_recipient_restrictions"), "{e}"),
    }
    for addr in ["127.0.0.2", "0.0.0.0", "255.255.255.255"] {
        let _ = pfx_config::restriction::filter_matches(&text, addr.parse().expect("address"));
    }
}

/// The text tables an administrator writes (regexp, pcre, cidr; the first
/// byte picks the type) and `inline:{ }` specs: any text opens as a table
/// (bad rules are skipped with a warning), and any key can be looked up.
pub fn lookup_table(data: &[u8]) {
    use pfx_maps::{cidr, inline, pattern};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let keys = [
        "",
        "a",
        "user@example.com",
        "127.0.0.1",
        "::1",
        "AbC+d@ex.ample",
    ];
    match which % 4 {
        0 => {
            let t = pattern::Table::parse(pattern::Kind::Regexp, "fuzz.regexp", &text);
            for k in keys {
                let _ = t.lookup(k);
            }
        }
        1 => {
            let t = pattern::Table::parse(pattern::Kind::Pcre, "fuzz.pcre", &text);
            for k in keys {
                let _ = t.lookup(k);
            }
        }
        2 => {
            let t = cidr::Table::parse("fuzz.cidr", &text);
            for k in keys {
                let _ = t.lookup(k);
            }
        }
        _ => {
            if let Ok(t) = inline::Inline::parse(&text) {
                for k in keys {
                    let _ = t.get(k);
                }
            }
        }
    }
}

/// named.conf (statements, options, ACLs, zones; `include` of files that
/// do not exist is an error like any other).
pub fn named_conf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = pfx_named_conf::conf::parse(Path::new("/nonexistent/fuzz/named.conf"), &text);
}

/// A control channel message as rndc sends it (what follows the length):
/// read and checked against a key; garbage is refused, never followed.
pub fn control_message(data: &[u8]) {
    use named::control::wire;
    use pfx_named_conf::controls::{Algorithm, Key};
    let key = Key {
        name: "rndc-key".into(),
        algorithm: Algorithm::Sha256,
        digest_bits: 256,
        secret: b"fuzz".to_vec(),
        place: String::new(),
    };
    if data.len() <= wire::MAX_MESSAGE {
        if let Ok(table) = wire::decode(data, &key) {
            let again = wire::encode(&table, &key);
            assert!(wire::decode(&again[4..], &key).is_ok());
        }
    }
}

/// A zone file for ywnds.com, checked as named-checkzone checks it; an
/// error names the file and a line.
pub fn zone_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = pfx_named_conf::zone::parse(
        "ywnds.com",
        Path::new("/nonexistent/fuzz/ywnds.com.zone"),
        &text,
        Path::new("/nonexistent/fuzz"),
    ) {
        assert!(e.to_string().starts_with("zone ywnds.com/IN: "), "{e}");
    }
}

/// A queue file, and so a maildrop file, which any local user can write
/// through postdrop: it opens as a message or as corrupt, never a crash;
/// what opens has its content where the size record says.
pub fn queue_file(data: &[u8]) {
    let path = std::env::temp_dir().join(format!("pfx-fuzz-queue-{}", std::process::id()));
    std::fs::write(&path, data).expect("write the queue file");
    let opened = pfx_queue::file::QueueFile::open(&path);
    // Nothing left behind; what opened stays readable, as for a delivery in progress.
    std::fs::remove_file(&path).expect("remove the queue file");
    if let Ok(qf) = opened {
        let _ = qf.pending().count();
        let _ = qf.attr("encoding");
        // Content records are read as a delivery reads them: a damaged one
        // is an InvalidData error (the message is deferred), never a panic.
        let mut content = Vec::new();
        match std::io::Read::read_to_end(&mut qf.content().expect("content"), &mut content) {
            Ok(_) => assert!(content.len() <= data.len()),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
        }
    }
}

/// One IPC frame of any message type (the first byte picks it): a frame
/// decodes to a message or to an error, and what decodes encodes back to
/// bytes that decode to the same encoding.
pub fn ipc_frame(data: &[u8]) {
    let Some((&which, frame)) = data.split_first() else {
        return;
    };
    match which % 13 {
        0 => frame_of::<pfx_ipc::Hello>(frame),
        1 => frame_of::<proto::CleanupRequest>(frame),
        2 => frame_of::<proto::CleanupReply>(frame),
        3 => frame_of::<proto::DeliveryRequest>(frame),
        4 => frame_of::<proto::DeliveryReply>(frame),
        5 => frame_of::<proto::BounceRequest>(frame),
        6 => frame_of::<proto::BounceReply>(frame),
        7 => frame_of::<proto::QueueEntry>(frame),
        8 => frame_of::<proto::ShowqReply>(frame),
        9 => frame_of::<proto::FlushRequest>(frame),
        10 => frame_of::<proto::FlushReply>(frame),
        11 => frame_of::<proto::DropEnvelope>(frame),
        _ => frame_of::<proto::Origin>(frame),
    }
}

fn frame_of<T: Serialize + DeserializeOwned>(frame: &[u8]) {
    let mut r = frame;
    let Ok(msg) = pfx_ipc::codec::read_frame::<T>(&mut r, pfx_ipc::DEFAULT_MAX_FRAME) else {
        return;
    };
    let bytes = pfx_ipc::codec::encode(&msg).expect("a decoded message encodes");
    let again: T = pfx_ipc::codec::decode(&bytes).expect("its encoding decodes");
    assert_eq!(pfx_ipc::codec::encode(&again).expect("encodes"), bytes);
}
