//! The sipwall binary.
fn main() {}
