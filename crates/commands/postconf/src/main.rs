//! postconf(1): show parameter values and master.cf entries, fields and
//! `-o` parameters; edit main.cf and master.cf.
//!
//! Output is Postfix's: `name = value` (or `name =` for an empty value), sorted
//! by name; values are shown as written unless `-x` expands them. `-e` (implied
//! by a `name=value` argument), `-X` and `-#` rewrite main.cf, or master.cf
//! with `-M`, `-F` or `-P`, atomically (temporary file, fsync, rename),
//! keeping comments, order and every untouched line.

use clap::Parser;
use pfx_config::maincf::{self, Edit};
use pfx_config::Config;
use pfx_maillog::fatal;

const USAGE: &str =
    "postconf [-#adeFhHmMnPvxX] [-c config_dir] [-f (fold lines)] [-o name=value] [name...]";

#[derive(Parser, Debug)]
#[command(
    name = "postconf",
    version,
    about = "Show or change the postfix-rs configuration (main.cf, master.cf)",
    disable_help_flag = true,
    // -c keeps the help text this command has always printed.
    mut_arg(pfx_cli::CONFIG_DIR, |a| a.help("Configuration directory (default: $MAIL_CONFIG or /etc/postfix)"))
)]
struct Args {
    /// Print help (-h means "values only", as in Postfix).
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    config: pfx_cli::ConfigDir,
    /// Show default values instead of the effective ones.
    #[arg(short = 'd')]
    defaults: bool,
    /// Edit main.cf: each argument is name=value.
    #[arg(short = 'e')]
    edit: bool,
    /// Show values only, without "name = ".
    #[arg(short = 'h')]
    values_only: bool,
    /// Show names only.
    #[arg(short = 'H')]
    names_only: bool,
    /// Show master.cf entries (optionally only service or service/type);
    /// with -e, -X or -#, edit them (service/type[=entry]).
    #[arg(short = 'M')]
    master: bool,
    /// Show master.cf fields as service/type/field = value; with -e, edit one.
    #[arg(short = 'F')]
    fields: bool,
    /// Show master.cf -o parameters as service/type/name = value; with -e
    /// or -X, set or remove one.
    #[arg(short = 'P')]
    params: bool,
    /// List the lookup table types this build supports.
    #[arg(short = 'm')]
    maps: bool,
    /// List the SASL server types smtpd supports.
    #[arg(short = 'a')]
    sasl_server: bool,
    /// With -M: one -o option per line.
    #[arg(short = 'f')]
    fold: bool,
    /// Show only parameters set in main.cf.
    #[arg(short = 'n')]
    non_default: bool,
    /// Override a parameter for this command.
    #[arg(short = 'o', value_name = "NAME=VALUE")]
    overrides: Vec<String>,
    /// Verbose.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Expand $name references in the values shown.
    #[arg(short = 'x')]
    expand: bool,
    /// Remove the named parameters from main.cf.
    #[arg(short = 'X')]
    remove: bool,
    /// Comment out the named parameters in main.cf.
    #[arg(short = '#')]
    comment_out: bool,
    /// Parameter names, name=value pairs (with -e) or services (with -M).
    args: Vec<String>,
}

fn main() {
    let mut args: Args = pfx_cli::parse_args("postconf", USAGE);
    let dir = args.config.dir();
    // As Postfix 2.8 and later: a value given means -e.
    if !args.maps && !args.sasl_server && args.args.first().is_some_and(|a| a.contains('=')) {
        args.edit = true;
    }
    if let Err(e) = check_options(&args) {
        fatal(e);
    }
    let on_master = args.master || args.fields || args.params;
    if args.maps {
        for t in pfx_maps::types() {
            println!("{t}");
        }
    } else if args.sasl_server {
        println!("dovecot");
    } else if args.edit || args.remove || args.comment_out {
        if args.args.is_empty() {
            fatal(if args.edit {
                "-e requires name=value argument"
            } else {
                "missing service argument"
            });
        }
        if on_master {
            edit_master_cf(&args, &dir);
        } else {
            edit_main_cf(&args, &dir);
        }
    } else if args.fields {
        show_fields(&args, &dir);
    } else if args.params {
        show_master_params(&args, &dir);
    } else if args.master {
        show_master(&args, &dir);
    } else {
        show_params(&args, &dir);
    }
}

