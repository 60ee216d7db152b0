//! `recursion yes` without `forwarders`: names outside the served zones are
//! resolved iteratively from the root servers, as BIND's resolver does,
//! by hickory's recursor. The root servers are those of the hint zone
//! (`zone "." { type hint; file "..."; };`), else BIND's built-in list.

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::op::Query;
use hickory_server::proto::rr::{LowerName, Name, RecordType, TSigResponseContext};
use hickory_server::resolver::recursor::{Recursor, RecursorOptions};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, ZoneHandler, ZoneType,
};
use pfx_named_conf::zone;
use tracing::{error, info};

/// The resolver behind the root of the catalog.
pub(crate) struct Recursion {
    root: LowerName,
    recursor: Recursor<TokioRuntimeProvider>,
}

/// The root servers to start from: the hint file's, or BIND's built-in ones.
pub(crate) fn roots(hints: Option<&Path>) -> Vec<IpAddr> {
    if let Some(file) = hints {
        match zone::hints(file) {
            Ok(addrs) => return addrs,
            Err(e) => error!("{e}; using the built-in root hints"),
        }
    }
    zone::ROOT_SERVERS
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

impl Recursion {
    pub(crate) fn new(roots: &[IpAddr]) -> Result<Self, String> {
        let options = RecursorOptions {
            // BIND asks whatever servers a delegation names (its `blackhole`
            // list is empty by default); hickory would skip loopback and
            // private addresses, which internal delegations use.
            deny_server: Vec::new(),
            ..RecursorOptions::default()
        };
        let recursor = Recursor::with_options(roots, options, TokioRuntimeProvider::new())
            .map_err(|e| format!("recursion: {e}"))?;
        info!(
            "recursion: resolving from {} root server addresses",
            roots.len()
        );
        Ok(Self {
            root: LowerName::new(&Name::root()),
            recursor,
        })
    }
}

#[async_trait::async_trait]
impl ZoneHandler for Recursion {
    fn zone_type(&self) -> ZoneType {
        ZoneType::External
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.root
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let query = Query::query(name.into(), rtype);
        match self
            .recursor
            .resolve(query, Instant::now(), options.dnssec_ok)
            .await
        {
            Ok(message) => LookupControlFlow::Continue(Ok(AuthLookup::Response(message))),
            Err(e) => LookupControlFlow::Continue(Err(LookupError::from(e))),
        }
    }

    async fn search(
        &self,
        request: &Request,
        options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let flow = self
            .lookup(
                info.query.name(),
                info.query.query_type(),
                Some(&info),
                options,
            )
            .await;
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Err(LookupError::from(std::io::Error::other(
            "a resolver has no NSEC records of its own",
        ))))
    }
}
