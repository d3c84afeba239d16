//! Route policy: which rule applies to a request, decided on its normalized path.

pub mod path;
