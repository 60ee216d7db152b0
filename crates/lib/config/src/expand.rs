//! `$name`, `${name}` and `$(name)` expansion, done when a value is used, as Postfix does.
//!
//! Also `${name?text}` (text when name is set and non-empty), `${name:text}`
//! (text otherwise), `${name?{text1}:{text2}}` (one or the other), the
//! relational form `${{a} OP {b} ? {text1} : {text2}}` that Postfix's own
//! defaults use (`==`, `!=`, numeric `<`, `<=`, `>`, `>=`, and `<level`,
//! `<=level`, `>level`, `>=level` comparing compatibility levels such as
//! `3.6`), and `$$` for a literal dollar. An undefined name expands to
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
                if open == '{' && inner.trim_start().starts_with('{') {
                    if depth >= MAX_DEPTH {
                        return Err(format!("unreasonable macro call nesting: \"{inner}\""));
                    }
                    out.push_str(&relational(inner.trim(), value, lookup, depth + 1)?);
                    rest = &after[end + 1..];
                    continue;
                }
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
            Some((op, text)) => {
                let set = raw.is_some_and(|r| !r.is_empty());
                let (if_set, if_unset) = match (op, text.trim_start().starts_with('{')) {
                    (b'?', true) => {
                        let (a, rest) = braced(text.trim_start(), value)?;
                        let b = match rest.trim().strip_prefix(':') {
                            Some(r) => Some(braced(r.trim_start(), value)?.0),
                            None if rest.trim().is_empty() => None,
                            None => return Err(format!("bad conditional in \"{value}\"")),
                        };
                        (Some(a), b)
                    }
                    (b'?', false) => (Some(text), None),
                    (_, true) => (None, Some(braced(text.trim_start(), value)?.0)),
                    (_, false) => (None, Some(text)),
                };
                if let Some(t) = if set { if_set } else { if_unset } {
                    out.push_str(&expand_at(t, lookup, depth + 1)?);
                }
            }
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `{text}` at the start of `s`: the text inside (without the white space
/// at its ends) and what follows the closing brace.
fn braced<'a>(s: &'a str, value: &str) -> Result<(&'a str, &'a str), String> {
    if !s.starts_with('{') {
        return Err(format!("expected '{{' in \"{value}\""));
    }
    let end = matching_close(s, '{', '}').ok_or_else(|| format!("missing '}}' in \"{value}\""))?;
    Ok((s[1..end].trim(), &s[end + 1..]))
}

/// `{a} OP {b} ? {text1} : {text2}` (the `: {text2}` part may be left out).
fn relational(
    inner: &str,
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    let bad = || format!("bad relational expression in \"{value}\"");
    let (a, rest) = braced(inner, value)?;
    let rest = rest.trim_start();
    let op_len = rest
        .find(|c: char| c.is_whitespace() || c == '{')
        .ok_or_else(bad)?;
    let (op, rest) = rest.split_at(op_len);
    let (b, rest) = braced(rest.trim_start(), value)?;
    let rest = rest.trim_start().strip_prefix('?').ok_or_else(bad)?;
    let (if_true, rest) = braced(rest.trim_start(), value)?;
    let if_false = match rest.trim().strip_prefix(':') {
        Some(r) => braced(r.trim_start(), value)?.0,
        None if rest.trim().is_empty() => "",
        None => return Err(bad()),
    };
    let a = expand_at(a, lookup, depth)?;
    let b = expand_at(b, lookup, depth)?;
    let number = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
    let result = match op {
        "==" => a == b,
        "!=" => a != b,
        "<" => number(&a)? < number(&b)?,
        "<=" => number(&a)? <= number(&b)?,
        ">" => number(&a)? > number(&b)?,
        ">=" => number(&a)? >= number(&b)?,
        "<level" => level(&a).ok_or_else(bad)? < level(&b).ok_or_else(bad)?,
        "<=level" => level(&a).ok_or_else(bad)? <= level(&b).ok_or_else(bad)?,
        ">level" => level(&a).ok_or_else(bad)? > level(&b).ok_or_else(bad)?,
        ">=level" => level(&a).ok_or_else(bad)? >= level(&b).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    expand_at(if result { if_true } else { if_false }, lookup, depth)
}

/// A compatibility level (`0`, `2`, `3.6`, `3.6.1`) as numbers to compare.
pub fn level(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.trim().split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, patch))
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
    fn braced_conditionals_choose_one_text() {
        let vars = [("stress", "yes"), ("empty", "")];
        assert_eq!(run(&vars, "${stress?{10}:{300}}s").unwrap(), "10s");
        assert_eq!(run(&vars, "${empty?{10}:{300}}s").unwrap(), "300s");
        assert_eq!(run(&vars, "${empty?{10}}").unwrap(), "");
        assert_eq!(run(&vars, "${empty:{x y}}").unwrap(), "x y");
    }

    #[test]
    fn compatibility_level_expressions_as_in_postfix_defaults() {
        let d = "${{$compatibility_level} <level {2} ? {subnet} : {host}}";
        assert_eq!(run(&[("compatibility_level", "0")], d).unwrap(), "subnet");
        assert_eq!(run(&[("compatibility_level", "3.6")], d).unwrap(), "host");
        assert_eq!(run(&[("compatibility_level", "2")], d).unwrap(), "host");
        let d = "${{$compatibility_level} <level {3.6} ? {no} : {yes}}";
        assert_eq!(run(&[("compatibility_level", "3.5")], d).unwrap(), "no");
        assert_eq!(run(&[("compatibility_level", "3.10")], d).unwrap(), "yes");
        let d = "${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}";
        assert_eq!(
            run(&[("smtp_tls_security_level", "dane")], d).unwrap(),
            "dane"
        );
        assert_eq!(run(&[], d).unwrap(), "may");
        assert_eq!(run(&[("n", "5")], "${{$n} >= {10} ? {big}}").unwrap(), "");
        assert!(run(&[], "${{a} ~~ {b} ? {x}}").is_err());
        assert!(run(&[("n", "x")], "${{$n} < {1} ? {x}}").is_err());
    }

    #[test]
    fn loops_and_bad_syntax_are_errors_not_crashes() {
        let looped = [("a", "$b"), ("b", "$a")];
        assert!(run(&looped, "$a").unwrap_err().contains("nesting"));
        assert!(run(&[], "${unclosed").unwrap_err().contains("missing '}'"));
        assert!(run(&[], "${bad name}").is_err());
    }
}
