//! proxymap(8): looks tables up for daemons that master.cf's chroot column
//! confines to the queue directory, where the password database and the
//! files of most tables are out of reach (`proxy:unix:passwd.byname` in
//! `local_recipient_maps`). It runs outside the jail, as Debian's master.cf
//! has it, and serves only the tables named in `proxy_read_maps`, as
//! Postfix's does; any other is refused with Postfix's warning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pfx_config::{BuildError, Config};
use pfx_ipc::proto::{conversation, ProxyReply, ProxyRequest};
use pfx_maps::passwd::Passwd;
use pfx_maps::Map;
use tracing::warn;

/// The tables of one configuration, opened on first use.
struct Tables {
    allowed: Vec<String>,
    passwd: Passwd,
    open: Mutex<HashMap<String, Arc<Map>>>,
}

impl Tables {
    fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let allowed = cfg
            .list("proxy_read_maps")?
            .into_iter()
            .map(|t| t.strip_prefix("proxy:").map(str::to_owned).unwrap_or(t))
            .collect();
        let file = cfg.get("local_passwd_file")?;
        Ok(Self {
            allowed,
            passwd: Passwd::new((!file.is_empty()).then(|| file.into())),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lookup(&self, req: &ProxyRequest) -> ProxyReply {
        if !self.allowed.contains(&req.table) {
            warn!("request for unapproved table: \"{}\"", req.table);
            return ProxyReply::Failed(format!("table {} is not in proxy_read_maps", req.table));
        }
        let map = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(&req.table) {
                Some(m) => m.clone(),
                None => match Map::parse(&req.table, &self.passwd) {
                    Ok(m) => open.entry(req.table.clone()).or_insert(Arc::new(m)).clone(),
                    Err(e) => return ProxyReply::Failed(e.to_string()),
                },
            }
        };
        match map.lookup(&req.key) {
            Ok(Some(v)) => ProxyReply::Found(v),
            Ok(None) => ProxyReply::NotFound,
            Err(e) => {
                warn!("proxy:{}: {e}", req.table);
                ProxyReply::Failed(e.to_string())
            }
        }
    }
}

fn main() {
    pfx_server::run("proxymap", |ctx, endpoint| async move {
        let tables: Arc<pfx_server::PerConfig<Tables>> = Arc::default();
        pfx_server::serve_channels(
            &ctx,
            endpoint,
            conversation::PROXYMAP,
            move |cfg, mut ch| {
                let tables = tables.get(cfg, Tables::new);
                async move {
                    let tables = match tables {
                        Ok(t) => t,
                        Err(e) => return warn!("configuration: {e}"),
                    };
                    // A client asks many times over one connection.
                    while let Ok(Some(req)) = ch.recv::<ProxyRequest>().await {
                        let reply = tokio::task::block_in_place(|| tables.lookup(&req));
                        if ch.send(&reply).await.is_err() {
                            return;
                        }
                    }
                }
            },
        )
        .await
    })
}
