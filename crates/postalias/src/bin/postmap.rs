//! postmap(1): builds `FILE.db` from a `key value` table (transport(5)...),
//! or queries it with `-q KEY`.

fn main() {
    postalias::main_as(pfx_maps::Format::Postmap)
}
