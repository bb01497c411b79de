//! The README's embedding examples against the lean build (`default-features = false`).
