//! Answering queries: the zones and access lists of one named.conf, swapped
//! whole on reload, in front of hickory-server's catalog.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::EdnsOption;
use hickory_server::proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use tracing::{error, info, warn};

use pfx_named_conf::acl::{Acl, Local};
use pfx_named_conf::conf::{self, NamedConf};
use pfx_named_conf::zone::{self, Zone};

use crate::authority;
use crate::cache::AnswerCache;
use crate::edns::Cookies;
use crate::journal::Journal;
use crate::recursion::{self, Recursion};
use pfx_named_conf::remote::JournalSize;

type ZoneHandlerArc = Arc<InMemoryZoneHandler<TokioRuntimeProvider>>;

/// A zone's view and name.
pub(crate) type ZoneKey = (String, String);

/// The key of a zone of named.conf.
pub(crate) fn key(z: &conf::ZoneConf) -> ZoneKey {
    (z.view.clone(), z.name.clone())
}

/// One loaded zone, kept so that a reload that fails to read it again keeps serving it.
#[derive(Clone)]
pub(crate) struct Loaded {
    handler: ZoneHandlerArc,
    /// The same data, for the answers named gives itself.
    pub(crate) zone: Arc<authority::Zone>,
    pub(crate) serial: u32,
    /// The zone file's modification time when it was read: BIND's "last
    /// loaded", and what tells `rndc reload ZONE` the file is unchanged.
    pub(crate) mtime: Option<SystemTime>,
    /// The differences from earlier versions, for IXFR.
    pub(crate) journal: Journal,
}

impl Loaded {
    /// This version replacing `old`: the journal carried on, one delta
    /// longer when the serial went forward, kept within `limit`.
    fn after(mut self, old: Option<&Self>, limit: JournalSize) -> Self {
        if let Some(old) = old {
            self.journal = crate::journal::extend(&old.journal, &old.zone, &self.zone, limit);
        }
        self
    }
}

/// A zone's `max-journal-size`: its own, else its view's.
fn journal_limit(conf: &NamedConf, z: &conf::ZoneConf) -> JournalSize {
    z.max_journal_size.unwrap_or_else(|| {
        conf.views
            .iter()
            .find(|v| v.name == z.view)
            .map_or(JournalSize::Default, |v| v.max_journal_size)
    })
}

/// One view's zones and rules (the one `_default` view without `view`
/// statements).
pub(crate) struct View {
    name: String,
    match_clients: Acl,
    match_destinations: Acl,
    match_recursive_only: bool,
    catalog: Catalog,
    /// The served zones, answered as BIND answers (authority.rs) and
    /// transferred (transfer.rs); the catalog is left what they do not
    /// answer (forwarding, recursion).
    authority: Vec<Served>,
    /// Zones without data (a file that did not load, a secondary zone
    /// not transferred yet or expired): answered with SERVFAIL, as BIND
    /// answers them.
    unavailable: Vec<LowerName>,
    /// Each served zone with its own allow-query, if any.
    zones: Vec<(LowerName, Option<Acl>)>,
    allow_query: Acl,
    allow_recursion: Acl,
    allow_query_cache: Acl,
    allow_query_on: Acl,
    allow_recursion_on: Acl,
    allow_query_cache_on: Acl,
    /// Whether names outside the zones are forwarded or resolved.
    forwarding: bool,
    /// Whether some zone has its own allow-query (answers then depend on the zone).
    zone_acls: bool,
    cache: AnswerCache,
}

/// A zone a view serves, with who may transfer it (the zone's
/// `allow-transfer`, else the view's).
pub(crate) struct Served {
    pub(crate) zone: Arc<authority::Zone>,
    pub(crate) allow_transfer: Acl,
    pub(crate) journal: Journal,
}

/// What answers queries between two reloads.
pub(crate) struct State {
    views: Vec<View>,
    /// Who may ask the CH names (the global allow-query).
    allow_query: Acl,
    local: Local,
    /// `version.bind`, `hostname.bind`, `id.server` (class CH).
    chaos: authority::Chaos,
    pub(crate) cookies: Cookies,
    /// named.conf's keys, for TSIG-signed queries.
    pub(crate) keys: Vec<pfx_named_conf::controls::Key>,
    /// Clients whose queries are dropped (`blackhole`).
    blackhole: Acl,
}

/// The request handler given to hickory's server; [`Named::reload`] swaps its state.
#[derive(Clone)]
pub struct Handler {
    state: Arc<ArcSwap<State>>,
    /// Whether each query is logged (`querylog`, `rndc querylog`).
    pub(crate) querylog: Arc<AtomicBool>,
    /// The secondary zones, for the NOTIFYs that wake their keepers.
    triggers: Arc<std::sync::Mutex<HashMap<ZoneKey, Trigger>>>,
}

