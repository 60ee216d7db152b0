//! Sessions driven over an in-memory pipe, with a cleanup stand-in on a
//! Unix socket: what a client sees, without starting an instance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pfx_ipc::proto::{conversation, endpoint, CleanupReply, CleanupRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::settings::Settings;
use crate::{session, Shared};

const CLIENT: &str = "192.0.2.10:40000";

/// A queue directory with a cleanup stand-in that accepts every message
/// and hands over (envelope sender, content) of each one committed, and
/// the request that began each message.
struct Instance {
    dir: tempfile::TempDir,
    queued: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    begun: mpsc::UnboundedReceiver<CleanupRequest>,
}

impl Instance {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join(endpoint::CLEANUP)).unwrap();
        let (tx, queued) = mpsc::unbounded_channel();
        let (btx, begun) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((conn, _)) = listener.accept().await {
                n += 1;
                let ch = pfx_ipc::Channel::new(conn);
                tokio::spawn(cleanup(ch, n, tx.clone(), btx.clone()));
            }
        });
        Self { dir, queued, begun }
    }

    fn settings(&self, main_cf: &str) -> Arc<Settings> {
        let dir = self.dir.path();
        let text = format!(
            "queue_directory = {}\nmyhostname = mx.example.com\nmydestination = example.com\n\
             mynetworks = 127.0.0.0/8\nsmtpd_peername_lookup = no\nalias_maps =\n\
             compatibility_level = 3.6\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             local_recipient_maps =\nlocal_passwd_file = /nonexistent\n{main_cf}",
            dir.display()
        );
        let cfg = pfx_config::Config::from_text(dir, &text).unwrap();
        Arc::new(Settings::new(Arc::new(cfg)).unwrap())
    }

    /// Writes `input` at once (a pipelining client), then reads every
    /// reply until the session ends.
    async fn converse(&self, main_cf: &str, input: &[u8]) -> String {
        let st = self.settings(main_cf);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let shared = Arc::new(Shared::new(self.dir.path()));
        let peer: SocketAddr = CLIENT.parse().unwrap();
        let session = tokio::spawn(session::run(st, server, peer, None, shared));
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        session.await.unwrap();
        String::from_utf8(out).unwrap()
    }
}

/// cleanup's side of the conversation, as far as smtpd needs it.
async fn cleanup(
    mut ch: pfx_ipc::Channel<tokio::net::UnixStream>,
    conn: u32,
    tx: mpsc::UnboundedSender<(String, Vec<u8>)>,
    begun: mpsc::UnboundedSender<CleanupRequest>,
) {
    ch.handshake(conversation::CLEANUP).await.unwrap();
    let mut message = None;
    let mut n = 0;
    while let Ok(Some(req)) = ch.recv::<CleanupRequest>().await {
        let reply = match req {
            CleanupRequest::Begin { ref sender, .. } => {
                let sender = sender.clone();
                let _ = begun.send(req);
                n += 1;
                message = Some((sender, Vec::new()));
                CleanupReply::Started {
                    queue_id: format!("4F{conn}A{n}"),
                }
            }
            CleanupRequest::Content(c) => {
                message.as_mut().unwrap().1.extend_from_slice(&c);
                continue;
            }
            // Shown to the tests as a mark on the sender.
            CleanupRequest::Hold => {
                message.as_mut().unwrap().0.insert_str(0, "held:");
                continue;
            }
            // The end-of-data restrictions of these tests ask for none.
            CleanupRequest::Actions(a) => panic!("unexpected actions {a:?}"),
            // No test sends so many recipients.
            CleanupRequest::Recipients(r) => panic!("unexpected recipients ahead {}", r.len()),
            CleanupRequest::End => {
                tx.send(message.take().unwrap()).unwrap();
                CleanupReply::Committed {
                    queue_id: format!("4F{conn}A{n}"),
                }
            }
            CleanupRequest::Abort => CleanupReply::Failed {
                temporary: true,
                reason: "aborted".into(),
            },
            // These unit tests configure no milters.
            CleanupRequest::Inspect
            | CleanupRequest::Edit(_)
            | CleanupRequest::BodyMore(_)
            | CleanupRequest::ChangeEnvelope(_)
            | CleanupRequest::EditsDone { .. } => panic!("milter request without milters"),
        };
        ch.send(&reply).await.unwrap();
    }
}

