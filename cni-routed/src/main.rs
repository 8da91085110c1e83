//! `cni-routed`: the CNI binary. SKELETON.

fn main() {}