/// A running configuration: the handler plus what a reload needs.
pub struct Named {
    pub(crate) path: std::path::PathBuf,
    pub(crate) handler: Handler,
    /// By view and zone name.
    pub(crate) loaded: HashMap<ZoneKey, Loaded>,
    pub(crate) conf: NamedConf,
    pub(crate) booted: SystemTime,
    pub(crate) configured: SystemTime,
    /// Whether the last reload or reconfig failed (`rndc status` says so).
    pub(crate) reload_failed: bool,
    /// Worker threads, for `rndc status`.
    pub threads: usize,
    /// Whether the `logging` statement is followed (not with `-g`, as BIND).
    pub use_logging: bool,
    /// `rndc scan` asked for the interfaces to be scanned.
    pub(crate) scan: bool,
    /// Zones loaded with a new serial whose NOTIFY is still to be sent.
    notify: Vec<ZoneKey>,
    /// The secondary zones' keepers (secondary.rs), with the settings
    /// each was started with.
    secondaries: HashMap<ZoneKey, (conf::ZoneConf, tokio::task::JoinHandle<()>)>,
    /// Where keepers send transferred zones (the main loop).
    events: Option<tokio::sync::mpsc::Sender<crate::control::Event>>,
}

/// How an allowed NOTIFY for a secondary zone wakes its keeper.
pub(crate) struct Trigger {
    wake: Arc<tokio::sync::Notify>,
    /// `rndc retransfer`: the next transfer takes the whole zone.
    whole: Arc<AtomicBool>,
    /// `allow-notify` (the zone's, else its view's): who besides the
    /// primaries may send NOTIFY.
    allow: Option<Acl>,
    primaries: Vec<IpAddr>,
}

impl Named {
    /// Reads named.conf and its zones. A broken named.conf is an error; a
    /// zone that cannot be read is logged and left out, as BIND does.
    pub fn load(path: &Path) -> Result<Self, conf::Error> {
        let conf = conf::load(path)?;
        let loaded = load_zones(&conf, &HashMap::new(), false);
        let state = build_state(&conf, &loaded, None);
        let notify = loaded.keys().cloned().collect();
        let now = SystemTime::now();
        Ok(Self {
            path: path.to_path_buf(),
            handler: Handler {
                state: Arc::new(ArcSwap::from_pointee(state)),
                querylog: Arc::new(AtomicBool::new(conf.options.querylog)),
                triggers: Arc::default(),
            },
            loaded,
            conf,
            booted: now,
            configured: now,
            reload_failed: false,
            threads: 1,
            use_logging: false,
            scan: false,
            notify,
            secondaries: HashMap::new(),
            events: None,
        })
    }

    pub fn conf(&self) -> &NamedConf {
        &self.conf
    }

    pub fn handler(&self) -> Handler {
        self.handler.clone()
    }

    /// Re-reads named.conf and the zones; queries keep being answered from
    /// the old state until the new one is complete. A broken named.conf keeps
    /// everything as it was; a broken zone keeps its previous version.
    pub fn reload(&mut self) -> Result<(), String> {
        self.reread(false)
    }

    /// `rndc reconfig`: named.conf again, but only new zones are read.
    pub fn reconfig(&mut self) -> Result<(), String> {
        self.reread(true)
    }

