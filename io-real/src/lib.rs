//! # aof2-io-real
//!
//! The production driver of AOF2: the core's ports over the local filesystem,
//! `object_store` and tokio, assembled by [`runtime::ports`] into the
//! [`aof2_core::driver::Ports`] that `driver::run` pumps a machine against.
//!
//! - [`disk`]: `DiskPort` on the local filesystem (positional writes, `fdatasync`,
//!   directory fsync) on tokio's blocking pool;
//! - [`tier2_store`]: `ObjectStorePort` on S3 / a local directory / memory;
//! - [`runtime`]: clock, spawner and CPU pool on tokio, and `ports(...)`;
//! - [`config`]: the configuration file ([`config::AofManagerConfig`]);
//! - [`logging`]: the log events on standard error, filtered by `AOF2_LOG`;
//! - [`manager`]: the embedding API ([`manager::AofManager`], [`manager::Stream`]).
//!
//! It re-exports the core so embedders can depend on one crate.

#![deny(unsafe_code)]

pub use aof2_core as core;

pub mod config;
pub mod disk;
pub mod logging;
pub mod manager;
pub mod runtime;
pub mod tier2_store;

pub use runtime::{PortsError, embedded_tier2, ports};
pub use tier2_store::{S3Settings, Tier2Backend, Tier2Store, Tier2StoreError};

/// `docs/embedding.md`: its examples run as doc tests, so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/embedding.md")]
mod embedding_guide {}