/// The reply lines, without their line ends.
fn lines(out: &str) -> Vec<&str> {
    out.split("\r\n").filter(|l| !l.is_empty()).collect()
}

/// The last line of each reply (EHLO's keywords but the last left out).
fn last_lines(out: &str) -> Vec<&str> {
    lines(out)
        .into_iter()
        .filter(|l| !l.starts_with("250-"))
        .collect()
}

/// The message body cleanup received, after smtpd's Received: header.
fn body(content: &[u8]) -> &str {
    let text = std::str::from_utf8(content).unwrap();
    let at = text.find(";").unwrap();
    &text[text[at..].find('\n').unwrap() + at + 1..]
}

#[tokio::test]
async fn greeting_and_ehlo_keywords() {
    let i = Instance::new();
    let out = i.converse("", b"EHLO client.example\r\nQUIT\r\n").await;
    assert_eq!(
        lines(&out),
        [
            "220 mx.example.com ESMTP Postfix",
            "250-mx.example.com",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-VRFY",
            "250-ETRN",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-DSN",
            "250-SMTPUTF8",
            "250 CHUNKING",
            "221 2.0.0 Bye",
        ]
    );
    let out = i
        .converse(
            "disable_vrfy_command = yes\nsmtputf8_enable = no\nmessage_size_limit = 5000\n",
            b"EHLO c\r\nHELO c\r\n",
        )
        .await;
    assert_eq!(
        lines(&out),
        [
            "220 mx.example.com ESMTP Postfix",
            "250-mx.example.com",
            "250-PIPELINING",
            "250-SIZE 5000",
            "250-ETRN",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-DSN",
            "250 CHUNKING",
            "250 mx.example.com",
        ]
    );
    // smtpd_discard_ehlo_keywords: hidden, and the command refused.
    let out = i
        .converse(
            "smtpd_discard_ehlo_keywords = chunking, etrn, silent-discard
",
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nBDAT 3 LAST\r\nabc",
        )
        .await;
    assert_eq!(
        lines(&out),
        [
            "220 mx.example.com ESMTP Postfix",
            "250-mx.example.com",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-VRFY",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-DSN",
            "250 SMTPUTF8",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "521 5.5.1 Error: command not implemented",
        ]
    );
}

#[tokio::test]
async fn bdat_chunks_make_one_message_byte_exact() {
    let mut i = Instance::new();
    // CRLF and bare LF end lines, a CR alone is content, a line spans
    // chunks, the last line has no line end; no dot-unstuffing.
    let input = b"EHLO c\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<u@example.com>\r\n\
        BDAT 12\r\nSubject: x\r\nBDAT 1\r\n\nBDAT 0\r\nNOOP\r\nBDAT 10\r\n.dot\rcr\r\r\nBDAT 4 LAST\r\nend.\
        MAIL FROM:<b@client.example>\r\nRCPT TO:<u@example.com>\r\nBDAT 0 LAST\r\nQUIT\r\n";
    let out = i.converse("", input).await;
    let replies = last_lines(&out);
    assert_eq!(
        replies,
        [
            "220 mx.example.com ESMTP Postfix",
            "250 CHUNKING",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: 12 bytes",
            "250 2.0.0 Ok: 1 bytes",
            "551 5.7.1 Null BDAT request",
            "250 2.0.0 Ok",
            "551 5.0.0 Discarded 10 bytes after earlier error",
            "551 5.0.0 Discarded 4 bytes after earlier error",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: 0 bytes queued as 4F1A2",
            "221 2.0.0 Bye",
        ]
    );
    // The first transaction failed at the null chunk: nothing queued; the
    // second is an empty message.
    let (sender, content) = i.queued.recv().await.unwrap();
    assert_eq!(sender, "b@client.example");
    assert_eq!(body(&content), "");
}

#[tokio::test]
async fn bdat_content_and_size_as_postfix_counts_it() {
    let mut i = Instance::new();
    let input = b"EHLO c\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<u@example.com>\r\n\
        BDAT 12\r\nSubject: x\r\nBDAT 1\r\n\nBDAT 10\r\n.dot\rcr\r\r\nBDAT 4 LAST\r\nend.QUIT\r\n";
    let out = i.converse("", input).await;
    assert!(
        out.contains("250 2.0.0 Ok: 30 bytes queued as 4F1A1\r\n"),
        "{out}"
    );
    let (_, content) = i.queued.recv().await.unwrap();
    assert_eq!(body(&content), "Subject: x\n\n.dot\rcr\r\nend.\n");
}

