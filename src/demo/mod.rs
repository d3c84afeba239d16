//! `authgate demo` (cargo feature `demo`, on by default): the gateway next to the development
//! OpenID Connect provider and the echo upstream of the `devidp` crate (tests/devidp). Builds
//! without the feature (the container image, `--no-default-features`) contain none of it.

mod run;

pub use run::run;
