//! The linter on the demo shop's description: clean as shipped, and each weakness put back is
//! flagged at its own line.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use portcullis_lint::{Options, Profile, lint_file, lint_text};

fn shop_spec() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/openapi.yaml"),
    )
    .unwrap()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_shop_description_lints_clean() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/openapi.yaml");
    for profile in [Profile::Default, Profile::Strict] {
        let r = lint_file(
            &path,
            &Options {
                profile,
                ..Options::default()
            },
        );
        assert!(r.findings.is_empty(), "{profile:?}:\n{}", r.to_text());
    }
}

#[test]
fn weaknesses_put_back_are_flagged_at_their_lines() {
    let mut spec = shop_spec();
    // An open request object (mass assignment).
    spec = spec.replacen(
        "    CreateOrderRequest:\n      type: object\n      additionalProperties: false\n",
        "    CreateOrderRequest:\n      type: object\n",
        1,
    );
    // A sequential numeric id on an object path.
    spec = spec.replacen(
        "      description: A product id.\n      schema:\n        type: string\n        minLength: 13\n        maxLength: 37\n        pattern: '^prod_[A-Za-z0-9]{8,32}$'\n",
        "      description: A product id.\n      schema:\n        type: integer\n        minimum: 1\n        maximum: 1000000\n",
        1,
    );
    // An unbounded page size.
    spec = spec.replacen(
        "      description: Page size.\n      schema:\n        type: integer\n        format: int32\n        minimum: 1\n        maximum: 100\n",
        "      description: Page size.\n      schema:\n        type: integer\n        format: int32\n        minimum: 1\n",
        1,
    );
    // A URL field nothing guards.
    spec = spec.replacen("          x-portcullis-ssrf: true\n", "", 1);
    assert_ne!(spec, shop_spec());
    let r = lint_text("shop-weak.yaml", &spec, &Options::default());
    let got: Vec<(&str, usize)> = r.findings.iter().map(|f| (f.rule, f.pos.line)).collect();
    let order_schema = line_of(&spec, "    CreateOrderRequest:") + 1;
    let product_id = line_of(&spec, "      name: product_id");
    let limit = line_of(&spec, "      name: limit");
    let avatar = line_of(&spec, "  AvatarRequest:");
    let url = avatar
        + 1
        + spec
            .lines()
            .skip(avatar)
            .position(|l| l.trim() == "url:")
            .unwrap();
    for want in [
        ("property-open-request-object", order_schema),
        ("authz-sequential-id", product_id),
        ("resource-pagination-unbounded", limit),
        ("ssrf-url-input", url),
    ] {
        assert!(got.contains(&want), "{want:?} not in {got:?}");
    }
    assert_eq!(got.len(), 4, "nothing else: {}", r.to_text());
}

#[test]
fn a_reference_to_a_sibling_file_is_followed_with_its_own_positions() {
    let dir = std::env::temp_dir().join(format!("portcullis-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("api.yaml"),
        "openapi: 3.1.0\ninfo: { title: t, version: \"1\" }\nsecurity: [{ b: [] }]\npaths:\n  /users:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { $ref: \"schemas.yaml#/User\" }\n      responses: { \"201\": { description: ok } }\n  /missing:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { $ref: \"nowhere.yaml#/X\" }\n      responses: { \"201\": { description: ok } }\ncomponents:\n  securitySchemes:\n    b: { type: http, scheme: bearer, bearerFormat: JWT }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("schemas.yaml"),
        "User:\n  type: object\n  properties:\n    name: { type: string, maxLength: 10 }\n",
    )
    .unwrap();
    let r = lint_file(&dir.join("api.yaml"), &Options::default());
    let open = r
        .findings
        .iter()
        .find(|f| f.rule == "property-open-request-object")
        .expect("found through the reference");
    assert!(
        r.files.sources[open.pos.file]
            .path
            .ends_with("schemas.yaml")
    );
    assert_eq!((open.pos.line, open.pos.col), (2, 3));
    let load = r
        .findings
        .iter()
        .find(|f| f.rule == "load")
        .expect("the missing file is reported");
    assert!(load.message.contains("nowhere.yaml"), "{}", load.message);
    assert_eq!(load.pos.line, 17);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SARIF the linter writes is valid SARIF 2.1.0 (the OASIS schema, vendored).
#[test]
fn sarif_output_validates_against_the_sarif_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../schemas/third-party/sarif-2.1.0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut spec = shop_spec();
    spec = spec.replacen("          x-portcullis-ssrf: true\n", "", 1);
    let r = lint_text("shop-weak.yaml", &spec, &Options::default());
    assert!(!r.findings.is_empty());
    let sarif = r.to_sarif();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And an empty report too.
    let clean = lint_text("shop.yaml", &shop_spec(), &Options::default()).to_sarif();
    assert!(validator.is_valid(&clean));
}
