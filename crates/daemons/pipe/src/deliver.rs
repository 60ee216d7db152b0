//! One delivery request: the command's argument vector from the `$name`
//! macros (a recipient macro gives one argument per recipient), the message
//! on its standard input as `flags=` say, and its exit status read as
//! Postfix's pipe(8) reads it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pfx_command::Ended;
use pfx_config::{BuildError, Config};
use pfx_ipc::proto::DeliveryRequest;
use pfx_maillog::delivery::{Class, Outcome};
use pfx_queue::file::QueueFile;
use pfx_queue::Queue;
use tracing::{info, warn};

use crate::attrs::Attrs;

/// What a service needs, per configuration.
pub(crate) struct Agent {
    pub(crate) attrs: Attrs,
    pub(crate) service: String,
    pub(crate) queue: Queue,
    pub(crate) delimiter: String,
    pub(crate) time_limit: Duration,
    /// `export_environment`, with values, and PATH.
    pub(crate) env: Vec<(String, String)>,
}

impl Agent {
    pub(crate) fn new(cfg: &Config, service: &str, args: &[String]) -> Result<Self, BuildError> {
        let attrs = Attrs::parse(args, &cfg.get("mail_owner")?, &cfg.get("setgid_group")?)?;
        let time_limit = cfg
            .time(&format!("{service}_time_limit"))
            .or_else(|_| cfg.time("command_time_limit"))?;
        let mut env: Vec<(String, String)> = cfg
            .list("export_environment")?
            .into_iter()
            .filter_map(|n| match n.split_once('=') {
                Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                None => std::env::var(&n).ok().map(|v| (n, v)),
            })
            .collect();
        env.push(("PATH".into(), "/usr/bin:/bin".into()));
        Ok(Self {
            attrs,
            service: service.to_owned(),
            queue: Queue::new(cfg.get("queue_directory")?),
            delimiter: cfg.get("recipient_delimiter")?,
            time_limit,
            env,
        })
    }
}

/// The outcome a status code says; the relay (the service) is filled in
/// when the request is answered.
fn verdict(dsn: &str, reason: impl Into<String>) -> Outcome {
    Outcome::new(Class::of_dsn(dsn), dsn, "none", reason)
}

