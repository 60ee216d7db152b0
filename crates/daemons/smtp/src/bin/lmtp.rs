//! lmtp(8): delivers mail to a final delivery server (Dovecot, Cyrus) over
//! LMTP, through a UNIX-domain socket or TCP. It is smtp(8) in LMTP mode,
//! as Postfix's lmtp is its smtp program under another name; see
//! docs/man/lmtp.md.

fn main() {
    smtp::run(smtp::Mode::Lmtp)
}
