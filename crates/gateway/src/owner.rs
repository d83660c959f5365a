//! Owner fields in JSON bodies: reading one object's owner, and keeping only the caller's
//! items of a list (`/items/*/user_id`).

use serde_json::Value;

/// An owner field as text: strings as they are, numbers as written; nothing else names one.
pub fn owner_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether the object's owner field (JSON pointer) is `me`.
pub fn owns(value: &Value, pointer: &str, me: &str) -> bool {
    value
        .pointer(pointer)
        .and_then(owner_text)
        .is_some_and(|owner| owner == me)
}

/// For a pointer with one `*` segment (`/items/*/user_id`): takes out of the list every item
/// whose owner field is not `me` (missing owners included) and returns how many went. `None`
/// when the body has no list there. Pointers without `*` are not list rules: `None`.
pub fn keep_owned(value: &mut Value, pointer: &str, me: &str) -> Option<usize> {
    let (list, rest) = pointer.split_once("/*/")?;
    let item = format!("/{rest}");
    let items = value.pointer_mut(list)?.as_array_mut()?;
    let before = items.len();
    items.retain(|it| owns(it, &item, me));
    Some(before - items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// An owner as a body may carry it: a string, a number, null, or absent.
    fn owner() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            "[a-c]{1,2}".prop_map(|s| Some(Value::String(s))),
            (0u8..4).prop_map(|n| Some(json!(n))),
        ]
    }

    proptest! {
        #[test]
        fn keep_owned_keeps_exactly_the_callers_items_in_order(
            owners in prop::collection::vec(owner(), 0..20),
            me in prop_oneof!["[a-c]{1,2}", (0u8..4).prop_map(|n| n.to_string())],
            field in "[a-z/~]{1,6}",
        ) {
            // Any field name, `/` and `~` included, through its escaped pointer form.
            let escaped = field.replace('~', "~0").replace('/', "~1");
            let items: Vec<Value> = owners
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let mut m = serde_json::Map::new();
                    // A key the field names cannot be (they have no digits).
                    m.insert("n0".into(), json!(i));
                    if let Some(o) = o {
                        m.insert(field.clone(), o.clone());
                    }
                    Value::Object(m)
                })
                .collect();
            let expected: Vec<Value> = items
                .iter()
                .zip(&owners)
                .filter(|(_, o)| o.as_ref().and_then(owner_text).is_some_and(|t| t == me))
                .map(|(it, _)| it.clone())
                .collect();
            let mut body = json!({ "page": { "items": items } });
            let removed = keep_owned(&mut body, &format!("/page/items/*/{escaped}"), &me);
            prop_assert_eq!(removed, Some(owners.len() - expected.len()));
            prop_assert_eq!(&body["page"]["items"], &Value::Array(expected));
        }

        #[test]
        fn a_missing_or_non_list_target_is_none(v in prop_oneof![
            Just(json!({})),
            Just(json!({ "items": {} })),
            Just(json!({ "items": "x" })),
            Just(json!(null)),
        ]) {
            let mut v = v;
            prop_assert_eq!(keep_owned(&mut v, "/items/*/o", "a"), None);
        }

        #[test]
        fn owns_reads_strings_and_numbers_only(n in any::<i64>(), s in ".{0,8}") {
            let (number, text) = (json!({ "o": n }), json!({ "o": s.clone() }));
            let (list, object) = (json!({ "o": [s.clone()] }), json!({ "o": { "id": s.clone() } }));
            prop_assert!(owns(&number, "/o", &n.to_string()));
            prop_assert!(owns(&text, "/o", &s));
            prop_assert!(!owns(&list, "/o", &s));
            prop_assert!(!owns(&object, "/o", &s));
        }
    }
}