#[tokio::test]
async fn bdat_out_of_order_oversized_and_malformed() {
    let i = Instance::new();
    let out = i
        .converse(
            "message_size_limit = 10\n",
            b"EHLO c\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nxyMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n\
              BDAT 11 LAST\r\n01234567890RSET\r\nMAIL FROM:<a@b.example>\r\nBDAT 1 LAST\r\nxBDAT 1 FIRST\r\n",
        )
        .await;
    let replies = last_lines(&out);
    assert_eq!(
        replies,
        [
            "220 mx.example.com ESMTP Postfix",
            "250 CHUNKING",
            "503 5.5.1 Error: need RCPT command",
            "551 5.0.0 Discarded 2 bytes after earlier error",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "552 5.3.4 Chunk exceeds message size limit",
            "250 2.0.0 Ok",
            "250 2.1.0 Ok",
            "554 5.5.1 Error: no valid recipients",
            "521 5.5.4 Syntax: BDAT count [LAST]",
        ]
    );
}

/// RFC 3461 parameters as Postfix's smtpd takes them: the replies to bad
/// ones, and what cleanup is given (NOTIFY bits, ORCPT decoded, or the
/// address as given; ENVID decoded and RET as attributes).
#[tokio::test]
async fn dsn_parameters_are_checked_and_handed_to_cleanup() {
    let mut i = Instance::new();
    let out = i
        .converse(
            "",
            b"EHLO c\r\nMAIL FROM:<a@b.example> RET=BODY\r\nMAIL FROM:<a@b.example> ENVID=x+2\r\n\
              MAIL FROM:<a@b.example> RET=hdrs ENVID=id+2B1\r\n\
              RCPT TO:<u@example.com> NOTIFY=NEVER,DELAY\r\nRCPT TO:<u@example.com> ORCPT=;x\r\n\
              RCPT TO:<u@example.com> NOTIFY=success,failure ORCPT=rfc822;U+2Bx@example.com\r\n\
              RCPT TO:<v@example.com>\r\nRCPT TO:<w@example.com> ORCPT=utf-8;j\\x{F6}rg@example.com\r\n\
              DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
        )
        .await;
    let replies = last_lines(&out);
    assert_eq!(
        replies[2..8],
        [
            "501 5.5.4 Bad RET parameter syntax",
            "501 5.5.4 Bad ENVID parameter syntax",
            "250 2.1.0 Ok",
            "501 5.5.4 Error: Bad NOTIFY parameter syntax",
            "501 5.5.4 Error: Bad ORCPT parameter syntax",
            "250 2.1.5 Ok",
        ]
    );
    let Some(CleanupRequest::Begin {
        attrs, recipients, ..
    }) = i.begun.recv().await
    else {
        panic!("no message")
    };
    let attr = |n: &str| attrs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(attr("envelope_id"), Some("id+1"));
    assert_eq!(attr("ret_flags"), Some("2"));
    let dsn: Vec<(u32, Option<&str>)> = recipients
        .iter()
        .map(|r| (r.notify, r.orcpt.as_deref()))
        .collect();
    assert_eq!(
        dsn,
        [
            (6, Some("rfc822;U+x@example.com")),
            (0, Some("rfc822;v@example.com")),
            (0, Some("utf-8;jörg@example.com"))
        ]
    );
    // Discarded, the keyword is gone and its parameters refused.
    let out = i
        .converse(
            "smtpd_discard_ehlo_keywords = dsn\n",
            b"EHLO c\r\nMAIL FROM:<a@b.example> RET=FULL\r\n",
        )
        .await;
    assert!(!out.contains("DSN\r\n"), "{out}");
    assert!(
        out.ends_with("501 5.7.1 DSN support is disabled\r\n"),
        "{out}"
    );
}

