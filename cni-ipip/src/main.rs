//! `cni-ipip`: the CNI binary. SKELETON.

fn main() {}
