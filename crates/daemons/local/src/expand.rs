//! Postfix's `$name` expansion for local(8)'s per-recipient settings
//! (`forward_path`, `luser_relay`): `$name` and
//! `${name}` are replaced by the recipient's attribute, `${name?text}` by
//! `text` when the attribute is non-empty, `${name:text}` by `text` when it
//! is empty; `$$` is a dollar. A plain reference to an attribute that is not
//! there (no `$extension` without an address extension) makes the whole
//! result undefined, as Postfix's mac_expand marks it, so a `forward_path`
//! entry that needs an extension is skipped. Characters of attribute values
//! outside `filter` become `_` (`forward_expansion_filter`; no filter for
//! `luser_relay`, as in Postfix).

/// The recipient's attributes: `user`, `home`, `shell`, `domain`, `local`,
/// `mailbox`, `recipient`, `extension`, `recipient_delimiter`.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a template did not expand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failed {
    /// A plain `$name` whose attribute is not there.
    Undefined,
    /// Bad syntax (`${name` without `}`, `$` at the end).
    Syntax,
}

/// `filter` empty: no censoring.
fn censor(value: &str, filter: &str) -> String {
    if filter.is_empty() {
        return value.to_owned();
    }
    value
        .chars()
        .map(|c| if filter.contains(c) { c } else { '_' })
        .collect()
}

/// Expands `template`.
pub(crate) fn expand(template: &str, vars: Lookup<'_>, filter: &str) -> Result<String, Failed> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut undefined = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or(Failed::Syntax)?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            let (name, cond) = match inner.find(['?', ':']) {
                Some(j) => (&inner[..j], Some((&inner[j..=j], &inner[j + 1..]))),
                None => (inner, None),
            };
            if name.is_empty() {
                return Err(Failed::Syntax);
            }
            let value = vars(name).filter(|v| !v.is_empty());
            match cond {
                Some(("?", text)) => {
                    if value.is_some() {
                        out.push_str(&expand(text, vars, filter)?);
                    }
                }
                Some((_, text)) => {
                    if value.is_none() {
                        out.push_str(&expand(text, vars, filter)?);
                    }
                }
                None => match value {
                    Some(v) => out.push_str(&censor(&v, filter)),
                    None => undefined = true,
                },
            }
            continue;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(Failed::Syntax);
        }
        match vars(&rest[..len]).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&censor(&v, filter)),
            None => undefined = true,
        }
        rest = &rest[len..];
    }
    out.push_str(rest);
    if undefined {
        Err(Failed::Undefined)
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &str =
        "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn vars(name: &str) -> Option<String> {
        match name {
            "home" => Some("/home/hadoop".into()),
            "user" => Some("hadoop".into()),
            "recipient_delimiter" => Some("+".into()),
            "extension" => Some("lists".into()),
            "local" => Some("we;ird".into()),
            _ => None,
        }
    }

    fn none_ext(name: &str) -> Option<String> {
        if name == "extension" {
            None
        } else {
            vars(name)
        }
    }

    #[test]
    fn forward_path_entries_expand_or_are_skipped() {
        let t = "$home/.forward${recipient_delimiter}${extension}";
        assert_eq!(
            expand(t, &vars, FILTER),
            Ok("/home/hadoop/.forward+lists".into())
        );
        assert_eq!(expand(t, &none_ext, FILTER), Err(Failed::Undefined));
        assert_eq!(
            expand("$home/.forward", &none_ext, FILTER),
            Ok("/home/hadoop/.forward".into())
        );
    }

    #[test]
    fn conditionals_dollars_and_censoring() {
        assert_eq!(
            expand(
                "/usr/bin/procmail -a ${extension?$extension}",
                &none_ext,
                FILTER
            ),
            Ok("/usr/bin/procmail -a ".into())
        );
        assert_eq!(
            expand("${extension?+$extension}${nothing:none}$$", &vars, FILTER),
            Ok("+listsnone$".into())
        );
        assert_eq!(expand("$local", &vars, FILTER), Ok("we_ird".into()));
        assert_eq!(expand("${user", &vars, FILTER), Err(Failed::Syntax));
        assert_eq!(expand("a$", &vars, FILTER), Err(Failed::Syntax));
    }
}
