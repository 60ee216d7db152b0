//! virtual(8): delivers to virtual mailboxes.
//!
//! Each recipient, folded to lower case, is looked up in
//! `virtual_mailbox_maps` (the full address, then without its extension,
//! then `@domain`); the answer under `$virtual_mailbox_base` is a Maildir
//! when it ends in `/`, else an mbox file. `virtual_uid_maps` and
//! `virtual_gid_maps` give the owner, whose file-system ids the writing
//! uses (`pfx_mailbox`, shared with local(8)). Not found: bounced,
//! `unknown user`; a table that cannot answer, or an owner that is not
//! allowed (`virtual_minimum_uid`): deferred with a warning. Logs
//! Postfix's `relay=virtual, ... status=sent (delivered to maildir)` lines.

mod deliver;
mod lookup;

fn main() {
    pfx_server::run_with(
        "virtual",
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
