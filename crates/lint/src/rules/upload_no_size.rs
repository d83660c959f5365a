use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "resource-upload-no-size",
    owasp: "API4:2023",
    cwe: 770,
    title: "Uploaded content without a size limit",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Give binary and multipart request bodies a size hint (`maxLength` on the binary string, or `x-max-size`), and enforce a body limit on the server or the gateway.",
    explain: "A file upload with no stated maximum accepts whatever the server's default allows, often hundreds of megabytes per request: storage, memory and processing (thumbnails, virus scans) are spent at the client's choice.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        let Some(body) = op.node.get("requestBody").map(|b| spec.deref(b)) else {
            continue;
        };
        if body.get("x-max-size").is_some() {
            continue;
        }
        for (media, m) in body.get("content").map(|c| c.entries()).unwrap_or_default() {
            let t = media
                .name
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let binary_type = t == "application/octet-stream"
                || t.starts_with("multipart/")
                || t.starts_with("image/")
                || t.starts_with("video/")
                || t.starts_with("audio/");
            if !binary_type || m.get("x-max-size").is_some() {
                continue;
            }
            let schema = m.get("schema").map(|s| spec.deref(s));
            // A binary string, or a multipart object whose binary parts are all bounded.
            let mut unbounded = schema.is_none();
            if let Some(s) = schema {
                crate::spec::walk(spec.files, s, &mut |v| {
                    let binary = v
                        .schema
                        .str_of("format")
                        .is_some_and(|f| f == "binary" || f == "byte")
                        || v.schema.str_of("contentMediaType").is_some();
                    if binary && v.schema.get("maxLength").is_none() {
                        unbounded = true;
                    }
                });
                if t == "application/octet-stream" || t.starts_with("image/") {
                    unbounded |= s.get("maxLength").is_none();
                }
            }
            if unbounded {
                out.push(Finding::new(
                    &RULE,
                    media.pos,
                    format!(
                        "`{}` uploads to `{}` have no size limit",
                        media.name,
                        op.label()
                    ),
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
  /files:
    post:
      requestBody:
        content:
          application/octet-stream: {} # expect: resource-upload-no-size
          multipart/form-data: # expect: resource-upload-no-size
            schema:
              type: object
              properties:
                file: { type: string, format: binary }
      responses: { "201": { description: ok } }
  /avatars:
    put:
      requestBody:
        content:
          image/png:
            schema: { type: string, format: binary, maxLength: 1048576 }
          multipart/form-data:
            x-max-size: 1MiB
      responses: { "200": { description: ok } }
  /notes:
    post:
      requestBody:
        content:
          application/json:
            schema: { type: object, additionalProperties: false, properties: { t: { type: string, maxLength: 9 } } }
      responses: { "201": { description: ok } }
"##,
        );
    }
}