    fn reread(&mut self, new_zones_only: bool) -> Result<(), String> {
        info!("reloading configuration file '{}'", self.path.display());
        let conf = match conf::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                error!("{e}");
                error!("reloading configuration failed: keeping the previous configuration");
                self.reload_failed = true;
                return Err(e.to_string());
            }
        };
        if conf.options.listen_on != self.conf.options.listen_on
            || conf.options.listen_on_v6 != self.conf.options.listen_on_v6
        {
            warn!("listen-on changes take effect when named is restarted");
        }
        let loaded = load_zones(&conf, &self.loaded, new_zones_only);
        for (k, l) in &loaded {
            if self.loaded.get(k).is_none_or(|old| old.serial != l.serial) {
                self.notify.push(k.clone());
            }
        }
        self.handler.state.store(Arc::new(build_state(
            &conf,
            &loaded,
            Some(&self.handler.state()),
        )));
        if conf.options.querylog != self.conf.options.querylog {
            self.handler
                .querylog
                .store(conf.options.querylog, Ordering::Relaxed);
        }
        self.loaded = loaded;
        self.conf = conf;
        if self.use_logging {
            crate::logging::install(self.conf.logging.as_ref());
        }
        self.configured = SystemTime::now();
        self.reload_failed = false;
        info!("reloading configuration succeeded");
        if new_zones_only {
            info!("scheduled loading new zones");
        }
        Ok(())
    }

    /// Reads one zone's file again unless it is unchanged since it was
    /// read (`rndc reload ZONE`): `Ok(false)` when it is.
    pub(crate) fn reload_zone(&mut self, k: &ZoneKey) -> Result<bool, String> {
        let Some(z) = self.conf.zones.iter().find(|z| key(z) == *k) else {
            return Err(format!("no matching zone '{}' in any view", k.1));
        };
        let label = Zone::label(&z.name);
        if let Some(old) = self.loaded.get(k) {
            if old.mtime.is_some() && old.mtime == file_mtime(&z.file) {
                return Ok(false);
            }
        }
        match read_zone(z, &self.conf) {
            Ok(l) => {
                info!("{label}: loaded serial {}", l.serial);
                if self.loaded.get(k).is_none_or(|old| old.serial != l.serial) {
                    self.notify.push(k.clone());
                }
                let l = l.after(self.loaded.get(k), journal_limit(&self.conf, z));
                self.loaded.insert(key(z), l);
                self.rebuild();
                Ok(true)
            }
            Err(e) => {
                error!("{e}");
                error!("{label}: not loaded due to errors.");
                Err(e)
            }
        }
    }

    /// Where secondary zones' keepers send what they transfer.
    pub fn set_events(&mut self, events: tokio::sync::mpsc::Sender<crate::control::Event>) {
        self.events = Some(events);
    }

    /// What follows a load (inside the runtime, at the top of the main
    /// loop): NOTIFYs sent, secondary zones' keepers started or stopped.
    pub fn tend(&mut self) {
        self.send_notifies();
        self.keep_secondaries();
    }

    /// Starts a keeper for each secondary zone that has none (or whose
    /// settings changed), stops those of zones gone.
    fn keep_secondaries(&mut self) {
        let Some(events) = self.events.clone() else {
            return;
        };
        let wanted: Vec<&conf::ZoneConf> = self
            .conf
            .zones
            .iter()
            .filter(|z| z.secondary.is_some())
            .collect();
        let mut triggers = self
            .handler
            .triggers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.secondaries.retain(|k, (z, task)| {
            let keep = wanted.iter().any(|w| *w == z);
            if !keep {
                task.abort();
                triggers.remove(k);
            }
            keep
        });
        for z in wanted {
            let k = key(z);
            if self.secondaries.contains_key(&k) {
                continue;
            }
            let Some(sec) = &z.secondary else { continue };
            let primaries = sec
                .primaries
                .iter()
                .map(|p| {
                    // A server's own key (`server { keys }`) when the list gives none.
                    let key = p.key.as_deref().or_else(|| {
                        pfx_named_conf::remote::server_key(&self.conf.servers, p.address.ip())
                    });
                    (p, key)
                })
                .filter_map(|(p, key)| match key {
                    None => Some((p.address, None)),
                    Some(name) => match self
                        .conf
                        .keys
                        .iter()
                        .find(|k| k.name.eq_ignore_ascii_case(name))
                    {
                        Some(key) => Some((p.address, Some(key.clone()))),
                        None => {
                            error!(
                                "zone {}/IN: primary {}: key '{name}' is not defined",
                                z.name,
                                crate::control::sock_text(p.address)
                            );
                            None
                        }
                    },
                })
                .collect();
            let records = self.loaded.get(&k).map_or_else(Vec::new, |l| {
                l.zone
                    .soa()
                    .into_iter()
                    .chain(l.zone.records_but_soa())
                    .cloned()
                    .collect()
            });
            let wake = Arc::new(tokio::sync::Notify::new());
            let whole = Arc::new(AtomicBool::new(false));
            triggers.insert(
                k.clone(),
                Trigger {
                    wake: wake.clone(),
                    whole: whole.clone(),
                    allow: sec.allow_notify.clone().or_else(|| {
                        self.conf
                            .views
                            .iter()
                            .find(|v| v.name == z.view)
                            .and_then(|v| v.allow_notify.clone())
                    }),
                    primaries: sec.primaries.iter().map(|p| p.address.ip()).collect(),
                },
            );
            let keeper = crate::secondary::Keeper {
                key: k.clone(),
                primaries,
                file: z.file.clone(),
                records,
                events: events.clone(),
                wake,
                whole,
            };
            self.secondaries
                .insert(k, (z.clone(), tokio::spawn(keeper.run())));
        }
    }

    /// `rndc notify ZONE`: its NOTIFY sent again (at the top of the main loop).
    pub(crate) fn queue_notify(&mut self, k: ZoneKey) {
        self.notify.push(k);
    }

    /// Wakes a secondary zone's keeper (`rndc refresh`; `whole`: `rndc
    /// retransfer`, AXFR whatever the serials); false for other zones.
    pub(crate) fn wake_secondary(&self, k: &ZoneKey, whole: bool) -> bool {
        let triggers = self
            .handler
            .triggers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(t) = triggers.get(k) else {
            return false;
        };
        if whole {
            t.whole.store(true, Ordering::Relaxed);
        }
        t.wake.notify_one();
        true
    }

    /// A secondary zone expired: no longer served (SERVFAIL) until a
    /// transfer brings it again.
    pub(crate) fn expire(&mut self, k: &ZoneKey) {
        if self.loaded.remove(k).is_some() {
            self.rebuild();
        }
    }

    /// Serves what a secondary zone's keeper transferred.
    pub(crate) fn install_transfer(&mut self, k: &ZoneKey, text: &str) {
        let Some(z) = self.conf.zones.iter().find(|z| key(z) == *k) else {
            return;
        };
        let label = Zone::label(&z.name);
        let parsed = zone::parse(&z.name, &z.file, text, &self.conf.options.directory)
            .map_err(|e| e.to_string())
            .and_then(|zone| handler_for(zone, &label));
        match parsed {
            Ok(mut l) => {
                l.mtime = file_mtime(&z.file);
                info!("{label}: transferred serial {}", l.serial);
                let l = l.after(self.loaded.get(k), journal_limit(&self.conf, z));
                self.loaded.insert(k.clone(), l);
                self.notify.push(k.clone());
                self.rebuild();
            }
            Err(e) => error!("{label}: transferred zone not served: {e}"),
        }
    }

    /// Sends the NOTIFY of each zone loaded with a new serial since the
    /// last call (inside the runtime), as the zone's, else its view's,
    /// `notify` and `also-notify` say.
    fn send_notifies(&mut self) {
        let state = self.handler.state();
        for k in std::mem::take(&mut self.notify) {
            let (Some(z), Some(l)) = (
                self.conf.zones.iter().find(|z| key(z) == k),
                self.loaded.get(&k),
            ) else {
                continue;
            };
            let Some(v) = self.conf.views.iter().find(|v| v.name == z.view) else {
                continue;
            };
            let Some(soa) = l.zone.soa().cloned() else {
                continue;
            };
            let mut notify = z.notify.unwrap_or(v.notify);
            if z.secondary.is_some() && notify == pfx_named_conf::remote::Notify::PrimaryOnly {
                notify = pfx_named_conf::remote::Notify::No;
            }
            let targets = crate::notify::targets(
                &l.zone,
                notify,
                z.also_notify.as_ref().unwrap_or(&v.also_notify),
                &self.conf.keys,
                &self.conf.servers,
                state.local(),
            );
            crate::notify::send(&z.name, soa, targets);
        }
    }

    /// A fresh answering state from what is loaded: the answer cache and
    /// the forwarder's cache start empty (`rndc flush`).
    pub(crate) fn rebuild(&self) {
        self.handler.state.store(Arc::new(build_state(
            &self.conf,
            &self.loaded,
            Some(&self.handler.state()),
        )));
    }
}

