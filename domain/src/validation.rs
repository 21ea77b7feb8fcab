//! Field errors and the identifier rules of the contract.

use serde::Serialize;

/// One bad field of a request, named by its dot-and-index path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field (`firstName`, `address.postalCode`).
    pub field: String,
    /// Machine-readable code (`required`, `invalid`, `unknown_field`, ...).
    pub code: &'static str,
    /// Human-readable explanation, never echoing the submitted value.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The field is required and missing (or null).
    pub fn required(field: impl Into<String>) -> Self {
        Self::new(field, "required", "this field is required")
    }
}

/// A non-fatal remark on an accepted request (`invalid_email`, `email_in_use`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Path of the field the warning is about.
    pub field: String,
    /// Machine-readable code.
    pub code: &'static str,
}

/// Checks an operator-chosen identifier (`clientID`, `locationID`):
/// 1-64 characters of `A-Z a-z 0-9 . _ -`.
pub fn is_reference_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a partner-chosen external identifier (`externalPatientID`,
/// `externalOrderID`, `accessionNumber`): 1-64 visible ASCII characters.
pub fn is_external_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// [`is_reference_id`] as a JSON Schema pattern, as the OpenAPI document
/// states it.
pub const REFERENCE_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";
/// [`is_external_id`] as a JSON Schema pattern.
pub const EXTERNAL_ID_PATTERN: &str = "^[!-~]{1,64}$";
/// A name filter (1-100 characters, none a control character) as a JSON
/// Schema pattern.
pub const NAME_FILTER_PATTERN: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]{1,100}$";

/// Validates a reference id field, pushing an error when it is malformed.
pub fn check_reference_id(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if !is_reference_id(value) {
        errors.push(FieldError::new(
            field,
            "invalid",
            "must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
}

/// Validates an external id field, pushing an error when it is malformed.
pub fn check_external_id(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if !is_external_id(value) {
        errors.push(FieldError::new(
            field,
            "invalid",
            "must be 1-64 visible ASCII characters",
        ));
    }
}

/// [`check_text`] as a JSON Schema pattern: no control character and not
/// only white space (Rust's `trim` set); its length is the field's
/// `maxLength`.
pub const TEXT_PATTERN: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$";

/// Validates a free-text field of bounded length with no control characters.
pub fn check_text(field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(field, "empty", "must not be empty"));
    } else if value.chars().count() > max {
        errors.push(FieldError::new(
            field,
            "too_long",
            format!("must be at most {max} characters"),
        ));
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "invalid",
            "must not contain control characters",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_ids() {
        for ok in ["C1", "a.b_c-D", &"x".repeat(64)] {
            assert!(is_reference_id(ok), "{ok}");
        }
        for bad in ["", "a b", "é", &"x".repeat(65), "a/b"] {
            assert!(!is_reference_id(bad), "{bad}");
        }
    }

    #[test]
    fn external_ids() {
        assert!(is_external_id("MRN-1001/ä".split('ä').next().unwrap()));
        assert!(is_external_id("!~"));
        assert!(!is_external_id("a b"));
        assert!(!is_external_id(""));
        assert!(!is_external_id(&"x".repeat(65)));
        assert!(!is_external_id("tab\t"));
    }
}
