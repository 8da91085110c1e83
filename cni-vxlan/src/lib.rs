//! SKELETON: filled in by the cni-vxlan work.
