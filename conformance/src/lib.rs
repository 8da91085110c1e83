//! Test harness: namespaces, plugin runner, reference plugins.