/// Errors inside a BDAT transaction count toward `smtpd_hard_error_limit`
/// (after a failed chunk every further chunk is an error), and a chunk's
/// `250 Ok: N bytes` does not start the junk command count again.
#[tokio::test]
async fn bdat_transactions_reach_the_error_limits() {
    let i = Instance::new();
    let out = i
        .converse(
            "smtpd_hard_error_limit = 3\nmessage_size_limit = 4\n",
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n\
              BDAT 9\r\n012345678BDAT 1\r\nxBDAT 1\r\nyBDAT 1\r\nzBDAT 1\r\nw",
        )
        .await;
    let replies = last_lines(&out);
    assert_eq!(
        replies,
        [
            "220 mx.example.com ESMTP Postfix",
            "250 CHUNKING",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "552 5.3.4 Chunk exceeds message size limit",
            "551 5.0.0 Discarded 1 bytes after earlier error",
            "551 5.0.0 Discarded 1 bytes after earlier error",
            "421 4.7.0 mx.example.com Error: too many errors",
        ]
    );
    let i = Instance::new();
    let out = i
        .converse(
            "smtpd_junk_command_limit = 2\nsmtpd_hard_error_limit = 2\n",
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n\
              NOOP\r\nBDAT 1\r\nxNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nBDAT 1 LAST\r\ny",
        )
        .await;
    let replies = last_lines(&out);
    assert_eq!(
        replies.last(),
        Some(&"421 4.7.0 mx.example.com Error: too many errors"),
        "{replies:?}"
    );
}

#[tokio::test]
async fn pipelined_transaction_answered_in_order() {
    let mut i = Instance::new();
    let input = b"EHLO c\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<u@example.com>\r\n\
        RCPT TO:<nobody@elsewhere.example>\r\nRCPT TO:<v@example.com>\r\nDATA\r\n\
        Subject: hi\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@client.example>\r\nRCPT TO:<u@example.com>\r\n\
        DATA\r\nsecond\r\n.\r\nQUIT\r\n";
    let out = i.converse("", input).await;
    let replies = last_lines(&out);
    assert_eq!(
        replies,
        [
            "220 mx.example.com ESMTP Postfix",
            "250 CHUNKING",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "554 5.7.1 <nobody@elsewhere.example>: Relay access denied",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as 4F1A1",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            // The same cleanup connection serves the next message.
            "250 2.0.0 Ok: queued as 4F1A2",
            "221 2.0.0 Bye",
        ]
    );
    let (sender, content) = i.queued.recv().await.unwrap();
    assert_eq!(sender, "a@client.example");
    let text = std::str::from_utf8(&content).unwrap();
    assert!(
        text.starts_with("Received: from c (unknown [192.0.2.10])\n\tby mx.example.com (Postfix) with ESMTP id 4F1A1;"),
        "{text}"
    );
    assert_eq!(body(&content), "Subject: hi\n\nbody\n");
    assert_eq!(i.queued.recv().await.unwrap().0, "b@client.example");
}

#[tokio::test]
async fn sequence_errors() {
    let i = Instance::new();
    let cases: [(&str, &str, &[u8]); 7] = [
        (
            "",
            "503 5.5.1 Error: need MAIL command",
            b"RCPT TO:<u@example.com>\r\n",
        ),
        ("", "503 5.5.1 Error: need RCPT command", b"DATA\r\n"),
        (
            "",
            "554 5.5.1 Error: no valid recipients",
            b"MAIL FROM:<>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n",
        ),
        (
            "",
            "503 5.5.1 Error: nested MAIL command",
            b"MAIL FROM:<>\r\nMAIL FROM:<>\r\n",
        ),
        (
            "smtpd_helo_required = yes\n",
            "503 5.5.1 Error: send HELO/EHLO first",
            b"MAIL FROM:<>\r\n",
        ),
        (
            "",
            "503 Error: MAIL transaction in progress",
            b"MAIL FROM:<>\r\nETRN example.com\r\n",
        ),
        ("", "500 5.5.2 Error: command not recognized", b"FOO\r\n"),
    ];
    for (main_cf, want, input) in cases {
        let out = i.converse(main_cf, input).await;
        let last = *lines(&out).last().unwrap();
        assert_eq!(last, want, "{}", String::from_utf8_lossy(input));
    }
    // RSET forgets the transaction.
    let out = i
        .converse("", b"MAIL FROM:<>\r\nRSET\r\nRCPT TO:<u@example.com>\r\n")
        .await;
    assert_eq!(
        lines(&out)[1..],
        [
            "250 2.1.0 Ok",
            "250 2.0.0 Ok",
            "503 5.5.1 Error: need MAIL command"
        ]
    );
}

