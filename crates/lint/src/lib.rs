//! `portcullis lint`: a static security audit of OpenAPI descriptions.

pub mod engine;
pub mod load;
pub mod node;
pub mod report;
pub mod rules;
pub mod spec;

pub use engine::{Options, Report, lint_file, lint_text};
pub use rules::{Finding, Profile, Rule, Severity};
