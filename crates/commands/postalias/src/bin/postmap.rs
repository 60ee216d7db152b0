//! postmap(1): builds the table of a `key value` file (transport(5)...)
//! in Postfix's formats (`hash:`, `btree:`, `lmdb:`, `cdb:`), or queries it
//! with `-q KEY`, or prints it with `-s`.

fn main() {
    postalias::main_as(pfx_maps::Format::Postmap)
}
