//! # aof2-io-real
//!
//! The production driver of AOF2: it will implement the core's disk, object-store,
//! clock and CPU ports over the local filesystem, `object_store` and tokio, and expose
//! the embedding API. Today it holds the local-disk executor of the core's disk requests,
//! the configuration file ([`config::AofManagerConfig`]), and re-exports the core so
//! embedders can depend on one crate.

#![deny(unsafe_code)]

pub use aof2_core as core;

pub mod config;
pub mod disk;
