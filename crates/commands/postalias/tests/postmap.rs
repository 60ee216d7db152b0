//! postmap's `-q` and `-s` on the table types it does not build (regexp,
//! pcre, cidr, inline, static, unionmap, pipemap, tcp): results, warnings,
//! fatal messages and exit codes. Each case states what postfix-rs prints;
//! where Debian's postmap is installed (/usr/sbin/postmap, with
//! postfix-pcre), it must print the same.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Exit code, stdout and stderr of `program args` with `input` on stdin.
fn run(program: &Path, conf: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(program)
        .arg("-c")
        .arg(conf)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), "compatibility_level = 3.6\n").unwrap();
        Self { dir }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Runs ours, checks it against Debian's when that is installed, and
    /// returns ours.
    fn postmap(&self, args: &[&str], input: &str) -> (i32, String, String) {
        let ours = run(
            Path::new(env!("CARGO_BIN_EXE_postmap")),
            self.dir.path(),
            args,
            input,
        );
        let debian = Path::new("/usr/sbin/postmap");
        if debian.exists() {
            let theirs = run(debian, self.dir.path(), args, input);
            assert_eq!(ours, theirs, "postmap {args:?}: ours, then Debian's");
        }
        ours
    }
}

#[test]
fn regexp_rules_answer_and_bad_rules_are_warned_about_with_file_and_line() {
    let s = Setup::new();
    let t = s.file(
        "re",
        "/^(.*)@example\\.com$/ local:$1\n/a(b/ x\n/foo/q bar\n!/bar/ $1\nif /^x/\n/y/ matched-xy\nendif\nendif\n/^Big/ Big\n/z/ ${1}\n/cap(.)/ got$1$$-${1}x\n",
    );
    let spec = format!("regexp:{t}");
    let (code, out, err) = s.postmap(&["-q", "joe@example.com", &spec], "");
    assert_eq!((code, out.as_str()), (0, "local:joe\n"));
    let warnings = [
        format!("postmap: warning: regexp map {t}, line 2: Unmatched ( or \\("),
        format!("postmap: warning: regexp map {t}, line 3: unknown regexp option \"q\": skipping this rule"),
        format!("postmap: warning: regexp map {t}, line 4: $number found in negative match replacement text: skipping this rule"),
        format!("postmap: warning: regexp map {t}, line 8: ignoring ENDIF without matching IF"),
        format!("postmap: warning: regexp map {t}, line 10: out of range replacement index \"1\": skipping this rule"),
    ];
    assert_eq!(err.lines().collect::<Vec<_>>(), warnings);
    assert_eq!(s.postmap(&["-q", "BIG", &spec], "").1, "Big\n");
    assert_eq!(s.postmap(&["-q", "xyz", &spec], "").1, "matched-xy\n");
    assert_eq!(s.postmap(&["-q", "capZ", &spec], "").1, "gotZ$-Zx\n");
    assert_eq!(s.postmap(&["-q", "foo", &spec], "").0, 1);
}

#[test]
fn pcre_and_cidr_answer_from_files_and_inline_rules() {
    let s = Setup::new();
    let p = s.file("pcre", "/^(x)(y)?$/ <$2>\n/c/!/d/ z\n/^e/X f\n");
    let spec = format!("pcre:{p}");
    let (code, out, err) = s.postmap(&["-q", "x", &spec], "");
    assert_eq!((code, out.as_str()), (0, "<>\n"));
    assert!(err.contains(&format!(
        "pcre map {p}, line 2: unknown regexp option \"!\": skipping this rule"
    )));
    assert!(err.contains(&format!(
        "pcre map {p}, line 3: ignoring obsolete regexp option \"X\""
    )));
    let c = s.file(
        "cidr",
        "1.2.3.0/24 net\n!1.2.3.4 not4\n1.2.3.4/24 x\n[2001:db8::]/32 v6net\n",
    );
    let spec = format!("cidr:{c}");
    assert_eq!(s.postmap(&["-q", "1.2.3.9", &spec], "").1, "net\n");
    assert_eq!(s.postmap(&["-q", "9.9.9.9", &spec], "").1, "not4\n");
    assert_eq!(s.postmap(&["-q", "2001:db8::1", &spec], "").1, "v6net\n");
    let (code, _, err) = s.postmap(&["-q", "not-an-address", &spec], "");
    assert_eq!(code, 1);
    assert!(err.contains(&format!(
        "cidr map {c}, line 3: non-null host address bits in \"1.2.3.4/24\", perhaps you should use \"1.2.3.0/24\" instead: skipping this rule"
    )));
    let (code, out, _) = s.postmap(&["-q", "ab", "regexp:{ {/^a/ A}, {/^b/ B} }"], "");
    assert_eq!((code, out.as_str()), (0, "A\n"));
}

