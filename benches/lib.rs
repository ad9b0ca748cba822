//! Bench helpers (the benches themselves are the `[[bench]]` targets).
