//! SKELETON: filled in by the cni-routed work.
