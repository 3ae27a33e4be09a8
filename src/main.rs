//! `warden`: thin glue over the library (parse → run → exit code).
fn main() {}
