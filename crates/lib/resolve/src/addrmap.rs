//! An address table as Postfix asks it when it rewrites an address
//! (mail_addr_map: cleanup's canonical and virtual alias maps, the smtp
//! client's generic maps): looked up in Postfix's order ([`crate::find`]),
//! the value a list of addresses, a bare name qualified with `$myorigin`, a
//! value `@domain` taken as the same user at another domain, and an
//! extension the matching key did not have carried over to every result
//! when `propagate_unmatched_extensions` names the table's class.

use pfx_address::DomainList;
use pfx_config::{BuildError, Config};
use pfx_maps::{passwd::Passwd, MapList};

use crate::find::Strategy;

/// What an address lookup needs to know about this host.
pub struct Domains {
    delimiters: String,
    mydestination: DomainList,
    myorigin: String,
}

impl Domains {
    pub fn new(cfg: &Config) -> Result<Self, BuildError> {
        Ok(Self {
            delimiters: cfg.get("recipient_delimiter")?,
            mydestination: DomainList::new(&cfg.list("mydestination")?),
            myorigin: cfg.get("myorigin")?,
        })
    }

    /// `$myorigin`, for bare names.
    pub fn myorigin(&self) -> &str {
        &self.myorigin
    }

    /// Looks `addr` up in `maps` in Postfix's order.
    pub fn find(
        &self,
        maps: &MapList,
        addr: &str,
    ) -> Result<Option<crate::Found>, pfx_maps::Error> {
        let is_local = |dom: &str| {
            dom.eq_ignore_ascii_case(&self.myorigin) || self.mydestination.contains(dom)
        };
        crate::find(
            maps,
            &addr.to_ascii_lowercase(),
            &self.delimiters,
            Strategy::DEFAULT,
            &is_local,
        )
    }
}

/// One address table (`canonical_maps`, `smtp_generic_maps`...).
pub struct AddrMap {
    /// The parameter it comes from, for log lines.
    pub title: &'static str,
    maps: MapList,
    propagate: bool,
}

impl AddrMap {
    /// The table named by parameter `title`; `class` is its name in
    /// `propagate_unmatched_extensions` (`canonical`, `virtual`, `generic`).
    pub fn new(cfg: &Config, title: &'static str, class: &str) -> Result<Self, BuildError> {
        Ok(Self {
            title,
            maps: MapList::parse(&cfg.list(title)?, &Passwd::new(None))?,
            propagate: cfg
                .list("propagate_unmatched_extensions")?
                .iter()
                .any(|c| c.eq_ignore_ascii_case(class)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The addresses the table gives for `addr`; `Err` when it could not
    /// answer (or answered with no address at all).
    pub fn map(&self, d: &Domains, addr: &str) -> Result<Option<Vec<String>>, pfx_maps::Error> {
        if self.maps.is_empty() {
            return Ok(None);
        }
        let Some(found) = d.find(&self.maps, addr)? else {
            return Ok(None);
        };
        let ext = found.extension.as_deref().filter(|_| self.propagate);
        let value = match found.value.strip_prefix('@') {
            Some(domain) => {
                let (local, _) = pfx_address::split(addr);
                let local = match &found.extension {
                    Some(e) => local.strip_suffix(e.as_str()).unwrap_or(local),
                    None => local,
                };
                format!("{local}@{domain}")
            }
            None => found.value,
        };
        let list: Vec<String> = addresses(&value)
            .into_iter()
            .map(|a| {
                let a = pfx_address::qualify(&a, &d.myorigin);
                match ext {
                    Some(e) => with_extension(&a, e),
                    None => a,
                }
            })
            .collect();
        if list.is_empty() {
            tracing::warn!(
                "{} lookup of {addr} returns non-address result \"{value}\"",
                self.title
            );
            return Err(pfx_maps::Error::Temporary {
                table: self.title.into(),
                reason: format!("non-address result \"{value}\""),
            });
        }
        Ok(Some(list))
    }
}

/// `user+ext@domain` from `user@domain` and `+ext`.
fn with_extension(addr: &str, ext: &str) -> String {
    let (local, domain) = pfx_address::split(addr);
    if domain.is_empty() {
        format!("{local}{ext}")
    } else {
        format!("{local}{ext}@{domain}")
    }
}

/// The addresses in a table value, read as Postfix reads them: an RFC 5322
/// address list in which white space between two words also separates
/// addresses ([`pfx_address::header::address_list`]).
fn addresses(value: &str) -> Vec<String> {
    pfx_address::header::address_list(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn setup(table: &str, extra: &str) -> (Domains, AddrMap) {
        let text = format!(
            "myorigin = ywnds.com\nmydestination = ywnds.com\nrecipient_delimiter = +\n\
             smtp_generic_maps = inline:{{{table}}}\n{extra}"
        );
        let cfg = Config::from_text(Path::new("/etc/postfix"), &text).unwrap();
        (
            Domains::new(&cfg).unwrap(),
            AddrMap::new(&cfg, "smtp_generic_maps", "generic").unwrap(),
        )
    }

    #[test]
    fn values_are_address_lists_qualified_and_extended() {
        let (d, m) = setup(
            "{a@ywnds.com = x@example.net, y}, @old.example=@new.example",
            "propagate_unmatched_extensions = generic\n",
        );
        assert_eq!(
            m.map(&d, "a+t@ywnds.com").unwrap(),
            Some(vec![
                "x+t@example.net".to_owned(),
                "y+t@ywnds.com".to_owned()
            ])
        );
        assert_eq!(
            m.map(&d, "u@old.example").unwrap(),
            Some(vec!["u@new.example".to_owned()])
        );
        assert_eq!(m.map(&d, "zz@else.example").unwrap(), None);
        // Not propagated by default for generic.
        let (d, m) = setup("a@ywnds.com=x@example.net", "");
        assert_eq!(
            m.map(&d, "a+t@ywnds.com").unwrap(),
            Some(vec!["x@example.net".to_owned()])
        );
    }
}