#[test]
fn inline_static_union_and_pipe_tables() {
    let s = Setup::new();
    assert_eq!(
        s.postmap(&["-q", "A", "inline:{A=B}"], ""),
        (0, "B\n".into(), String::new())
    );
    assert_eq!(
        s.postmap(&["-q", "x", "inline:{{x=y z},b=c}"], "").1,
        "y z\n"
    );
    assert_eq!(s.postmap(&["-q", "a", "static:{ a b }"], "").1, "a b\n");
    assert_eq!(
        s.postmap(
            &["-q", "x", "unionmap:{inline:{x=y},static:s,inline:{q=z}}"],
            ""
        )
        .1,
        "y,s\n"
    );
    assert_eq!(
        s.postmap(&["-q", "x", "pipemap:{inline:{x=y},inline:{y=z}}"], "")
            .1,
        "z\n"
    );
    assert_eq!(
        s.postmap(&["-q", "x", "pipemap:{inline:{x=y},inline:{q=z}}"], "")
            .0,
        1
    );
    let (code, out, err) = s.postmap(&["-q", "x", "inline:{x=,b=c}"], "");
    assert_eq!((code, out.as_str()), (0, "\n"));
    assert_eq!(
        err,
        "postmap: warning: table inline:{x=,b=c}: key x: empty string result is not allowed\n\
         postmap: warning: table inline:{x=,b=c} should return NO RESULT in case of NOT FOUND\n"
    );
}

#[test]
fn syntax_errors_and_missing_files_are_fatal_as_in_postfix() {
    let s = Setup::new();
    let cases = [
        (vec!["-q", "a", "inline:{}"], "postmap: fatal: bad syntax: \"inline:{}\"; need \"inline:{name=value...}\"\n"),
        (vec!["-q", "a", "inline:{a}"], "postmap: fatal: missing '=' after attribute name: \"inline:{a}\"; need \"inline:{name=value...}\"\n"),
        (vec!["-q", "a", "static:{a}b"], "postmap: fatal: bad static:name syntax: syntax error after '}' in \"{a}b\"\n"),
        (vec!["-q", "a", "unionmap:{a}"], "postmap: fatal: bad syntax: \"unionmap:{a}\"; need \"unionmap:{type:name...}\"\n"),
        (vec!["-q", "a", "regexp:/nonexistent/re"], "postmap: fatal: open /nonexistent/re: No such file or directory\n"),
        (vec!["-q", "a", "unionmap:{cidr:/nonexistent/c}"], "postmap: fatal: open /nonexistent/c: No such file or directory\n"),
        (vec!["-q", "a", "foo:bar"], "postmap: fatal: unsupported dictionary type: foo\n"),
        (vec!["-q", "a", "static:"], "postmap: fatal: open dictionary: expecting \"type:name\" form instead of \"static:\"\n"),
    ];
    for (args, err) in cases {
        assert_eq!(
            s.postmap(&args, ""),
            (1, String::new(), err.to_owned()),
            "{args:?}"
        );
    }
    // Tables are opened when a key needs them: no key, no error.
    assert_eq!(
        s.postmap(&["-q", "-", "regexp:/nonexistent/re"], ""),
        (1, String::new(), String::new())
    );
}

#[test]
fn keys_from_stdin_are_answered_by_the_first_table_that_knows_them() {
    let s = Setup::new();
    let t = s.file("re2", "/a/ b\n");
    let spec = format!("regexp:{t}");
    let (code, out, _) = s.postmap(&["-q", "-", &spec, "inline:{b=c}"], "a\nb\nA\nz\n");
    assert_eq!((code, out.as_str()), (0, "a\tb\nb\tc\nA\tb\n"));
}

#[test]
fn sequence_lists_inline_tables_and_refuses_the_others() {
    let s = Setup::new();
    let t = s.file("re2", "/a/ b\n");
    assert_eq!(
        s.postmap(&["-s", "inline:{ {a=b c} }"], ""),
        (0, "a\tb c\n".into(), String::new())
    );
    for spec in [
        format!("regexp:{t}"),
        format!("pcre:{t}"),
        "static:foo".to_owned(),
        "unionmap:{inline:{a=b},inline:{c=d}}".to_owned(),
        "tcp:127.0.0.1:9".to_owned(),
        "socketmap:inet:127.0.0.1:9:foo".to_owned(),
    ] {
        assert_eq!(
            s.postmap(&["-s", &spec], ""),
            (
                1,
                String::new(),
                format!("postmap: fatal: table {spec}: sequence operation is not supported\n")
            )
        );
    }
    assert_eq!(
        s.postmap(&["-s", &format!("proxy:regexp:{t}")], "").2,
        "postmap: fatal: can't sequence maps via the proxy service\n"
    );
    assert_eq!(
        s.postmap(&["-q", "x", "-s", "inline:{a=b}"], "").2,
        "postmap: fatal: specify only one of -s or -q or -d\n"
    );
}

#[test]
fn tables_that_are_only_read_are_not_built() {
    let s = Setup::new();
    let t = s.file("re2", "/a/ b\n");
    assert_eq!(
        s.postmap(&[&format!("regexp:{t}")], ""),
        (1, String::new(), "postmap: fatal: unsupported dictionary type: regexp does not support bulk-mode creation.\n".into())
    );
    assert_eq!(
        s.postmap(&["inline:{a=b}"], "").2,
        "postmap: fatal: open {a=b}: No such file or directory\n"
    );
    assert_eq!(
        s.postmap(&[&format!("foo:{t}")], "").2,
        "postmap: fatal: unsupported dictionary type: foo. Is the postfix-foo package installed?\n"
    );
}

#[test]
fn a_server_that_refuses_is_a_query_error() {
    let s = Setup::new();
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("socketmap:inet:127.0.0.1:{port}:m");
    assert_eq!(
        s.postmap(&["-q", "k", &spec], ""),
        (
            1,
            String::new(),
            format!(
                "postmap: warning: connect to 127.0.0.1:{port}: Connection refused\n\
                 postmap: warning: table {spec} lookup error: Connection refused\n\
                 postmap: fatal: table {spec}: query error: Connection refused\n"
            )
        )
    );
}
