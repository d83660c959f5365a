//! The rules. Each file holds one: its id, OWASP API Security Top 10 (2023) category,
//! severity, what it says and the fix, the check, and its fixture tests (a small description
//! with `# expect: RULE` on each line that must be flagged; every other line is a near miss).

use crate::node::Pos;
use crate::spec::Spec;

mod admin_shares_security;
mod array_unbounded;
mod basic_auth;
mod bearer_no_format;
mod credentials_in_query;
mod debug_in_errors;
mod deprecated_no_sunset;
mod http_server;
mod internal_server;
mod mass_assignment;
mod no_error_schema;
mod no_rate_limit_response;
mod no_security;
mod number_unbounded;
mod oauth_flows;
mod open_request_object;
mod pagination_unbounded;
mod security_overridden;
mod sensitive_in_response;
mod sequential_id;
mod ssrf_url;
mod string_unbounded;
mod upload_no_size;
mod versions_side_by_side;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// Which rules run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Everything, style-level rules included.
    Strict,
    /// The rules that point at exploitable design flaws.
    #[default]
    Default,
    /// Only findings of high severity or above.
    Relaxed,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        Some(match s {
            "strict" => Profile::Strict,
            "default" => Profile::Default,
            "relaxed" => Profile::Relaxed,
            _ => return None,
        })
    }
}

/// One rule.
#[derive(Debug)]
pub struct Rule {
    pub id: &'static str,
    /// `API1:2023` ...
    pub owasp: &'static str,
    pub cwe: u32,
    pub title: &'static str,
    /// The usual severity (a rule may raise or lower it per finding).
    pub severity: Severity,
    /// Only in the strict profile.
    pub strict_only: bool,
    pub fix: &'static str,
    /// The longer explanation for `portcullis lint --explain`.
    pub explain: &'static str,
    pub check: fn(&Spec<'_>, &mut Vec<Finding>),
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub pos: Pos,
    pub message: String,
}

impl Finding {
    pub fn new(rule: &Rule, pos: Pos, message: impl Into<String>) -> Self {
        Finding {
            rule: rule.id,
            severity: rule.severity,
            pos,
            message: message.into(),
        }
    }

    pub fn with_severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }
}

/// Every rule, in the order of the OWASP list.
pub static ALL: &[&Rule] = &[
    &sequential_id::RULE,
    &no_security::RULE,
    &security_overridden::RULE,
    &basic_auth::RULE,
    &credentials_in_query::RULE,
    &bearer_no_format::RULE,
    &oauth_flows::RULE,
    &open_request_object::RULE,
    &mass_assignment::RULE,
    &sensitive_in_response::RULE,
    &string_unbounded::RULE,
    &array_unbounded::RULE,
    &number_unbounded::RULE,
    &pagination_unbounded::RULE,
    &no_rate_limit_response::RULE,
    &upload_no_size::RULE,
    &admin_shares_security::RULE,
    &ssrf_url::RULE,
    &http_server::RULE,
    &no_error_schema::RULE,
    &debug_in_errors::RULE,
    &deprecated_no_sunset::RULE,
    &versions_side_by_side::RULE,
    &internal_server::RULE,
];

pub fn find(id: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.id == id)
}

/// Whether `name` is one of `list` however it is spelled: `callback_url`, `callbackUrl`,
/// `CallbackURL` and `callback-url` are one name (case, `_` and `-` set aside).
pub(crate) fn named(name: &str, list: &[&str]) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let n = squash(name);
    list.iter().any(|l| squash(l) == n)
}

/// Names that look like an identifier of an object.
pub(crate) fn is_id_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "id" || n.ends_with("_id") || n.ends_with("id") && name.ends_with("Id")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_match_however_they_are_spelled() {
        let list = ["callback_url", "is_verified", "ownerid"];
        for name in [
            "callbackUrl",
            "CallbackURL",
            "callback-url",
            "isVerified",
            "owner_id",
            "OwnerId",
        ] {
            assert!(super::named(name, &list), "{name}");
        }
        for name in ["callback", "verified", "owner", "callback_urls"] {
            assert!(!super::named(name, &list), "{name}");
        }
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! Runs one rule over a fixture and compares the flagged lines with the `# expect: RULE`
    //! markers.

    use super::*;
    use crate::load::Files;

    pub(crate) fn check(rule: &Rule, text: &str) {
        let files = Files::from_text("fixture.yaml", text);
        let root = files.root().expect("the fixture parses");
        let spec = Spec::new(&files, root);
        let mut found = Vec::new();
        (rule.check)(&spec, &mut found);
        let mut got: Vec<usize> = found.iter().map(|f| f.pos.line).collect();
        got.sort_unstable();
        got.dedup();
        let marker = format!("# expect: {}", rule.id);
        let want: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&marker))
            .map(|(i, _)| i + 1)
            .collect();
        assert!(!want.is_empty(), "the fixture of {} marks no hit", rule.id);
        assert_eq!(
            got, want,
            "{}: flagged lines (left) differ from the marked ones (right): {found:#?}",
            rule.id
        );
    }
}