#[tokio::test]
async fn data_is_unstuffed_and_smuggling_is_not_a_message_end() {
    let mut i = Instance::new();
    // "..x" loses its first dot; a dot line after a bare LF, and a bare
    // CR before a dot, do not end the message (SMTP smuggling): the
    // commands after them are content.
    let input = b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n\
        ..x\r\nline\n.\r\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<v@example.com>\r\nDATA\r\n\
        smuggled\r.\r\nend\r\n.\r\nQUIT\r\n";
    let out = i.converse("", input).await;
    let l = lines(&out);
    assert_eq!(
        l[l.len() - 2..],
        ["250 2.0.0 Ok: queued as 4F1A1", "221 2.0.0 Bye"]
    );
    let (sender, content) = i.queued.recv().await.unwrap();
    assert_eq!(sender, "a@b.example");
    assert_eq!(
        body(&content),
        ".x\nline\n\nMAIL FROM:<evil@b.example>\nRCPT TO:<v@example.com>\nDATA\nsmuggled .\nend\n"
    );
    assert!(i.queued.try_recv().is_err(), "one message only");
}

#[tokio::test]
async fn message_size_limit() {
    let mut i = Instance::new();
    let limit = "message_size_limit = 1000\n";
    let out = i
        .converse(limit, b"EHLO c\r\nMAIL FROM:<a@b.example> SIZE=1001\r\n")
        .await;
    assert_eq!(
        *lines(&out).last().unwrap(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    let big = "x".repeat(998);
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n{big}\r\n{big}\r\n.\r\nRSET\r\n"
    );
    let out = i.converse(limit, input.as_bytes()).await;
    let l = lines(&out);
    assert_eq!(
        l[l.len() - 2..],
        ["552 5.3.4 Error: message file too big", "250 2.0.0 Ok"]
    );
    assert!(i.queued.try_recv().is_err(), "nothing queued");
}

#[tokio::test(start_paused = true)]
async fn idle_client_times_out() {
    let i = Instance::new();
    let st = i.settings("smtpd_timeout = 30s\n");
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let shared = Arc::new(Shared::new(i.dir.path()));
    let session = tokio::spawn(session::run(
        st,
        server,
        CLIENT.parse().unwrap(),
        None,
        shared,
    ));
    let started = tokio::time::Instant::now();
    client.write_all(b"HELO c\r\n").await.unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    session.await.unwrap();
    assert_eq!(
        lines(std::str::from_utf8(&out).unwrap()),
        [
            "220 mx.example.com ESMTP Postfix",
            "250 mx.example.com",
            "421 4.4.2 mx.example.com Error: timeout exceeded",
        ]
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_stage_list_rejects_with_postfix_words() {
    let i = Instance::new();
    let rcpt = b"HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n";
    for (main_cf, want) in [
        (
            "smtpd_client_restrictions = reject\n",
            "554 5.7.1 <unknown[192.0.2.10]>: Client host rejected: Access denied",
        ),
        (
            "smtpd_helo_restrictions = permit_mynetworks, defer\n",
            "450 4.3.2 <c.example>: Helo command rejected: Try again later",
        ),
        (
            "smtpd_sender_restrictions = reject\n",
            "554 5.7.1 <a@b.example>: Sender address rejected: Access denied",
        ),
        (
            "smtpd_recipient_restrictions = permit, reject\n",
            "250 2.1.5 Ok",
        ),
    ] {
        let out = i.converse(main_cf, rcpt).await;
        assert_eq!(*lines(&out).last().unwrap(), want, "{main_cf}");
    }
    let data = b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n";
    let out = i.converse("smtpd_data_restrictions = reject\n", data).await;
    assert_eq!(
        *lines(&out).last().unwrap(),
        "554 5.7.1 <DATA>: Data command rejected: Access denied"
    );
    let eod = [data.as_slice(), b"text\r\n.\r\n"].concat();
    let out = i
        .converse("smtpd_end_of_data_restrictions = reject\n", &eod)
        .await;
    assert_eq!(
        *lines(&out).last().unwrap(),
        "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"
    );
}

/// A Dovecot stand-in at `private/auth`: PLAIN and LOGIN, one user
/// `alice` with password `secret`. Hands over every AUTH request line.
fn dovecot(dir: &std::path::Path) -> mpsc::UnboundedReceiver<String> {
    use base64::Engine as _;
    use tokio::io::AsyncBufReadExt;
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    std::fs::create_dir_all(dir.join("private")).unwrap();
    let listener = tokio::net::UnixListener::bind(dir.join("private/auth")).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = conn.into_split();
                let mut lines = tokio::io::BufReader::new(r).lines();
                w.write_all(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nMECH\tANONYMOUS\tanonymous\nSPID\t1\nCUID\t1\nCOOKIE\tx\nDONE\n")
                    .await
                    .unwrap();
                // id -> user name given so far (LOGIN)
                let mut login: Option<(String, Option<String>)> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    let f: Vec<&str> = line.split('\t').collect();
                    let verdict = |id: &str, user: &str, pass: &str| {
                        if user == "alice" && pass == "secret" {
                            format!("OK\t{id}\tuser=alice\n")
                        } else {
                            format!("FAIL\t{id}\tuser={user}\n")
                        }
                    };
                    let reply = match f[0] {
                        "AUTH" => {
                            tx.send(line.clone()).unwrap();
                            let resp = f.iter().find_map(|p| p.strip_prefix("resp="));
                            match (f[2], resp) {
                                ("PLAIN", Some(r)) => {
                                    let raw = B64.decode(r).unwrap_or_default();
                                    let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                                    let s = |i: usize| {
                                        String::from_utf8_lossy(
                                            parts.get(i).copied().unwrap_or_default(),
                                        )
                                        .into_owned()
                                    };
                                    verdict(f[1], &s(1), &s(2))
                                }
                                ("LOGIN", None) => {
                                    login = Some((f[1].to_owned(), None));
                                    format!("CONT\t{}\tVXNlcm5hbWU6\n", f[1])
                                }
                                _ => {
                                    format!("FAIL\t{}\treason=unsupported in the stand-in\n", f[1])
                                }
                            }
                        }
                        "CONT" => {
                            let text = String::from_utf8(B64.decode(f[2]).unwrap_or_default())
                                .unwrap_or_default();
                            match login.take() {
                                Some((id, None)) => {
                                    login = Some((id.clone(), Some(text)));
                                    format!("CONT\t{id}\tUGFzc3dvcmQ6\n")
                                }
                                Some((id, Some(user))) => verdict(&id, &user, &text),
                                None => format!("FAIL\t{}\n", f[1]),
                            }
                        }
                        _ => continue,
                    };
                    w.write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    rx
}

const SASL: &str =
    "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\n\
    smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination\n";

#[tokio::test]
async fn auth_through_dovecot_opens_the_relay_and_nothing_secret_reaches_dovecot_twice() {
    let i = Instance::new();
    let mut requests = dovecot(i.dir.path());
    // AGFsaWNlAHNlY3JldA== is "\0alice\0secret".
    let input = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@elsewhere.example>\r\nRSET\r\n\
        AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<x@elsewhere.example>\r\n\
        AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nRSET\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n";
    let out = i.converse(SASL, input).await;
    let l = lines(&out);
    // Without TLS only what the default options allow: not ANONYMOUS.
    assert!(l.contains(&"250-AUTH PLAIN LOGIN"), "{out}");
    assert_eq!(
        l[l.len() - 9],
        "554 5.7.1 <x@elsewhere.example>: Relay access denied",
        "{out}"
    );
    assert_eq!(
        l[l.len() - 7],
        "235 2.7.0 Authentication successful",
        "{out}"
    );
    assert_eq!(l[l.len() - 5], "250 2.1.5 Ok", "{out}");
    assert_eq!(
        l[l.len() - 4],
        "503 5.5.1 Error: MAIL transaction in progress",
        "{out}"
    );
    assert_eq!(
        l[l.len() - 2],
        "503 5.5.1 Error: already authenticated",
        "{out}"
    );
    let req = requests.recv().await.unwrap();
    assert!(
        req.starts_with("AUTH\t")
            && req.contains("\tPLAIN\tservice=smtp\tnologin\t")
            && req.contains("\trip=192.0.2.10"),
        "{req}"
    );
    assert!(!req.contains("secured"), "not encrypted: {req}");
    assert!(requests.try_recv().is_err(), "one AUTH reached Dovecot");
}

#[tokio::test]
async fn login_exchange_abort_and_failures_count_toward_the_error_limit() {
    let i = Instance::new();
    let _requests = dovecot(i.dir.path());
    let main_cf = format!("{SASL}smtpd_hard_error_limit = 3\n");
    // LOGIN: "alice", then a wrong password; then an aborted exchange; a
    // mechanism Dovecot does not offer here; then the limit is reached.
    let input = b"EHLO c.example\r\nAUTH LOGIN\r\nYWxpY2U=\r\nd3Jvbmc=\r\nAUTH LOGIN\r\n*\r\nAUTH CRAM-MD5\r\nNOOP\r\n";
    let out = i.converse(&main_cf, input).await;
    let l = lines(&out);
    let tail: Vec<&str> = l.iter().rev().take(7).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "535 5.7.8 Error: authentication failed: (reason unavailable)",
            "334 VXNlcm5hbWU6",
            "501 5.7.0 Authentication aborted",
            "535 5.7.8 Error: authentication failed: Invalid authentication mechanism",
            "421 4.7.0 mx.example.com Error: too many errors",
        ],
        "{out}"
    );
}

#[tokio::test]
async fn auth_only_after_tls_and_hidden_from_exception_networks() {
    let i = Instance::new();
    let _requests = dovecot(i.dir.path());
    let input = b"EHLO c.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n";
    let out = i
        .converse(&format!("{SASL}smtpd_tls_auth_only = yes\n"), input)
        .await;
    assert!(!out.contains("AUTH PLAIN"), "{out}");
    assert!(
        out.contains("503 5.5.1 Error: authentication not enabled"),
        "{out}"
    );
    // Postfix hides AUTH from these clients but still lets them use it.
    let out = i
        .converse(
            &format!("{SASL}smtpd_sasl_exceptions_networks = 192.0.2.0/24\n"),
            input,
        )
        .await;
    assert!(!out.contains("250-AUTH"), "{out}");
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
}

#[tokio::test]
async fn responses_must_be_base64_and_within_the_response_limit() {
    let i = Instance::new();
    let _requests = dovecot(i.dir.path());
    let main_cf = format!("{SASL}smtpd_sasl_response_limit = 4096\n");
    let long = "QUFB".repeat(1500);
    let input = format!(
        "EHLO c.example\r\nAUTH PLAIN not*base64\r\nAUTH LOGIN\r\n{long}\r\nAUTH LOGIN\r\n@@@@\r\nQUIT\r\n"
    );
    let out = i.converse(&main_cf, input.as_bytes()).await;
    let l = lines(&out);
    let tail: Vec<&str> = l.iter().rev().take(6).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "535 5.7.8 Error: authentication failed: Invalid base64 data in initial response",
            "334 VXNlcm5hbWU6",
            "500 5.5.6 SASL response limit exceeded",
            "334 VXNlcm5hbWU6",
            "535 5.7.8 Error: authentication failed: Invalid base64 data in continued response",
            "221 2.0.0 Bye",
        ],
        "{out}"
    );
}

