//! Declares the `madsim` cfg, so `#[cfg(madsim)]` is a known condition (builds with
//! `RUSTFLAGS="--cfg madsim"` switch madsim to its deterministic runtime).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(madsim)");
}