fn file_mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_zone(z: &conf::ZoneConf, conf: &NamedConf) -> Result<Loaded, String> {
    let mtime = file_mtime(&z.file);
    let mut l = zone::load(&z.name, &z.file, &conf.options.directory)
        .map_err(|e| e.to_string())
        .and_then(|zone| handler_for(zone, &Zone::label(&z.name)))?;
    l.mtime = mtime;
    Ok(l)
}

fn load_zones(
    conf: &NamedConf,
    previous: &HashMap<ZoneKey, Loaded>,
    new_zones_only: bool,
) -> HashMap<ZoneKey, Loaded> {
    for w in &conf.warnings {
        warn!("{w}");
    }
    let mut out = HashMap::new();
    for z in &conf.zones {
        // A secondary zone kept in memory only comes from its keeper.
        if z.file.as_os_str().is_empty() {
            if let Some(old) = previous.get(&key(z)) {
                out.insert(key(z), old.clone());
            }
            continue;
        }
        if new_zones_only {
            if let Some(old) = previous.get(&key(z)) {
                out.insert(key(z), old.clone());
                continue;
            }
        }
        let label = Zone::label(&z.name);
        match read_zone(z, conf) {
            Ok(l) => {
                info!("{label}: loaded serial {}", l.serial);
                out.insert(
                    key(z),
                    l.after(previous.get(&key(z)), journal_limit(conf, z)),
                );
            }
            Err(e) => {
                error!("{e}");
                match previous.get(&key(z)) {
                    Some(old) => {
                        error!(
                            "{label}: not loaded due to errors; serving serial {} as before",
                            old.serial
                        );
                        out.insert(key(z), old.clone());
                    }
                    None => error!("{label}: not loaded due to errors."),
                }
            }
        }
    }
    out
}

fn handler_for(zone: Zone, label: &str) -> Result<Loaded, String> {
    for w in &zone.warnings {
        warn!("{w}");
    }
    let serial = zone.serial;
    let answers = Arc::new(authority::Zone::new(&zone.origin, zone.records.clone()));
    // The catalog's copy answers nothing authoritative.rs answers; hickory
    // refuses a signed zone's RRSIGs and NSECs at a CNAME, so they stay out.
    let mut records = zone.records;
    records.retain(|k, _| !matches!(k.record_type, RecordType::RRSIG | RecordType::NSEC));
    let handler =
        InMemoryZoneHandler::new(zone.origin, records, ZoneType::Primary, AxfrPolicy::Deny)
            .map_err(|e| format!("{label}: {e}"))?;
    Ok(Loaded {
        handler: Arc::new(handler),
        zone: answers,
        serial,
        mtime: None,
        journal: Journal::default(),
    })
}

/// The answering state for `conf`; `previous` keeps the cookie secret.
fn build_state(
    conf: &NamedConf,
    loaded: &HashMap<ZoneKey, Loaded>,
    previous: Option<&State>,
) -> State {
    let o = &conf.options;
    State {
        cookies: Cookies::new(o, previous.map(|p| &p.cookies)),
        keys: conf.keys.clone(),
        blackhole: o.blackhole.clone(),
        views: conf
            .views
            .iter()
            .map(|v| build_view(conf, v, loaded))
            .collect(),
        allow_query: o.allow_query.clone(),
        local: Local::discover(),
        chaos: authority::Chaos {
            version: o.version.clone(),
            hostname: o.hostname.clone(),
            server_id: o.server_id.clone(),
        },
    }
}