#[tokio::test]
async fn sender_login_maps_say_who_may_use_which_sender() {
    let i = Instance::new();
    let _requests = dovecot(i.dir.path());
    let table = i.dir.path().join("senders");
    std::fs::write(
        &table,
        "alice@example.com alice\n@shared.example alice, bob\nbob@example.com bob\n",
    )
    .unwrap();
    let main_cf = format!(
        "{SASL}recipient_delimiter = +\nsmtpd_sender_login_maps = texthash:{}\nsmtpd_sender_restrictions = reject_sender_login_mismatch\n",
        table.display()
    );
    let rcpt = |from: &str, auth: bool| {
        let auth = if auth {
            "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"
        } else {
            ""
        };
        format!("EHLO c.example\r\n{auth}MAIL FROM:<{from}>\r\nRCPT TO:<u@example.com>\r\nQUIT\r\n")
    };
    for (from, auth, want) in [
        ("alice@example.com", true, "250 2.1.5 Ok"),
        ("alice+lists@example.com", true, "250 2.1.5 Ok"),
        ("anyone@shared.example", true, "250 2.1.5 Ok"),
        (
            "bob@example.com",
            true,
            "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice",
        ),
        // Not in the table at all: not owned either.
        (
            "x@elsewhere.example",
            true,
            "553 5.7.1 <x@elsewhere.example>: Sender address rejected: not owned by user alice",
        ),
        (
            "bob@example.com",
            false,
            "553 5.7.1 <bob@example.com>: Sender address rejected: not logged in",
        ),
        ("x@elsewhere.example", false, "250 2.1.5 Ok"),
    ] {
        let out = i.converse(&main_cf, rcpt(from, auth).as_bytes()).await;
        let l = lines(&out);
        assert_eq!(l[l.len() - 2], want, "{from} {auth}: {out}");
    }
}

