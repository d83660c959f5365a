//! The Portcullis policy model. A policy file (and the OpenAPI description it names) becomes a
//! validated [`Policy`]; every problem is reported at once with file, line, column and key.
//! Also here, because they are pure: path normalisation and the route matcher.
//!
//! Invariant: no sockets, no clocks, no async runtime; the only I/O is reading the files the
//! policy names.

pub mod inventory;
pub mod load;
pub mod model;
pub mod openapi;
pub mod path;
pub mod problem;
mod shape;
pub mod units;

pub use inventory::{Inventory, Lookup, Route, RouteId, Version, VersionStatus};
pub use load::{Loaded, load, load_str, parse_route};
pub use model::*;
pub use problem::{Pos, Problem, Problems, Severity};
