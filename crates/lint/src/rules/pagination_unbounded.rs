use super::{Finding, Rule, Severity};
use crate::spec::{Spec, type_of};

pub(super) static RULE: Rule = Rule {
    id: "resource-pagination-unbounded",
    owasp: "API4:2023",
    cwe: 770,
    title: "Page size without a maximum",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Give page-size parameters (`limit`, `page_size`, `per_page`...) a `maximum`, and enforce it on the server.",
    explain: "`?limit=1000000` on a list endpoint makes the server read, serialise and send its whole table: the cheapest denial of service there is, and a data-scraping shortcut.",
    check,
};

const NAMES: &[&str] = &[
    "limit",
    "page_size",
    "pagesize",
    "per_page",
    "perpage",
    "size",
    "count",
    "max_results",
    "maxresults",
    "top",
    "first",
    "take",
];

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        for p in &op.params {
            let (Some(name), Some("query")) = (p.str_of("name"), p.str_of("in")) else {
                continue;
            };
            if !super::named(name, NAMES) {
                continue;
            }
            let s = p.get("schema").map(|s| spec.deref(s));
            let numeric = s
                .and_then(type_of)
                .is_some_and(|t| t == "integer" || t == "number");
            if numeric
                && s.is_some_and(|s| {
                    s.get("maximum").is_none() && s.get("exclusiveMaximum").is_none()
                })
            {
                out.push(Finding::new(
                    &RULE,
                    p.get("name").map_or(p.pos, |n| n.pos),
                    format!("`{name}` on `{}` has no maximum", op.label()),
                ));
            }
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
  /products:
    get:
      parameters:
        - name: limit # expect: resource-pagination-unbounded
          in: query
          schema: { type: integer, minimum: 1 }
        - name: per_page
          in: query
          schema: { type: integer, minimum: 1, maximum: 100 }
        - name: offset
          in: query
          schema: { type: integer, minimum: 0 }
      responses: { "200": { description: ok } }
"##,
        );
    }
}
