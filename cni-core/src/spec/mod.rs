//! Types of the CNI specification.

pub(crate) mod config;
pub(crate) mod convert;
pub(crate) mod error;
pub(crate) mod fields;
pub(crate) mod names;
pub(crate) mod result;
pub(crate) mod version;
