//! The environment master gives its children: `import_environment`.
//!
//! As Postfix's master does, a child gets only the variables that
//! parameter names: `NAME` keeps master's own value when it has one,
//! `NAME=value` sets it (`{ NAME = value with spaces }` too). Everything else
//! master was started with (`LD_PRELOAD`, `IFS`, a caller's locale, ...) stays
//! out. `PATH` is kept as well, for the commands some daemons run.

use std::ffi::OsString;

/// The variables for a child, from `import_environment`'s items and a
/// lookup of master's own environment.
pub(crate) fn imported(
    items: &[String],
    own: impl Fn(&str) -> Option<OsString>,
) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |name: &str, value: OsString| {
        out.retain(|(n, _)| n != name);
        out.push((name.into(), value));
    };
    if let Some(path) = own("PATH") {
        set("PATH", path);
    }
    for item in items {
        let item = match item.strip_prefix('{').and_then(|i| i.strip_suffix('}')) {
            Some(inner) => inner.trim(),
            None => item.as_str(),
        };
        match item.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                set(name.trim(), value.trim_start().into())
            }
            Some(_) => {}
            None => {
                if let Some(v) = own(item) {
                    set(item, v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &str) -> Vec<String> {
        pfx_config::value::split_list(v)
    }

    fn own(name: &str) -> Option<OsString> {
        match name {
            "PATH" => Some("/usr/bin:/bin".into()),
            "TZ" => Some("Europe/Berlin".into()),
            "LD_PRELOAD" => Some("/tmp/evil.so".into()),
            "LANG" => Some("de_DE.UTF-8".into()),
            _ => None,
        }
    }

    #[test]
    fn postfixs_default_keeps_tz_sets_lang_and_drops_the_rest() {
        let env = imported(
            &items("MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME"),
            own,
        );
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("TZ".into(), "Europe/Berlin".into()),
                ("LANG".into(), "C".into()),
            ]
        );
    }

    #[test]
    fn a_named_variable_is_passed_and_a_braced_value_keeps_its_spaces() {
        let env = imported(
            &items("LD_PRELOAD, { GREETING = hello world }, TZ=UTC"),
            own,
        );
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("LD_PRELOAD".into(), "/tmp/evil.so".into()),
                ("GREETING".into(), "hello world".into()),
                ("TZ".into(), "UTC".into()),
            ]
        );
    }
}
