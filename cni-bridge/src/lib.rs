//! The bridge datapath.