/// A local part as RFC 822 needs it: quoted unless it is a dot-atom.
fn quote_local(local: &str) -> String {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(atext));
    if dot_atom {
        local.to_owned()
    } else {
        format!("\"{}\"", local.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// An address with `flags=` applied: `u` folds the local part, `h` the
/// domain, `q` quotes the local part.
fn address(a: &Attrs, addr: &str) -> (String, String) {
    let (local, domain) = pfx_address::split(addr);
    let mut local = pfx_address::unquote(local);
    if a.flags.fold_user {
        local = local.to_lowercase();
    }
    let domain = if a.flags.fold_host {
        domain.to_lowercase()
    } else {
        domain.to_owned()
    };
    (local, domain)
}

fn joined(a: &Attrs, local: &str, domain: &str) -> String {
    let l = if a.flags.quote {
        quote_local(local)
    } else {
        local.to_owned()
    };
    if domain.is_empty() {
        l
    } else {
        format!("{l}@{domain}")
    }
}

const PER_RECIPIENT: [&str; 6] = [
    "recipient",
    "original_recipient",
    "user",
    "extension",
    "mailbox",
    "domain",
];
const KNOWN: [&str; 18] = [
    "client_address",
    "client_helo",
    "client_hostname",
    "client_port",
    "client_protocol",
    "domain",
    "extension",
    "mailbox",
    "nexthop",
    "original_recipient",
    "queue_id",
    "recipient",
    "sasl_method",
    "sasl_sender",
    "sasl_username",
    "sender",
    "size",
    "user",
];

/// The names of the macros in one argument, in order; an error names an
/// unknown one.
fn macros(arg: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let b = arg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        i += 1;
        let name = match b.get(i) {
            Some(b'$') => {
                i += 1;
                continue;
            }
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let end = b[i..]
                    .iter()
                    .position(|&c| c == close)
                    .map(|p| i + p)
                    .ok_or_else(|| arg.to_owned())?;
                let n = &arg[i + 1..end];
                i = end + 1;
                n
            }
            _ => {
                let end = b[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(b.len(), |p| i + p);
                let n = &arg[i..end];
                i = end;
                n
            }
        };
        if !KNOWN.contains(&name) {
            return Err(name.to_owned());
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// Expands one argument with `values`.
fn expand(arg: &str, values: &HashMap<&str, String>) -> String {
    let mut out = String::new();
    let b = arg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = b[i..]
                .iter()
                .position(|&c| c == b'$')
                .map_or(b.len(), |p| i + p);
            out.push_str(&arg[i..next]);
            i = next;
            continue;
        }
        i += 1;
        let name = match b.get(i) {
            Some(b'$') => {
                out.push('$');
                i += 1;
                continue;
            }
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let end = b[i..]
                    .iter()
                    .position(|&c| c == close)
                    .map_or(b.len(), |p| i + p);
                let n = &arg[i + 1..end.min(b.len())];
                i = end + 1;
                n
            }
            _ => {
                let end = b[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(b.len(), |p| i + p);
                let n = &arg[i..end];
                i = end;
                n
            }
        };
        out.push_str(values.get(name).map_or("", String::as_str));
    }
    out
}

/// The command's arguments for this request.
fn argv(agent: &Agent, qf: &QueueFile, req: &DeliveryRequest) -> Result<Vec<String>, String> {
    let a = &agent.attrs;
    let mut common: HashMap<&str, String> = HashMap::new();
    // The sender is quoted (`q`), never folded.
    let sender = if req.sender.is_empty() {
        a.null_sender.clone()
    } else {
        let (l, d) = pfx_address::split(&req.sender);
        let l = pfx_address::unquote(l);
        let l = if a.flags.quote { quote_local(&l) } else { l };
        if d.is_empty() {
            l
        } else {
            format!("{l}@{d}")
        }
    };
    common.insert("sender", sender);
    common.insert(
        "nexthop",
        if a.flags.fold_host {
            req.nexthop.to_lowercase()
        } else {
            req.nexthop.clone()
        },
    );
    common.insert("size", qf.content_len.to_string());
    common.insert("queue_id", req.queue_id.clone());
    let attr = |n: &str| qf.attr(n).unwrap_or_default().to_owned();
    common.insert("client_address", attr("client_address"));
    common.insert("client_hostname", attr("client_name"));
    common.insert("client_helo", attr("helo_name"));
    common.insert("client_protocol", attr("protocol"));
    for n in ["client_port", "sasl_method", "sasl_sender", "sasl_username"] {
        common.insert(n, attr(n));
    }
    let mut out = Vec::new();
    for arg in &a.argv {
        let names = macros(arg).map_err(|name| format!("unknown macro name: \"{name}\""))?;
        if !names.iter().any(|n| PER_RECIPIENT.contains(&n.as_str())) {
            out.push(expand(arg, &common));
            continue;
        }
        for r in &req.recipients {
            let (local, domain) = address(a, &r.address);
            let (user, extension) = match a_delimited(&local, &agent.delimiter) {
                Some((u, x)) => (u.to_owned(), x.to_owned()),
                None => (local.clone(), String::new()),
            };
            if domain.is_empty() {
                warn!("no @ in recipient address: {}", r.address);
            }
            let orig = r.original.as_deref().unwrap_or(&r.address);
            let (ol, od) = address(a, orig);
            let mut v = common.clone();
            v.insert("recipient", joined(a, &local, &domain));
            v.insert("original_recipient", joined(a, &ol, &od));
            v.insert("mailbox", local.clone());
            v.insert("domain", domain);
            v.insert("extension", extension);
            if user.is_empty() && names.iter().any(|n| n == "user") {
                continue; // Postfix drops the argument.
            }
            v.insert("user", user);
            out.push(expand(arg, &v));
        }
    }
    if out.is_empty() {
        // The command itself was a ${user} argument and the user is empty.
        return Err("empty command".into());
    }
    Ok(out)
}

/// `user+ext`: (user, ext) at the first delimiter character.
fn a_delimited<'a>(local: &'a str, delimiter: &str) -> Option<(&'a str, &'a str)> {
    let (i, c) = local.char_indices().find(|&(_, c)| delimiter.contains(c))?;
    Some((&local[..i], &local[i + c.len_utf8()..]))
}

/// The bytes the command reads: the lines `flags=` adds, then the message
/// with each line end as `eol=` says.
fn stdin_bytes(a: &Attrs, qf: &QueueFile, req: &DeliveryRequest) -> Result<Vec<u8>, String> {
    let eol = &a.eol;
    let mut out = Vec::new();
    let sender = if req.sender.is_empty() {
        a.null_sender.clone()
    } else {
        req.sender.clone()
    };
    if a.flags.from_line {
        let from = if sender.is_empty() {
            "MAILER-DAEMON".into()
        } else {
            sender.clone()
        };
        out.extend_from_slice(
            format!("From {from}  {}", pfx_sys::time::asctime(SystemTime::now())).as_bytes(),
        );
        out.extend_from_slice(eol);
    }
    if a.flags.return_path {
        out.extend_from_slice(format!("Return-Path: <{sender}>").as_bytes());
        out.extend_from_slice(eol);
    }
    if let Some(r) = req.recipients.first() {
        if a.flags.original_to {
            let orig = r.original.as_deref().unwrap_or(&r.address);
            out.extend_from_slice(format!("X-Original-To: {orig}").as_bytes());
            out.extend_from_slice(eol);
        }
        if a.flags.delivered_to {
            let (l, d) = address(a, &r.address);
            out.extend_from_slice(format!("Delivered-To: {}", joined(a, &l, &d)).as_bytes());
            out.extend_from_slice(eol);
        }
    }
    let mut content = Vec::new();
    qf.content()
        .and_then(|mut c| c.read_to_end(&mut content))
        .map_err(|e| format!("read message: {e}"))?;
    let mut lines = content.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break; // after the last line end
        }
        if a.flags.dot && line.first() == Some(&b'.') {
            out.push(b'.');
        }
        if a.flags.from_quote && line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    if a.flags.blank_line {
        out.extend_from_slice(eol);
    }
    Ok(out)
}

