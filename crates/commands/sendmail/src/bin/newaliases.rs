//! newaliases(1): `sendmail -bi`, which runs `postalias` on `$alias_database`.

fn main() {
    sendmail::main_as("newaliases")
}