fn build_view(conf: &NamedConf, v: &conf::ViewConf, loaded: &HashMap<ZoneKey, Loaded>) -> View {
    let mut catalog = Catalog::new();
    let mut zones = Vec::new();
    let mut authority = Vec::new();
    let mut unavailable = Vec::new();
    for z in v.zones(conf) {
        if let Some(l) = loaded.get(&key(z)) {
            authority.push(Served {
                zone: l.zone.clone(),
                journal: l.journal.clone(),
                allow_transfer: z
                    .allow_transfer
                    .clone()
                    .unwrap_or_else(|| v.allow_transfer.clone()),
            });
            let name = l.handler.origin().clone();
            catalog.upsert(
                name.clone(),
                vec![l.handler.clone() as Arc<dyn ZoneHandler>],
            );
            zones.push((name, z.allow_query.clone()));
        } else if let Ok(name) = Name::from_ascii(format!("{}.", z.name)) {
            unavailable.push(LowerName::new(&name));
        }
    }
    let mut forwarding = false;
    if v.recursion && !v.dnssec_validation {
        let outside: Result<Arc<dyn ZoneHandler>, String> = if v.forwarders.is_empty() {
            Recursion::new(&recursion::roots(v.hints.as_deref()))
                .map(|r| Arc::new(r) as Arc<dyn ZoneHandler>)
        } else {
            forwarder(&v.forwarders).map(|f| Arc::new(f) as Arc<dyn ZoneHandler>)
        };
        match outside {
            Ok(h) => {
                catalog.upsert(LowerName::new(&Name::root()), vec![h]);
                forwarding = true;
            }
            Err(e) => error!("{e}"),
        }
    }
    View {
        name: v.name.clone(),
        match_clients: v.match_clients.clone(),
        match_destinations: v.match_destinations.clone(),
        match_recursive_only: v.match_recursive_only,
        catalog,
        authority,
        unavailable,
        zone_acls: zones.iter().any(|(_, acl)| acl.is_some()),
        zones,
        allow_query: v.allow_query.clone(),
        allow_recursion: v.allow_recursion.clone(),
        allow_query_cache: v.allow_query_cache.clone(),
        allow_query_on: v.allow_query_on.clone(),
        allow_recursion_on: v.allow_recursion_on.clone(),
        allow_query_cache_on: v.allow_query_cache_on.clone(),
        forwarding,
        cache: AnswerCache::default(),
    }
}

/// Describes, once at start, what happens to names outside our zones.
pub fn log_recursion(conf: &NamedConf) {
    for v in &conf.views {
        let view = if conf.views.len() > 1 {
            format!("view {}: ", v.name)
        } else {
            String::new()
        };
        match (v.recursion, v.forwarders.is_empty()) {
            (false, _) => info!("{view}recursion no: names outside the served zones are refused"),
            (true, _) if v.dnssec_validation => error!(
                "{view}dnssec-validation is yes or auto (BIND's default) and named does not validate: names outside the served zones are refused; with 'dnssec-validation no;' they are resolved or forwarded unvalidated"
            ),
            (true, false) => info!(
                "{view}recursion yes: names outside the served zones are forwarded to {}",
                v.forwarders
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (true, true) => info!(
                "{view}recursion yes: names outside the served zones are resolved from the root servers"
            ),
        }
    }
}

fn forwarder(servers: &[SocketAddr]) -> Result<ForwardZoneHandler<TokioRuntimeProvider>, String> {
    let name_servers = servers.iter().map(|s| pfx_dns::name_server(*s)).collect();
    ForwardZoneHandler::builder_tokio(ForwardConfig {
        name_servers,
        options: None,
    })
    .build()
}

impl State {
    /// Whether queries from `client` are dropped unanswered (`blackhole`).
    pub(crate) fn dropped(&self, client: IpAddr) -> bool {
        self.blackhole.allows(client, &self.local)
    }

    /// This host's addresses, for `localhost` and `localnets` in access lists.
    pub(crate) fn local(&self) -> &Local {
        &self.local
    }

    /// The view that answers a query from `client` to `local`: the first
    /// whose match-clients, match-destinations (and match-recursive-only)
    /// take it, as BIND chooses. None: BIND refuses the query.
    pub(crate) fn view_for(
        &self,
        client: IpAddr,
        signer: Option<&str>,
        local: IpAddr,
        rd: bool,
    ) -> Option<&View> {
        self.views.iter().find(|v| {
            (rd || !v.match_recursive_only)
                && v.match_clients.allows_signed(client, signer, &self.local)
                && v.match_destinations.allows(local, &self.local)
        })
    }

    /// The answer cache for a query from `client` to `local`, when its
    /// view's answers do not depend on who asks.
    pub(crate) fn cache_for(
        &self,
        client: IpAddr,
        local: IpAddr,
        rd: bool,
    ) -> Option<&AnswerCache> {
        self.view_for(client, None, local, rd)
            .filter(|v| v.cache_usable_for(client, local, &self.local))
            .map(|v| &v.cache)
    }
}

impl View {
    /// Whether cached answers may go to `client` asking `dst`: it may query every zone.
    fn cache_usable_for(&self, client: IpAddr, dst: IpAddr, local: &Local) -> bool {
        !self.zone_acls
            && self.allow_query.allows(client, local)
            && self.allow_query_on.allows(dst, local)
    }

    /// Whether `client` (its query signed by `signer`) may ask `dst` about `name`.
    fn allowed(
        &self,
        client: IpAddr,
        signer: Option<&str>,
        dst: IpAddr,
        name: &LowerName,
        local: &Local,
    ) -> bool {
        if !self.allow_query_on.allows(dst, local) {
            return false;
        }
        let zone = self
            .zones
            .iter()
            .filter(|(z, _)| z.zone_of(name))
            .max_by_key(|(z, _)| z.num_labels());
        match zone {
            Some((_, acl)) => acl
                .as_ref()
                .unwrap_or(&self.allow_query)
                .allows_signed(client, signer, local),
            // A zone without data: answered (SERVFAIL) as its view allows.
            None if self.unavailable.iter().any(|z| z.zone_of(name)) => {
                self.allow_query.allows_signed(client, signer, local)
            }
            None => {
                self.forwarding
                    && self.allow_query.allows_signed(client, signer, local)
                    && self.allow_recursion.allows_signed(client, signer, local)
                    && self.allow_query_cache.allows_signed(client, signer, local)
                    && self.allow_recursion_on.allows(dst, local)
                    && self.allow_query_cache_on.allows(dst, local)
            }
        }
    }

    /// Whether answers to `client` carry RA.
    fn recursion_available(&self, client: IpAddr, signer: Option<&str>, local: &Local) -> bool {
        self.forwarding && self.allow_recursion.allows_signed(client, signer, local)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let state = self.state();
        let local = IpAddr::from([0, 0, 0, 0]);
        self.respond_with::<R, T>(&state, request, local, Extras::default(), response_handle)
            .await
    }
}

/// Numbers the clients named logs about (BIND prints its client object's address).
static CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x1000);

