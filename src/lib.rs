//! tagwatch — GPS electronic monitoring for people on court orders.
//!
//! # Layout
//! - [`config`]: settings from flags and environment, validated once.
//! - [`model`]: plain domain types (ids, fixes, roles, time) with validation; no I/O.
//! - [`engine`]: the compliance engine — zone index, schedules, rule state machines, replay; pure.
//! - [`geodesy`]: local metric projection on WGS84 for distances in metres.
//! - [`store`]: SQLite and PostgreSQL persistence; the only module with SQL.
//! - [`ingest`]: parse → bounded queue → group commit → acknowledgement.
//! - [`registry`]: in-memory caches of tokens and device assignments.
//! - [`query`]: lawful-query maths (location-at-time, crime-scene, H3 cover, crime CSV); pure.
//! - [`audit`]: the audit hash chain (canonical encoding, seal, verify); pure.
//! - [`retention`]: the background purge of fixes past the retention period (audited).
//! - [`api`]: axum routers, one file per resource; the only module that knows HTTP.
//! - [`error`]: the API error type and its problem+json mapping.
//! - [`metrics`]: Prometheus metrics.
//! - [`loadgen`]: the HTTP load generator.
//! - [`sim`]: the seeded fleet simulator on the shipped London geodata (`geodata/`); pure.
//! - [`demo`]: `tagwatch demo`, the whole system on the simulated fleet.
//! - [`app`]: wiring and serving, shared by the CLI and the tests.

pub mod api;
pub mod app;
pub mod audit;
pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
pub mod geodesy;
pub mod ingest;
pub mod loadgen;
pub mod metrics;
pub mod model;
pub mod query;
pub mod registry;
pub mod retention;
pub mod sim;
pub mod store;
pub mod token;

pub use config::Settings;
