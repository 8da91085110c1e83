//! Links this crate's plugin binary as a position-dependent executable (`-no-pie`). A CNI
//! plugin is a short-lived process exec'd once per ADD/DEL/CHECK; as a PIE the loader
//! first applies ~8,600 relative relocations and copies the pages they touch, about a
//! tenth to a fifth of the process start (README § Performance: start CPU −15 % median,
//! page faults 141 → 103). The price is a fixed load address for the executable itself (the
//! libraries, stack and heap stay randomised).
//!
//! A static build (`scripts/build-dist.sh`, `DIST_STATIC=1`) adds
//! `-C relocation-model=static`, which agrees with this argument: a non-PIE static
//! executable. `+crt-static` alone would make rustc link a static PIE, and `-no-pie` on
//! top of that gives a binary that still names `ld.so` as interpreter and dies of SIGSEGV
//! at start (tried; build-dist.sh's check rejects it).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
