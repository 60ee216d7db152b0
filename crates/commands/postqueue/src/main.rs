//! postqueue(1): the mail queue for every user, through the mail system's
//! own services (it is installed set-group-ID `$setgid_group`, so it can
//! reach `public/` but never reads or changes queue files itself).
//!
//! - `-p` lists the queue (showq), `-j` lists it as JSON lines;
//! - `-f` has qmgr retry all deferred mail now;
//! - `-i ID` and `-s SITE` have flush deliver one message, or the mail for
//!   one destination in `$fast_flush_domains`, now.
//!
//! Exit status 69 (EX_UNAVAILABLE) when the mail system is down or on a
//! usage error, as Postfix's.

use std::path::{Path, PathBuf};

use clap::Parser;
use pfx_config::Config;
use pfx_ipc::proto::{
    conversation, endpoint, trigger, FlushReply, FlushRequest, QueueEntry, ShowqReply,
};
use pfx_maillog::fatal_status;
use pfx_queue::listing;
use pfx_queue::Queue;

const USAGE: &str =
    "postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site";
/// sysexits.h EX_UNAVAILABLE.
const EX_UNAVAILABLE: i32 = 69;

#[derive(Parser, Debug)]
#[command(
    name = "postqueue",
    version,
    about = "List or flush the postfix-rs mail queue"
)]
struct Args {
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Deliver all queued mail now.
    #[arg(short = 'f')]
    flush: bool,
    /// Deliver the deferred message with this queue ID now.
    #[arg(short = 'i', value_name = "QUEUE_ID")]
    queue_id: Vec<String>,
    /// List the queue as JSON, one object per message.
    #[arg(short = 'j')]
    json: bool,
    /// List the queue (the mailq report).
    #[arg(short = 'p')]
    print: bool,
    /// Deliver the deferred mail for this destination now.
    #[arg(short = 's', value_name = "SITE")]
    site: Vec<String>,
    /// Verbose logging.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() {
    let args: Args = pfx_cli::parse_args_status("postqueue", USAGE, EX_UNAVAILABLE);
    let dir = args.config.setgid_dir();
    let cfg = pfx_cli::load_config(&dir);
    let _ = pfx_maillog::init(
        &cfg,
        pfx_maillog::Options {
            service: "postqueue".into(),
            stderr_name: Some("postqueue".into()),
            stderr_info: true,
            verbose: args.verbose > 0,
        },
    );
    let queue_dir = PathBuf::from(
        cfg.get("queue_directory")
            .unwrap_or_else(|e| fatal_status(EX_UNAVAILABLE, e)),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal_status(EX_UNAVAILABLE, e));
    let modes = [
        args.print,
        args.json,
        args.flush,
        !args.queue_id.is_empty(),
        !args.site.is_empty(),
    ];
    if modes.iter().filter(|m| **m).count() != 1 {
        fatal_status(EX_UNAVAILABLE, format!("usage: {USAGE}"));
    }
    if args.print || args.json {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut report = postqueue::Report::default();
        // Printed as it comes: a deep queue is never held whole. A reader
        // gone away (`postqueue -p | head`) ends the listing.
        let mut print = |e: QueueEntry| {
            let text = if args.json {
                postqueue::json_line(&e)
            } else {
                report.entry(&e)
            };
            out.write_all(text.as_bytes()).is_ok()
        };
        rt.block_on(list(&cfg, &queue_dir, &mut print));
        if !args.json {
            let _ = out.write_all(report.end().as_bytes());
        }
        let _ = out.flush();
    } else if args.flush {
        let qmgr = queue_dir.join(endpoint::QMGR);
        if rt
            .block_on(pfx_ipc::client::trigger(&qmgr, trigger::FLUSH))
            .is_err()
        {
            fatal_status(
                EX_UNAVAILABLE,
                "Cannot flush mail queue - mail system is down",
            );
        }
    } else {
        let requests = args
            .queue_id
            .into_iter()
            .map(|queue_id| FlushRequest::SendFile { queue_id })
            .chain(
                args.site
                    .into_iter()
                    .map(|site| FlushRequest::SendSite { site }),
            );
        for req in requests {
            match rt.block_on(pfx_ipc::client::flush(&queue_dir, &req)) {
                Ok(FlushReply::Ok) => {}
                Ok(FlushReply::NotConfigured) => {
                    let FlushRequest::SendSite { site } = &req else {
                        unreachable!()
                    };
                    fatal_status(
                        EX_UNAVAILABLE,
                        format!("Flush service is not configured for destination \"{site}\""),
                    )
                }
                Ok(FlushReply::Failed { reason }) => fatal_status(EX_UNAVAILABLE, reason),
                Err(_) => fatal_status(
                    EX_UNAVAILABLE,
                    "Cannot flush mail queue - mail system is down",
                ),
            }
        }
    }
}

/// The queue from showq, each message handed to `print` as it comes; when
/// the mail system is down, read directly by a privileged user (root or
/// `$mail_owner`), as Postfix's postqueue does.
async fn list(cfg: &Config, queue_dir: &Path, print: &mut impl FnMut(QueueEntry) -> bool) {
    let showq = queue_dir.join(endpoint::SHOWQ);
    let mut ch = match pfx_ipc::client::connect(&showq, conversation::SHOWQ).await {
        Ok(ch) => ch,
        Err(_) if privileged(cfg, queue_dir) => {
            tracing::warn!("Mail system is down -- accessing queue directly");
            let empty = cfg
                .get("empty_address_recipient")
                .unwrap_or_else(|_| "MAILER-DAEMON".into());
            return listing::each(&Queue::new(queue_dir), &empty, |m| print(m.into()));
        }
        Err(_) => fatal_status(
            EX_UNAVAILABLE,
            "Queue report unavailable - mail system is down",
        ),
    };
    loop {
        match ch.expect::<ShowqReply>().await {
            Ok(ShowqReply::Message(e)) => {
                if !print(e) {
                    return;
                }
            }
            Ok(ShowqReply::End) => return,
            Err(e) => fatal_status(EX_UNAVAILABLE, format!("read queue report: {e}")),
        }
    }
}

/// Root, `$mail_owner`, or the user who runs an instance of their own.
fn privileged(cfg: &Config, queue_dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::getuid();
    uid.is_root()
        || std::fs::metadata(queue_dir.join("active")).is_ok_and(|m| m.uid() == uid.as_raw())
        || cfg
            .get("mail_owner")
            .ok()
            .and_then(|o| nix::unistd::User::from_name(&o).ok().flatten())
            .is_some_and(|u| u.uid == uid)
}
