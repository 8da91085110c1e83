//! `cni-vxlan`: the CNI binary. SKELETON.

fn main() {}
