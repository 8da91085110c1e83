//! Types of the CNI specification.

pub mod config;
pub mod convert;
pub mod error;
pub mod fields;
pub mod names;
pub mod result;
pub mod version;
