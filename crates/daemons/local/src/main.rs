//! local(8): delivers to local recipients.
//!
//! For each recipient: `alias_maps` first (targets may be local names,
//! remote addresses, `:include:` files, `/file` and `|command` where
//! `allow_mail_to_files`/`allow_mail_to_commands` permit), then the user's
//! mailbox: `$home_mailbox` under the home directory (`Maildir/` style when it
//! ends in `/`, else an mbox file), or `$mail_spool_directory/USER` when
//! `home_mailbox` is empty. Remote alias targets are forwarded as a new
//! message through cleanup. Started as root, mailbox writes happen with the
//! recipient's file-system ids (the writing itself is `pfx_mailbox`, shared
//! with virtual(8)). Logs Postfix's `status=sent (delivered to
//! maildir)` lines.

mod deliver;
mod expand;

fn main() {
    pfx_server::run_with(
        "local",
        pfx_server::Threads::One,
        |ctx, endpoint| async move {
            pfx_server::serve_deliveries_on_threads(
                &ctx,
                endpoint,
                pfx_server::PerConfig::default(),
                deliver::Settings::new,
                |state, req| async move { deliver::request(&state, &req).await },
            )
            .await
        },
    )
}
