//! The LIS domain: aggregates, their commands, events and rules.
//!
//! Everything here is pure: commands and state go in, events or a typed
//! rejection come out, and `apply` folds events into state. What a decision
//! needs from outside (today's date, whether a location exists, whether an
//! email is already a login) is looked up by the caller first and passed in.
//!
//! # Layout
//! - [`validation`]: field errors, warnings and the identifier rules.
//! - [`access`]: permissions and client/location scope.
//! - [`patient`]: the patient aggregate.
//! - [`account`]: the patient portal account aggregate (its own stream).
//! - [`reference`]: clients, locations and partners (operator-managed).
//! - [`catalog`]: the lab's test catalog (operator-managed reference data).
//! - [`order`]: the order aggregate, its status machine and results.
//! - [`event`]: the stream kinds and the common event trait.

pub mod access;
pub mod account;
pub mod catalog;
pub mod event;
pub mod order;
pub mod patch;
pub mod patient;
pub mod reference;
pub mod validation;