/// Postfix's checks of options that exclude each other: one major mode
/// (`-a`, `-m`, `-M`, `-F`, `-P`, or main.cf), one of each group of
/// modifiers, and only the modifiers a mode takes. The option names come
/// in Postfix's order.
fn check_options(args: &Args) -> Result<(), String> {
    // Postfix's order of option names in its messages.
    let given: Vec<(&str, bool)> = vec![
        ("-a", args.sasl_server),
        ("-d", args.defaults),
        ("-e", args.edit),
        ("-f", args.fold),
        ("-F", args.fields),
        ("-h", args.values_only),
        ("-H", args.names_only),
        ("-m", args.maps),
        ("-M", args.master),
        ("-n", args.non_default),
        ("-o", !args.overrides.is_empty()),
        ("-P", args.params),
        ("-x", args.expand),
        ("-X", args.remove),
        ("-#", args.comment_out),
    ];
    let set = |names: &str| -> Vec<&str> {
        given
            .iter()
            .filter(|(n, on)| *on && names.split(' ').any(|x| x == *n))
            .map(|(n, _)| *n)
            .collect()
    };
    for group in [
        "-a -m -M -F -P",
        "-d -e -n -# -X",
        "-f -e -# -X",
        "-x -e -# -X",
        "-o -d -e -# -X",
        "-h -e -# -X -H",
    ] {
        let on = set(group);
        if on.len() > 1 {
            return Err(format!("specify one of {}", on.join(" ")));
        }
    }
    let (mode, allowed) = if args.sasl_server {
        ("-a", "")
    } else if args.maps {
        ("-m", "")
    } else if args.master {
        ("-M", "-e -X -# -f -o -x")
    } else if args.fields {
        ("-F", "-e -f -h -o -x -H")
    } else if args.params {
        ("-P", "-e -X -f -h -o -x -H")
    } else {
        return Ok(());
    };
    let excess: Vec<&str> = given
        .iter()
        .filter(|(n, on)| *on && *n != mode && !allowed.split(' ').any(|x| x == *n))
        .map(|(n, _)| *n)
        .collect();
    if excess.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "with option {mode}, do not specify {}",
            excess.join(" ")
        ))
    }
}

fn edit_master_cf(args: &Args, dir: &std::path::Path) {
    use pfx_config::masteredit::{self, Mode};
    let mode = if args.edit {
        Mode::Set
    } else if args.remove {
        Mode::Remove
    } else {
        Mode::CommentOut
    };
    let reqs: Vec<masteredit::Request> = args
        .args
        .iter()
        .map(|a| {
            masteredit::request(a, args.master, args.fields, mode).unwrap_or_else(|e| fatal(e))
        })
        .collect();
    let path = dir.join("master.cf");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| fatal(format!("open {} for reading: {e}", path.display())));
    let (new, unmatched) = masteredit::edit(&path, &text, mode, &reqs).unwrap_or_else(|e| fatal(e));
    for r in unmatched {
        warn(&format!("unmatched service_name/type: \"{r}\""));
    }
    pfx_sys::fs::write_atomic(&path, new.as_bytes())
        .unwrap_or_else(|e| fatal(format!("write {}: {e}", path.display())));
}

/// The master.cf entries `args` select: all, or those a `service`,
/// `service/type` or `service/type/name` argument names; with the last
/// part of the argument, when there is one.
fn selected<'a>(
    args: &'a Args,
    services: &'a [pfx_config::Service],
) -> impl Iterator<Item = (&'a pfx_config::Service, Option<&'a str>)> + 'a {
    services.iter().flat_map(move |s| {
        let all = args.args.is_empty().then_some((s, None));
        let named = args.args.iter().filter_map(move |f| {
            let mut parts = f.splitn(3, '/');
            let (n, t, rest) = (parts.next()?, parts.next(), parts.next());
            (s.name == n && t.is_none_or(|t| s.kind.as_str() == t)).then_some((s, rest))
        });
        all.into_iter().chain(named)
    })
}

/// One line of -F or -P output: `ns/name = value`, or as -h and -H ask.
fn name_value(args: &Args, ns: &str, name: &str, value: &str) -> String {
    if args.names_only {
        format!("{ns}/{name}")
    } else if args.values_only {
        value.to_owned()
    } else {
        format!("{ns}/{name} = {value}")
    }
}

fn show_fields(args: &Args, dir: &std::path::Path) {
    let services = pfx_config::read_master_cf(dir).unwrap_or_else(|e| fatal(e));
    for (s, field) in selected(args, &services) {
        let mut values: Vec<String> = s.columns.to_vec();
        values.push(pfx_config::mastercf::command_line(s));
        for (i, name) in pfx_config::masteredit::FIELDS.iter().enumerate() {
            if field.is_none_or(|f| f == *name || f == "*") {
                println!("{}", name_value(args, &s.id(), name, &values[i]));
            }
        }
    }
}

fn show_master_params(args: &Args, dir: &std::path::Path) {
    let services = pfx_config::read_master_cf(dir).unwrap_or_else(|e| fatal(e));
    for (s, param) in selected(args, &services) {
        let mut params = pfx_config::masteredit::daemon_params(s);
        params.sort();
        for (name, value) in params {
            if param.is_none_or(|p| p == name || p == "*") {
                println!("{}", name_value(args, &s.id(), &name, &value));
            }
        }
    }
}

