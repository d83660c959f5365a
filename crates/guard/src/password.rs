//! Password policy at the boundary (NIST SP 800-63B): a minimum length (8, or 15 where the
//! password is the only factor), a maximum well above it, no composition rules, and no
//! password that is on the common-password list or contains the account name. The answer
//! names the rule, never the password.

use std::collections::HashSet;
use std::sync::OnceLock;

use portcullis_policy::PasswordRule;

/// Why a password was refused (shown to the client as is).
pub type Violation = &'static str;

fn common() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("common_passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// Checks the password a request body carries. A JSON body without one passes (the schema
/// phase decides whether it is required); a body that is not JSON is refused, as the rule
/// cannot see a password in it (a form-encoded `password=123456` went through).
pub fn check(rule: &PasswordRule, body: &[u8]) -> Result<(), Violation> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err("the body must be JSON, so that its password can be checked");
    };
    let Some(p) = v.pointer(&rule.pointer) else {
        return Ok(());
    };
    let Some(p) = p.as_str() else {
        return Err("the password must be a string");
    };
    let n = p.chars().count();
    if n < rule.min_length {
        return Err(if rule.min_length >= 15 {
            "the password is too short (at least 15 characters when it is the only factor)"
        } else {
            "the password is too short"
        });
    }
    if n > rule.max_length {
        return Err("the password is too long");
    }
    let lower = p.to_lowercase();
    if common().contains(lower.as_str())
        || common().contains(lower.trim_end_matches(|c: char| c.is_ascii_digit() || c == '!'))
    {
        return Err("the password is too common");
    }
    if let Some(account) = rule
        .account_pointer
        .as_ref()
        .and_then(|ptr| v.pointer(ptr))
        .and_then(|a| a.as_str())
    {
        let name = account
            .split('@')
            .next()
            .unwrap_or("")
            .trim()
            .to_lowercase();
        if name.chars().count() >= 3 && lower.contains(&name) {
            return Err("the password must not contain the account name");
        }
    }
    if p.chars().collect::<HashSet<_>>().len() < 3 {
        return Err("the password repeats too few characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min: usize) -> PasswordRule {
        PasswordRule {
            route: 0,
            pointer: "/password".into(),
            account_pointer: Some("/email".into()),
            min_length: min,
            max_length: 128,
        }
    }

    fn body(p: &str) -> Vec<u8> {
        serde_json::json!({ "email": "alice@example.com", "password": p })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn nist_rules() {
        let r = rule(8);
        assert!(check(&r, b"email=a%40b.c&password=123456").is_err());
        assert_eq!(check(&r, &body("short")), Err("the password is too short"));
        assert_eq!(
            check(&r, &body("password123")),
            Err("the password is too common")
        );
        assert_eq!(
            check(&r, &body("Password1!")),
            Err("the password is too common")
        );
        assert_eq!(
            check(&r, &body("alice-in-wonderland")),
            Err("the password must not contain the account name")
        );
        assert_eq!(
            check(&r, &body("aaaaaaaaaaaa")),
            Err("the password repeats too few characters")
        );
        assert_eq!(
            check(&r, &body(&"x1y2".repeat(40))),
            Err("the password is too long")
        );
        assert_eq!(
            check(&r, &body("correct horse battery")),
            Ok(()),
            "no composition rules"
        );
        assert_eq!(
            check(&r, &body("пароль-без-правил")),
            Ok(()),
            "any characters"
        );
        assert!(check(&rule(15), &body("only12chars!")).is_err());
        assert_eq!(
            check(&r, br#"{"email":"a@b.c"}"#),
            Ok(()),
            "absent is the schema's business"
        );
    }
}
