//! The partner API's contract as code, shared by the command handler, the
//! query API and the operator binary's OpenAPI document: what partners see,
//! never how it is stored or carried (that is `platform`).
//!
//! # Layout
//! - [`problem`]: the one HTTP error type, rendered as problem+json.
//! - [`fields`]: JSON body field extraction that names every bad field.
//! - [`caller`]: the per-request access check (`401`, `403`).
//! - [`views`], [`order_view`]: the partner-facing representations shared
//!   by both sides.
//! - [`consistency`]: read-your-writes tokens.

pub mod caller;
pub mod consistency;
pub mod fields;
pub mod order_view;
pub mod problem;
pub mod views;
