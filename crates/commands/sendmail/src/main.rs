//! sendmail(1): see the library. Installed under the names `sendmail`,
//! `mailq` and `newaliases`, it acts on the name it was run as.

fn main() {
    let name = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sendmail".into());
    sendmail::main_as(&name)
}
