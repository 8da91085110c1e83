//! The etcd v3 cluster store: compare-and-swap transactions, node records bound to
//! leases, watches.

pub struct EtcdStore {
    pub(crate) prefix: String,
}
