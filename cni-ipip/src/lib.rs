//! SKELETON: filled in by the cni-ipip work.
