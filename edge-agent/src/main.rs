//! The `shelfsync-edge` command line (being built).

fn main() {}