/// An anvil stand-in under the instance's queue directory that counts as
/// anvil does within one time unit; returns how many requests it answered.
fn anvil_stand_in(i: &Instance) -> Arc<std::sync::atomic::AtomicUsize> {
    use pfx_ipc::proto::{AnvilEvent as E, AnvilReply, AnvilRequest};
    use std::collections::HashMap;
    std::fs::create_dir_all(i.dir.path().join("private")).unwrap();
    let listener = tokio::net::UnixListener::bind(i.dir.path().join(endpoint::ANVIL)).unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    tokio::spawn(async move {
        // Per ident: connections open, and per event the count so far.
        let seen = Arc::new(std::sync::Mutex::new(
            HashMap::<String, (u32, [u32; 8])>::new(),
        ));
        while let Ok((conn, _)) = listener.accept().await {
            let (seen, counted) = (seen.clone(), counted.clone());
            tokio::spawn(async move {
                let mut ch = pfx_ipc::Channel::new(conn);
                ch.handshake(conversation::ANVIL).await.unwrap();
                while let Ok(Some(req)) = ch.recv::<AnvilRequest>().await {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let reply = {
                        let mut seen = seen.lock().unwrap();
                        let (open, events) = seen.entry(req.ident).or_default();
                        let at = req.event as usize;
                        match req.event {
                            E::Disconnect => *open -= 1,
                            E::NewTlsStatus | E::Lookup => {}
                            _ => events[at] += 1,
                        }
                        match req.event {
                            E::Connect => {
                                *open += 1;
                                AnvilReply::Connected {
                                    count: *open,
                                    rate: events[at],
                                }
                            }
                            E::Disconnect => AnvilReply::Done,
                            E::NewTlsStatus => AnvilReply::Rate(events[E::NewTls as usize]),
                            E::Lookup => unreachable!("smtpd does not look up"),
                            _ => AnvilReply::Rate(events[at]),
                        }
                    };
                    ch.send(&reply).await.unwrap();
                }
            });
        }
    });
    asked
}

