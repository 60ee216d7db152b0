//! mailq(1): `sendmail -bp`, which runs `postqueue -p`.

fn main() {
    sendmail::main_as("mailq")
}