/// How BIND names a client in its log lines: `client @0x1000 127.0.0.1#5353`.
pub(crate) fn client_tag(src: SocketAddr) -> String {
    let id = CLIENT.fetch_add(1, Ordering::Relaxed);
    format!("client @0x{id:x} {}#{}", src.ip(), src.port())
}

impl Handler {
    /// A NOTIFY for a secondary zone of `view`: from an allowed source
    /// (`allow-notify`, else a primary's address) it wakes the zone's
    /// keeper, as BIND answers and logs it; None for anything else.
    fn secondary_notify(
        &self,
        view: &View,
        request: &Request,
        signer: Option<&str>,
        local: &Local,
    ) -> Option<authority::Answer> {
        if request.metadata.op_code != OpCode::Notify {
            return None;
        }
        let q = request.request_info().ok()?.query;
        let name = q.name().to_string();
        let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
        let triggers = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
        let t = triggers.get(&(view.name.clone(), name.clone()))?;
        let src = request.src();
        // As BIND: a primary's NOTIFY always, others as allow-notify says.
        let allowed = t.primaries.contains(&src.ip())
            || t.allow
                .as_ref()
                .is_some_and(|acl| acl.allows_signed(src.ip(), signer, local));
        let tag = client_tag(src);
        if !allowed {
            info!(
                target: "notify",
                "{tag}: {}refused notify from non-primary: {}#{}",
                view.log_prefix(),
                src.ip(),
                src.port()
            );
            return Some(authority::Answer::refused(ResponseCode::Refused));
        }
        let key = signer.map(|k| format!(": TSIG '{k}'")).unwrap_or_default();
        info!(target: "notify", "{tag}: {}received notify for zone '{name}'{key}", view.log_prefix());
        t.wake.notify_one();
        Some(authority::Answer {
            authoritative: true,
            ..authority::Answer::default()
        })
    }

    /// Whether queries are being logged (then none is answered from the cache unseen).
    pub(crate) fn logging_queries(&self) -> bool {
        self.querylog.load(Ordering::Relaxed)
    }