#[tokio::test]
async fn client_limits_refuse_with_postfix_replies() {
    let i = Instance::new();
    anvil_stand_in(&i);
    let limits = "smtpd_client_message_rate_limit = 1\nsmtpd_client_recipient_rate_limit = 2\n\
                  smtpd_client_connection_rate_limit = 2\n";
    let input = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n\
        VRFY v@example.com\r\nRCPT TO:<w@example.com>\r\nRSET\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n";
    let out = i.converse(limits, input).await;
    let replies = last_lines(&out);
    assert_eq!(
        replies,
        [
            "220 mx.example.com ESMTP Postfix",
            "250 CHUNKING",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "252 2.0.0 v@example.com",
            // VRFY counted as a recipient.
            "450 4.7.1 Error: too many recipients from 192.0.2.10",
            "250 2.0.0 Ok",
            "450 4.7.1 Error: too much mail from 192.0.2.10",
            "221 2.0.0 Bye",
        ]
    );
    // The third connection in the time unit gets no banner.
    i.converse(limits, b"QUIT\r\n").await;
    let out = i.converse(limits, b"QUIT\r\n").await;
    assert_eq!(
        lines(&out),
        ["421 4.7.0 mx.example.com Error: too many connections from 192.0.2.10"]
    );
}

#[tokio::test]
async fn exempt_clients_and_unset_limits_send_anvil_nothing() {
    let i = Instance::new();
    let asked = anvil_stand_in(&i);
    let input = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nQUIT\r\n";
    let n = || asked.load(std::sync::atomic::Ordering::Relaxed);
    i.converse("", input).await;
    assert_eq!(n(), 2, "the default count limit: connect and disconnect");
    let exempt =
        "smtpd_client_message_rate_limit = 1\nsmtpd_client_event_limit_exceptions = 192.0.2.0/24\n";
    i.converse(exempt, input).await;
    let off = "smtpd_client_connection_count_limit = 0\n";
    i.converse(off, input).await;
    assert_eq!(n(), 2);
}