/// Reads the command's end as Postfix's pipe does: 0 is delivered via the
/// service, the rest as pipe_command reads it (`pfx_command::failure`).
fn exit_outcome(service: &str, argv0: &str, ended: Ended, output: &str) -> Outcome {
    if let Some(failed) = pfx_command::failure(ended, argv0, output) {
        return failed;
    }
    let out = output.trim_end();
    if out.is_empty() {
        verdict("2.0.0", format!("delivered via {service} service"))
    } else {
        let out: String = out.chars().take(100).collect();
        verdict("2.0.0", format!("delivered via {service} service ({out})"))
    }
}

/// Runs the command; `Err` when it could not be started.
async fn run(agent: &Agent, argv: &[String], input: Vec<u8>) -> Result<(Ended, String), String> {
    let a = &agent.attrs;
    let cwd = a
        .directory
        .clone()
        .unwrap_or_else(|| agent.queue.root().display().to_string());
    let spec = pfx_command::Spec {
        argv,
        env: &agent.env,
        cwd: std::path::Path::new(&cwd),
        uid: a.uid,
        gid: a.gid,
        time_limit: agent.time_limit,
    };
    pfx_command::run(&spec, input).await
}

/// Delivers one request and logs each recipient's outcome.
pub(crate) async fn request(agent: &Arc<Agent>, req: &DeliveryRequest) -> Vec<Outcome> {
    let start = SystemTime::now();
    let mut outcome =
        match QueueFile::open_for_delivery(&agent.queue.path(req.queue, &req.queue_id)) {
            Err(e) => verdict("4.3.0", format!("read message: {e}")),
            Ok(qf) => deliver(agent, &qf, req).await,
        };
    outcome.relay.clone_from(&agent.service);
    let t = req.times(start, start);
    req.recipients
        .iter()
        .map(|r| {
            info!(
                "{}: {}",
                req.queue_id,
                outcome.line(&r.address, r.original.as_deref(), t)
            );
            outcome.clone()
        })
        .collect()
}

