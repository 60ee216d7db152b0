//! smtp(8): delivers mail to other hosts over SMTP (see the library's
//! documentation: the client is shared with lmtp(8)).

fn main() {
    smtp::run(smtp::Mode::Smtp)
}
