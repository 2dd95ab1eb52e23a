//! The Sluice engine: pipeline specs, their compilation into DAGs, the scheduler core, the
//! driver that carries out its decisions, and the sled store that makes them durable.

// The API document is one `json!` literal, deeper than the default limit allows.
#![recursion_limit = "256"]

pub mod artifacts;
pub mod clock;
pub mod compile;
pub mod drift;
pub mod driver;
pub mod kinds;
pub mod metrics;
pub mod registry;
pub mod rollout;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod serving;
pub mod spec;
pub mod store;
pub mod syntax;
pub mod template;
pub mod tracking;
pub mod trigger;
