//! `sendmail -bs`: an SMTP conversation on standard input and output, for
//! programs that submit that way. Each message goes through postdrop like
//! any other local submission; the reply to DATA carries its maildrop ID.
//! The dialogue follows smtpd's replies; the end of DATA is only
//! `CRLF.CRLF`, as in smtpd.

use std::io::{BufRead, Write};
use std::path::Path;

use pfx_config::Config;
use pfx_ipc::proto::DropEnvelope;
use pfx_smtp_proto::command::{parse_command, Command};
use pfx_smtp_proto::data::{DataDecoder, Progress};
use pfx_smtp_proto::{multiline, Reply};

use crate::submit::{envelope_address, postdrop};
use crate::Options;

pub(crate) fn run(cfg: &Config, config_dir: &Path, _opts: &Options) -> ! {
    let get = |n: &str| cfg.get(n).unwrap_or_default();
    let host = get("myhostname");
    let limit = usize::try_from(cfg.int("message_size_limit").unwrap_or(0)).unwrap_or(0);
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut say = |r: &Reply| {
        let _ = out.write_all(r.to_wire().as_bytes());
        let _ = out.flush();
    };
    say(&Reply::plain(220, get("smtpd_banner")));
    let mut sender: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            std::process::exit(0);
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let reply = match parse_command(text) {
            Err(e) => e.reply,
            Ok(Command::Helo(_)) => {
                (sender, rcpts) = (None, Vec::new());
                Reply::plain(250, host.clone())
            }
            Ok(Command::Ehlo(_)) => {
                (sender, rcpts) = (None, Vec::new());
                let lines = [host.clone(), "PIPELINING".into(), format!("SIZE {limit}")]
                    .into_iter()
                    .chain(["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"].map(String::from))
                    .collect::<Vec<_>>();
                multiline(250, &lines)
            }
            Ok(Command::Mail { addr, .. }) if sender.is_none() => {
                sender = Some(envelope_address(&addr));
                Reply::new(250, "2.1.0", "Ok")
            }
            Ok(Command::Mail { .. }) => Reply::new(503, "5.5.1", "Error: nested MAIL command"),
            Ok(Command::Rcpt { .. }) if sender.is_none() => {
                Reply::new(503, "5.5.1", "Error: need MAIL command")
            }
            Ok(Command::Rcpt { addr, .. }) => {
                rcpts.push(envelope_address(&addr));
                Reply::new(250, "2.1.5", "Ok")
            }
            Ok(Command::Data { .. }) if sender.is_none() => {
                Reply::new(503, "5.5.1", "Error: need RCPT command")
            }
            Ok(Command::Data { .. }) if rcpts.is_empty() => {
                Reply::new(554, "5.5.1", "Error: no valid recipients")
            }
            Ok(Command::Data { arguments: true }) => pfx_smtp_proto::data_syntax(),
            Ok(Command::Data { arguments: false }) => {
                say(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
                let Some(content) = read_data(&mut input, limit) else {
                    std::process::exit(0);
                };
                let env = DropEnvelope {
                    sender: sender.take().unwrap_or_default(),
                    full_name: None,
                    recipients: std::mem::take(&mut rcpts),
                    dsn_notify: 0,
                    dsn_ret: 0,
                    dsn_envid: None,
                };
                match content {
                    Err(()) => Reply::new(552, "5.3.4", "Error: message file too big"),
                    Ok(content) => match postdrop(cfg, config_dir, &env, &content) {
                        Ok(id) => Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
                        Err(_) => Reply::new(451, "4.3.0", "Error: queue file write error"),
                    },
                }
            }
            Ok(Command::Rset) => {
                (sender, rcpts) = (None, Vec::new());
                Reply::new(250, "2.0.0", "Ok")
            }
            Ok(Command::Noop) => Reply::new(250, "2.0.0", "Ok"),
            Ok(Command::Vrfy(text)) => match pfx_smtp_proto::vrfy_address(&text) {
                Ok(_) => Reply::new(252, "2.0.0", text),
                Err(r) => r,
            },
            Ok(Command::Quit) => {
                say(&Reply::new(221, "2.0.0", "Bye"));
                std::process::exit(0);
            }
            Ok(Command::Proxy { verb, arguments }) => {
                pfx_smtp_proto::proxy_reply(verb, arguments, sender.is_some())
            }
            // No client is authorized to forward here (sendmail -bs).
            Ok(Command::Xforward(args)) => {
                pfx_smtp_proto::proxy_reply("xforward", !args.is_empty(), sender.is_some())
            }
            // CHUNKING is not offered here: the chunk's bytes would follow
            // as commands, so the client is hung up on.
            Ok(Command::Bdat(_)) => {
                say(&Reply::new(521, "5.5.1", "Error: command not implemented"));
                std::process::exit(0);
            }
            // Postfix's replies where neither TLS nor SASL is configured.
            Ok(Command::StartTls { .. }) => {
                Reply::new(502, "5.5.1", "Error: command not implemented")
            }
            Ok(Command::Auth(_)) => Reply::new(503, "5.5.1", "Error: authentication not enabled"),
            // Not offered here: ETRN is for clients of the SMTP port.
            Ok(Command::Unknown(_) | Command::Etrn(_)) => {
                Reply::new(500, "5.5.2", "Error: command not recognized")
            }
            Ok(Command::NonSmtp(_)) => {
                say(&pfx_smtp_proto::non_smtp_goodbye());
                std::process::exit(0);
            }
        };
        say(&reply);
    }
}

/// The message after `354`, up to `CRLF.CRLF`: `None` at end of input,
/// `Err` when it passed the size limit (the rest is read and dropped).
fn read_data(input: &mut impl BufRead, limit: usize) -> Option<Result<Vec<u8>, ()>> {
    let mut dec = DataDecoder::new();
    let mut content = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let done = matches!(dec.feed(&line, &mut content), Progress::Done { .. });
        if limit > 0 && content.len() > limit {
            too_big = true;
            content.clear();
        }
        if done {
            return Some(if too_big { Err(()) } else { Ok(content) });
        }
    }
}