fn edit_main_cf(args: &Args, dir: &std::path::Path) {
    let edits: Vec<Edit> = args
        .args
        .iter()
        .map(|a| {
            if args.edit {
                let (n, v) = maincf::split_nameval(a).unwrap_or_else(|e| fatal(e));
                Edit::Set(n, v)
            } else if args.remove {
                Edit::Remove(a.clone())
            } else {
                Edit::CommentOut(a.clone())
            }
        })
        .collect();
    let path = dir.join("main.cf");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.edit => String::new(),
        Err(e) => fatal(format!("open {}: {e}", path.display())),
    };
    let new = maincf::edit(&path, &text, &edits).unwrap_or_else(|e| fatal(e));
    pfx_sys::fs::write_atomic(&path, new.as_bytes())
        .unwrap_or_else(|e| fatal(format!("write {}: {e}", path.display())));
}

fn load(args: &Args, dir: &std::path::Path) -> Config {
    let mut cfg = if args.defaults {
        // Defaults are what a configuration with an empty main.cf has; the
        // per-transport ones still come from master.cf's services.
        let mut c = Config::from_text(dir, "").unwrap_or_else(|e| fatal(e));
        if let Ok(services) = pfx_config::read_master_cf(dir) {
            c.set_services(&services);
        }
        c
    } else {
        Config::load(dir).unwrap_or_else(|e| fatal(e))
    };
    for o in &args.overrides {
        let (n, v) = maincf::split_nameval(o).unwrap_or_else(|e| fatal(e));
        cfg.set_override(&n, &v);
    }
    cfg
}

fn show_params(args: &Args, dir: &std::path::Path) {
    let cfg = load(args, dir);
    let master_values: Vec<String> = pfx_config::read_master_cf(dir)
        .map(|s| {
            s.iter()
                .flat_map(|s| s.overrides())
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    let unused = cfg.unused(&master_values);
    if !args.defaults {
        for e in &unused {
            warn(&format!(
                "{}, line {}: unused parameter: {}={}",
                cfg.main_cf().display(),
                e.line,
                e.name,
                e.value
            ));
        }
    }
    // (name, value) to show: every parameter sorted by name, or the named ones in the order given.
    let mut shown: Vec<(String, String)> = Vec::new();
    let value_of = |name: &str| -> Option<String> {
        let raw = if args.defaults && name == "config_directory" {
            // The built-in default, whichever directory -c names.
            Some(pfx_config::DEFAULT_CONFIG_DIR.to_owned())
        } else if args.defaults {
            cfg.default_raw(name)
        } else {
            cfg.raw(name)
        }?;
        Some(if args.expand {
            cfg.expand_text(&raw).unwrap_or_else(|e| fatal(e))
        } else {
            raw
        })
    };
    if args.args.is_empty() {
        let user_defined = cfg
            .entries()
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| cfg.param(n).is_none() && !unused.iter().any(|u| u.name == *n))
            .map(str::to_owned);
        let names: Vec<String> = cfg.param_names().into_iter().chain(user_defined).collect();
        for name in &names {
            let explicitly_set = cfg.is_set(name)
                || (name == "config_directory"
                    && dir != std::path::Path::new(pfx_config::DEFAULT_CONFIG_DIR));
            if args.non_default && !explicitly_set {
                continue;
            }
            if let Some(v) = value_of(name) {
                shown.push((name.to_owned(), v));
            }
        }
        shown.sort();
    } else {
        for name in &args.args {
            let known = cfg.param(name).is_some() || cfg.is_set(name);
            match value_of(name).filter(|_| known) {
                Some(v) if !args.non_default || cfg.is_set(name) => shown.push((name.clone(), v)),
                Some(_) => {}
                None => warn(&format!("{name}: unknown parameter")),
            }
        }
    }
    let mut out = String::new();
    for (name, value) in shown {
        let line = if args.names_only {
            name
        } else if args.values_only {
            value
        } else if value.is_empty() {
            format!("{name} =")
        } else {
            format!("{name} = {value}")
        };
        out.push_str(&line);
        out.push('\n');
    }
    print!("{out}");
}

fn show_master(args: &Args, dir: &std::path::Path) {
    let services = pfx_config::read_master_cf(dir).unwrap_or_else(|e| fatal(e));
    let wanted = |s: &pfx_config::Service| {
        args.args.is_empty()
            || args.args.iter().any(|f| match f.split_once('/') {
                Some((n, t)) => s.name == n && s.kind.as_str() == t,
                None => s.name == *f,
            })
    };
    for s in services.iter().filter(|s| wanted(s)) {
        println!("{}", pfx_config::mastercf::format_entry(s, args.fold));
    }
}

fn warn(msg: &str) {
    eprintln!("postconf: warning: {msg}");
}