async fn deliver(agent: &Agent, qf: &QueueFile, req: &DeliveryRequest) -> Outcome {
    let a = &agent.attrs;
    for (on, flag) in [(a.flags.delivered_to, 'D'), (a.flags.original_to, 'O')] {
        if on && req.recipients.len() > 1 {
            warn!(
                "pipe flag `{flag}' requires {}_destination_recipient_limit = 1",
                agent.service
            );
            return verdict("4.3.5", "mail system configuration error");
        }
    }
    if let Some(limit) = a.size {
        if qf.content_len > limit {
            return verdict("5.2.3", "message too large");
        }
    }
    if a.flags.delivered_to {
        if let Some(r) = req.recipients.first() {
            if delivered_to(qf)
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&r.address))
            {
                return verdict("5.4.6", format!("mail forwarding loop for {}", r.address));
            }
        }
    }
    let argv = match argv(agent, qf, req) {
        Ok(v) => v,
        Err(why) => {
            warn!("file master.cf: service {}: {why}", agent.service);
            return verdict("4.3.5", "mail system configuration error");
        }
    };
    let input = match stdin_bytes(a, qf, req) {
        Ok(i) => i,
        Err(e) => return verdict("4.3.0", e),
    };
    match run(agent, &argv, input).await {
        Ok((ended, output)) => exit_outcome(&agent.service, &argv[0], ended, &output),
        Err(e) => verdict(
            "4.3.0",
            format!("temporary failure. Command output: pipe: fatal: {e} "),
        ),
    }
}

/// The `Delivered-To:` headers of the message.
fn delivered_to(qf: &QueueFile) -> Vec<String> {
    let mut content = Vec::new();
    let _ = qf.content().and_then(|mut c| c.read_to_end(&mut content));
    String::from_utf8_lossy(&content)
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("delivered-to")
                .then(|| v.trim().to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delimiter_beyond_ascii_splits_on_its_character() {
        assert_eq!(a_delimited("user§ext", "§"), Some(("user", "ext")));
        assert_eq!(a_delimited("user+ext", "-+"), Some(("user", "ext")));
        assert_eq!(a_delimited("user", "+"), None);
    }

    #[test]
    fn macros_and_their_expansion() {
        assert_eq!(macros("-d ${recipient}").unwrap(), ["recipient"]);
        assert_eq!(macros("$sender$(size)x$$").unwrap(), ["sender", "size"]);
        assert_eq!(macros("${foo}").unwrap_err(), "foo");
        let v: HashMap<&str, String> =
            [("sender", "a@b".to_owned()), ("size", "12".to_owned())].into();
        assert_eq!(
            expand("-f$sender:${size}:$(size)a$$b", &v),
            "-fa@b:12:12a$b"
        );
    }

    #[test]
    fn exit_statuses_read_as_postfix_reads_them() {
        let v = |e, out: &str| {
            let v = exit_outcome("ptest", "/bin/x", e, out);
            (v.class.as_str(), v.dsn, v.reason)
        };
        assert_eq!(
            v(Ended::Exited(0), ""),
            ("sent", "2.0.0".into(), "delivered via ptest service".into())
        );
        assert_eq!(
            v(Ended::Exited(0), "captured ok "),
            (
                "sent",
                "2.0.0".into(),
                "delivered via ptest service (captured ok)".into()
            )
        );
        assert_eq!(
            v(Ended::Exited(75), ""),
            ("deferred", "4.3.0".into(), "temporary failure".into())
        );
        assert_eq!(
            v(Ended::Exited(67), "x "),
            (
                "bounced",
                "5.1.1".into(),
                "user unknown. Command output: x ".into()
            )
        );
        assert_eq!(
            v(Ended::Exited(1), "4.2.2 mailbox full, try later "),
            (
                "deferred",
                "4.2.2".into(),
                "mailbox full, try later ".into()
            )
        );
        assert_eq!(
            v(Ended::Exited(1), "some output "),
            (
                "bounced",
                "5.3.0".into(),
                "Command died with status 1: \"/bin/x\". Command output: some output ".into()
            )
        );
        assert_eq!(
            v(Ended::Signal(15), ""),
            (
                "deferred",
                "4.3.0".into(),
                "Command died with signal 15: \"/bin/x\"".into()
            )
        );
        assert_eq!(
            v(Ended::TimedOut, ""),
            (
                "bounced",
                "5.3.0".into(),
                "Command time limit exceeded: \"/bin/x\"".into()
            )
        );
    }

    #[test]
    fn local_parts_are_quoted_only_when_they_must_be() {
        assert_eq!(quote_local("a.b+c"), "a.b+c");
        assert_eq!(quote_local("sen der"), "\"sen der\"");
        assert_eq!(quote_local("a..b"), "\"a..b\"");
    }
}
