//! placeholder
pub mod executor;