    /// BIND's query log line: `client @0x.. ADDR#PORT (NAME): query: NAME
    /// CLASS TYPE FLAGS (LOCAL)`, flags `+`/`-` (recursion desired), `S`
    /// (signed), `E(v)` (EDNS version), `T` (TCP), `D` (DO), `C` (CD).
    pub(crate) fn log_query(&self, request: &Request, local: IpAddr) {
        let Ok(info) = request.request_info() else {
            return;
        };
        let raw = request.as_slice();
        let name = {
            use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
            let mut d = BinDecoder::new(raw);
            d.read_slice(12).ok().and_then(|_| Name::read(&mut d).ok())
        }
        .map(|n| {
            let s = n.to_string();
            match s.strip_suffix('.') {
                Some("") | None => s,
                Some(t) => t.to_owned(),
            }
        })
        .unwrap_or_default();
        let m = &request.metadata;
        let mut flags = String::from(if m.recursion_desired { "+" } else { "-" });
        if request.signature.is_some() {
            flags.push('S');
        }
        if let Some(e) = &request.edns {
            flags.push_str(&format!("E({})", e.version()));
        }
        if request.protocol() == Protocol::Tcp {
            flags.push('T');
        }
        if request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok) {
            flags.push('D');
        }
        if m.checking_disabled {
            flags.push('C');
        }
        info!(
            target: "queries",
            "{} ({name}): query: {name} {} {} {flags} ({local})",
            client_tag(request.src()),
            info.query.query_class(),
            info.query.query_type()
        );
    }

    /// Whether queries from `client` are dropped unanswered (`blackhole`).
    pub(crate) fn dropped(&self, client: IpAddr) -> bool {
        self.state.load().dropped(client)
    }

    /// The state answering now, without taking a reference count (for
    /// the fast path of every query).
    pub(crate) fn state_now(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// The state answering now.
    pub(crate) fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Answers `request` from `state`: refused when the access lists say so,
    /// else by the catalog.
    pub(crate) async fn respond_with<R: ResponseHandler, T: Time>(
        &self,
        state: &State,
        request: &Request,
        local: IpAddr,
        extras: Extras<'_>,
        mut response_handle: R,
    ) -> ResponseInfo {
        let cookie = extras.cookie;
        let client = request.src().ip();
        if let Some(a) = state.chaos_answer(request) {
            return send(None, state, request, a, extras, response_handle).await;
        }
        let view = state.view_for(
            client,
            extras.signer,
            local,
            request.metadata.recursion_desired,
        );
        if let Some(a) =
            view.and_then(|v| self.secondary_notify(v, request, extras.signer, &state.local))
        {
            return send(view, state, request, a, extras, response_handle).await;
        }
        if let Some(a) = view.and_then(|v| v.notify_or_update(request)) {
            return send(view, state, request, a, extras, response_handle).await;
        }
        let allowed = view.is_some_and(|v| match request.request_info() {
            Ok(info) => v.allowed(
                client,
                extras.signer,
                local,
                info.query.name(),
                &state.local,
            ),
            Err(_) => true,
        });
        let Some(view) = view.filter(|_| allowed) else {
            if let (Some(v), Ok(info)) = (view, request.request_info()) {
                let q = info.query;
                if v.zones.iter().any(|(z, _)| z.zone_of(q.name())) {
                    let name = q.name().to_string();
                    let name = name.strip_suffix('.').unwrap_or(&name);
                    let view = v.log_prefix();
                    info!(
                        target: "security",
                        "{} ({name}): {view}query '{name}/{}/IN' denied",
                        client_tag(request.src()),
                        q.query_type()
                    );
                }
            }
            let mut edns = None;
            if let Some(req) = request.edns.as_ref() {
                let mut e = Edns::new();
                e.set_max_payload(req.max_payload().max(512));
                if let Some(c) = cookie {
                    e.options_mut().insert(EdnsOption::Unknown(10, c.to_vec()));
                }
                edns = Some(e);
            }
            let response = MessageResponseBuilder::new(&request.queries, edns.as_ref())
                .error_msg(&request.metadata, ResponseCode::Refused);
            return match response_handle.send_response(response).await {
                Ok(r) => r,
                Err(_) => not_sent(request),
            };
        };
        if view.unavailable_for(request) {
            let a = authority::Answer::refused(ResponseCode::ServFail);
            return send(Some(view), state, request, a, extras, response_handle).await;
        }
        if let Some(zone) = view.authoritative_for(request) {
            let Ok(info) = request.request_info() else {
                unreachable!("authoritative_for checked the query")
            };
            let q = info.query;
            let mut a = zone.answer(q.name(), q.query_type(), request.metadata.recursion_desired);
            let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
            if dnssec_ok && zone.signed() {
                a = zone.with_dnssec(q.name(), a);
            }
            return send(Some(view), state, request, a, extras, response_handle).await;
        }
        view.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

impl State {
    /// BIND's built-in names of class CH (`version.bind` and the others,
    /// as its `_bind` view answers them: no recursion there).
    fn chaos_answer(&self, request: &Request) -> Option<authority::Answer> {
        let info = request.request_info().ok()?;
        let q = info.query;
        if request.metadata.op_code != OpCode::Query || q.query_class() != DNSClass::CH {
            return None;
        }
        if !self.allow_query.allows(request.src().ip(), &self.local) {
            return Some(authority::Answer::refused(ResponseCode::Refused));
        }
        Some(
            self.chaos
                .answer(q.name(), q.query_type(), request.metadata.recursion_desired),
        )
    }
}

impl View {
    /// NOTIFY (acknowledged for a served zone, NOTAUTH for others) and
    /// UPDATE (refused: no zone allows it; NOTAUTH for names not served).
    fn notify_or_update(&self, request: &Request) -> Option<authority::Answer> {
        let info = request.request_info().ok()?;
        let q = info.query;
        let served = || {
            self.authority
                .iter()
                .any(|s| s.zone.origin().zone_of(q.name()))
        };
        let name = q.name().to_string();
        let name = name.strip_suffix('.').unwrap_or(&name).to_owned();
        let client = request.src();
        match request.metadata.op_code {
            OpCode::Notify => Some(if served() {
                info!(
                    target: "notify",
                    "{}: received notify for zone '{name}'",
                    client_tag(client)
                );
                authority::Answer {
                    authoritative: true,
                    ..authority::Answer::default()
                }
            } else {
                info!(
                    target: "notify",
                    "{}: received notify for zone '{name}': not authoritative",
                    client_tag(client)
                );
                authority::Answer::refused(ResponseCode::NotAuth)
            }),
            OpCode::Update => Some(if served() {
                info!(
                    target: "update-security",
                    "{}: update '{name}/IN' denied",
                    client_tag(client)
                );
                authority::Answer::refused(ResponseCode::Refused)
            } else {
                authority::Answer::refused(ResponseCode::NotAuth)
            }),
            _ => None,
        }
    }

    /// The zone that answers `request` itself: a standard query of class
    /// IN (not a transfer) for a name in one of the served zones.
    fn authoritative_for(&self, request: &Request) -> Option<&authority::Zone> {
        let info = request.request_info().ok()?;
        let q = info.query;
        let plain = request.metadata.op_code == OpCode::Query
            && q.query_class() == DNSClass::IN
            && !matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR);
        if !plain {
            return None;
        }
        self.authority
            .iter()
            .filter(|s| s.zone.origin().zone_of(q.name()))
            .max_by_key(|s| s.zone.origin().num_labels())
            .map(|s| &*s.zone)
    }

    /// Whether the query's name is in a secondary zone that has no data
    /// (and in no deeper zone that has).
    fn unavailable_for(&self, request: &Request) -> bool {
        let Ok(info) = request.request_info() else {
            return false;
        };
        let name = info.query.name();
        let deepest = |labels: Option<u8>| labels.unwrap_or(0);
        let missing = self
            .unavailable
            .iter()
            .filter(|z| z.zone_of(name))
            .map(|z| z.num_labels())
            .max();
        let served = self
            .authority
            .iter()
            .filter(|s| s.zone.origin().zone_of(name))
            .map(|s| s.zone.origin().num_labels())
            .max();
        missing.is_some() && deepest(missing) >= deepest(served)
    }

    /// The zone named `name` exactly, for a transfer.
    pub(crate) fn served(&self, name: &LowerName) -> Option<&Served> {
        self.authority.iter().find(|s| s.zone.origin() == name)
    }

    /// How BIND names the view in a client's log line: `view NAME: `, or
    /// nothing without views.
    pub(crate) fn log_prefix(&self) -> String {
        match self.name.as_str() {
            conf::DEFAULT_VIEW => String::new(),
            n => format!("view {n}: "),
        }
    }
}

/// The largest UDP answer: the client's EDNS buffer (512 without EDNS),
/// at most BIND's `max-udp-size` default.
const MAX_UDP: u16 = 1232;

/// What the answer carries beyond the zone's data: the client's cookie
/// (in the OPT record) and, added after, a TSIG record of `tsig_len`
/// bytes, which must fit the client's buffer too; and who signed.
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    pub(crate) cookie: Option<&'a [u8]>,
    pub(crate) tsig_len: usize,
    /// The key that signed the query (TSIG, verified), for `key` elements
    /// of the access lists.
    pub(crate) signer: Option<&'a str>,
}

