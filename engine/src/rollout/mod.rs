//! Rollouts: a candidate version takes over an alias step by step (canary weights, pauses,
//! analyses) or at once after a preview (blue-green), with automatic rollback when an
//! analysis of the live serving metrics fails. `spec` is what users write, `machine` the
//! pure state machine; the server drives it (`server/rollouts.rs`) and routes requests by
//! its weight (`serving`).

pub mod machine;
pub mod spec;

pub use machine::{Effect, Input, Phase, Rollout, Stage, plan};

#[cfg(test)]
mod tests;
