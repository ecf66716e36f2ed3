//! The event-type catalog: which event types exist, what their `data` looks
//! like, and how strictly ingest checks it.
//!
//! # Stored
//!
//! Everything lives in one KV bucket (`<prefix>_event_types`), one JSON
//! value per key ([`model`]):
//!
//! - `t.<tenant>.<name>`: a tenant's event type ([`EventTypeRecord`]);
//! - `g.<name>`: a type of the global catalog every tenant shares;
//! - `s.<tenant>`: a tenant's [`CatalogSettings`] (`strict`: subscriptions
//!   may name only catalogued types).
//!
//! A tenant is one token (`[A-Za-z0-9_-]{1,64}`) and a name dot-separated
//! tokens, so a key splits at its first two dots.
//!
//! # Versions
//!
//! A type has versions, oldest first; each has a JSON Schema (draft
//! 2020-12) for the event's `data` (empty: any object) and example `data`
//! objects that must validate against it ([`check_examples`]). Events are
//! checked against the current, last, version. A version may be changed in
//! place only if the new schema accepts everything the old one did
//! ([`backward_compatible`]); otherwise the change becomes a new version.
//! Schemas are compiled once ([`compile`]), never fetch anything (only
//! local `$ref`s), and are reused for every event.
//!
//! # Modes
//!
//! Each type's [`Validation`]: `off` (the default: not checked), `warn`
//! (delivered, counted and flagged), `reject` (dead-lettered with the
//! violation's path and message, e.g.
//! `data.course_id: "42" is not of type "integer"`). An archived type
//! checks nothing and admits no new subscriptions.
//!
//! # Lookup
//!
//! [`CatalogIndex`] keeps the bucket in memory, watching it for changes.
//! An event of tenant `T` and type `N` is checked against `T`'s own type
//! `N` if it has one that is not archived, else the global type `N` if it
//! is not archived, else nothing.
#![forbid(unsafe_code)]

pub mod compat;
pub mod index;
pub mod model;
pub mod schema;

pub use compat::{backward_compatible, Incompatibility};
pub use index::{CatalogIndex, Check, CompiledType};
pub use model::{
    parse_key, settings_key, type_key, CatalogSettings, EventTypeRecord, Key, Validation,
    VersionRecord,
};
pub use schema::{
    check_examples, compile, compile_optional, ExampleError, Schema, SchemaError, Violation,
};