/// Sends `a` in answer to `request`, as BIND would: EDNS with BIND's
/// buffer size and the client's DO bit, and over UDP, an answer that does
/// not fit the client's buffer replaced by an empty one with TC set (the
/// client asks again over TCP).
async fn send<R: ResponseHandler>(
    view: Option<&View>,
    state: &State,
    request: &Request,
    a: authority::Answer,
    extras: Extras<'_>,
    mut response_handle: R,
) -> ResponseInfo {
    let edns = request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP);
        e.set_dnssec_ok(req.flags().dnssec_ok);
        if let Some(c) = extras.cookie {
            e.options_mut().insert(EdnsOption::Unknown(10, c.to_vec()));
        }
        e
    });
    let client = request.src().ip();
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.authoritative = a.authoritative;
    meta.response_code = a.rcode;
    // UPDATE has no RD bit (RFC 2136 §2.2): BIND answers with it clear.
    if request.metadata.op_code == OpCode::Update {
        meta.recursion_desired = false;
    }
    meta.recursion_available =
        view.is_some_and(|v| v.recursion_available(client, extras.signer, &state.local));
    let limit = match request.protocol() {
        Protocol::Udp => request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP)),
        _ => u16::MAX,
    };
    let respond = |meta: Metadata, all: bool| {
        let pick = |v: &'_ Vec<Record>| if all { v.clone() } else { Vec::new() };
        (
            meta,
            pick(&a.answers),
            pick(&a.authority),
            pick(&a.additional),
        )
    };
    let size = {
        let (m, an, au, ad) = respond(meta, true);
        let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            m,
            an.iter(),
            au.iter(),
            std::iter::empty(),
            ad.iter(),
        );
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        msg.destructive_emit(&mut encoder)
            .map_or(usize::MAX, |_| bytes.len())
    };
    let fits = size.saturating_add(extras.tsig_len) <= usize::from(limit);
    meta.truncation = !fits;
    let (m, an, au, ad) = respond(meta, fits);
    let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        m,
        an.iter(),
        au.iter(),
        std::iter::empty(),
        ad.iter(),
    );
    match response_handle.send_response(msg).await {
        Ok(info) => info,
        Err(_) => not_sent(request),
    }
}

/// What is recorded of an answer that could not be sent: SERVFAIL.
fn not_sent(request: &Request) -> ResponseInfo {
    let mut metadata = request.metadata;
    metadata.message_type = MessageType::Response;
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
