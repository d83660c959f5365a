use std::collections::BTreeMap;

use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "inventory-versions-side-by-side",
    owasp: "API9:2023",
    cwe: 1059,
    title: "Older API version served with nothing deprecated",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Mark the operations of the older version `deprecated: true` with a sunset date, and retire them; or drop them from the description if they are gone.",
    explain: "Several versions side by side with none deprecated means the old one is maintained by nobody: its bugs and missing checks (the reason for the new version) stay reachable.",
    check,
};

fn version(path: &str) -> Option<u32> {
    path.split('/').find_map(|seg| {
        let n = seg.strip_prefix('v').or_else(|| seg.strip_prefix('V'))?;
        n.parse().ok()
    })
}

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let mut by_version: BTreeMap<u32, Vec<&crate::spec::Op<'_>>> = BTreeMap::new();
    for op in &spec.ops {
        if let Some(v) = version(op.path) {
            by_version.entry(v).or_default().push(op);
        }
    }
    let Some(newest) = by_version.keys().next_back().copied() else {
        return;
    };
    for (v, ops) in &by_version {
        if *v == newest {
            continue;
        }
        if !ops
            .iter()
            .any(|o| o.node.bool_of("deprecated") == Some(true))
            && let Some(first) = ops.first()
        {
            out.push(Finding::new(
                &RULE,
                first.at,
                format!(
                    "v{v} is served beside v{newest} and none of its {} operations is deprecated",
                    ops.len()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixture() {
        super::super::fixture::check(
            &super::RULE,
            r##"
openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /v1/users:
    get: # expect: inventory-versions-side-by-side
      responses: { "200": { description: ok } }
  /v2/users:
    get:
      responses: { "200": { description: ok } }
  /v3/users:
    get:
      responses: { "200": { description: ok } }
  /v2/orders:
    get:
      deprecated: true
      responses: { "200": { description: ok } }
"##,
        );
    }
}
