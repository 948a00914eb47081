//! placeholder

pub mod allocator;
pub mod core;
