//! `$name`, `${name}` and `$(name)` expansion, done when a value is used, as Postfix does.
//!
//! Also `${name?text}` (text when name is set and non-empty), `${name:text}`
//! (text otherwise) and `$$` for a literal dollar. An undefined name expands to
//! nothing. Nesting deeper than [`MAX_DEPTH`] is an error, which catches loops
//! such as `a = $b`, `b = $a`.

/// How deep `$` references may nest before we call it a loop.
pub const MAX_DEPTH: usize = 100;

/// Expands `value`; `lookup` gives the raw (unexpanded) value of a name, if any.
pub fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    expand_at(value, lookup, 0)
}

fn expand_at(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, op, consumed) = match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
                continue;
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let end = matching_close(after, open, close)
                    .ok_or_else(|| format!("missing '{close}' in \"{value}\""))?;
                let inner = &after[1..end];
                let (name, op) = match inner.find(['?', ':']) {
                    Some(i) => (&inner[..i], Some((inner.as_bytes()[i], &inner[i + 1..]))),
                    None => (inner, None),
                };
                (name.trim(), op, end + 1)
            }
            _ => {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if len == 0 {
                    // A lone '$' stays as it is, like Postfix.
                    out.push('$');
                    rest = after;
                    continue;
                }
                (&after[..len], None, len)
            }
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad parameter name \"{name}\" in \"{value}\""));
        }
        if depth >= MAX_DEPTH {
            return Err(format!("unreasonable macro call nesting: \"{name}\""));
        }
        let raw = lookup(name);
        match op {
            None => {
                if let Some(raw) = raw {
                    out.push_str(&expand_at(&raw, lookup, depth + 1)?);
                }
            }
            Some((b'?', text)) => {
                if raw.is_some_and(|r| !r.is_empty()) {
                    out.push_str(&expand_at(text, lookup, depth + 1)?);
                }
            }
            Some((_, text)) => {
                if raw.is_none_or(|r| r.is_empty()) {
                    out.push_str(&expand_at(text, lookup, depth + 1)?);
                }
            }
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the bracket that closes the one at `s[0]`, allowing nesting.
fn matching_close(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(vars: &[(&str, &str)], value: &str) -> Result<String, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        expand(value, &|n| map.get(n).cloned())
    }

    #[test]
    fn all_three_reference_forms_expand() {
        let vars = [("mydomain", "ywnds.com"), ("myhostname", "mail.$mydomain")];
        assert_eq!(run(&vars, "$mydomain").unwrap(), "ywnds.com");
        assert_eq!(run(&vars, "${mydomain}").unwrap(), "ywnds.com");
        assert_eq!(run(&vars, "$(mydomain)").unwrap(), "ywnds.com");
        assert_eq!(run(&vars, "x${mydomain}y").unwrap(), "xywnds.comy");
    }

    #[test]
    fn nested_references_expand_fully() {
        let vars = [
            ("mydomain", "ywnds.com"),
            ("myhostname", "mail.$mydomain"),
            (
                "mydestination",
                "$myhostname, localhost.$mydomain, localhost, $mydomain",
            ),
        ];
        assert_eq!(
            run(&vars, "$mydestination").unwrap(),
            "mail.ywnds.com, localhost.ywnds.com, localhost, ywnds.com"
        );
    }

    #[test]
    fn undefined_names_expand_to_nothing_and_dollars_escape() {
        assert_eq!(run(&[], "a${nothing}b$nothing.c").unwrap(), "ab.c");
        assert_eq!(run(&[], "cost $$5").unwrap(), "cost $5");
        assert_eq!(run(&[], "trailing $").unwrap(), "trailing $");
    }

    #[test]
    fn conditional_forms() {
        let vars = [("set", "x"), ("empty", "")];
        assert_eq!(run(&vars, "${set?yes}").unwrap(), "yes");
        assert_eq!(run(&vars, "${empty?yes}").unwrap(), "");
        assert_eq!(run(&vars, "${unset:fallback $set}").unwrap(), "fallback x");
        assert_eq!(run(&vars, "${set:fallback}").unwrap(), "");
    }

    #[test]
    fn loops_and_bad_syntax_are_errors_not_crashes() {
        let looped = [("a", "$b"), ("b", "$a")];
        assert!(run(&looped, "$a").unwrap_err().contains("nesting"));
        assert!(run(&[], "${unclosed").unwrap_err().contains("missing '}'"));
        assert!(run(&[], "${bad name}").is_err());
    }
}
