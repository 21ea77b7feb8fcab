//! Reading a JSON request body field by field, so that every bad field is
//! named at once: wrong JSON types (400), unknown and read-only fields (422).

use axum::http::{header, HeaderMap, StatusCode};
use domain::patch::Patch;
use domain::validation::FieldError;
use serde_json::{Map, Value};

use crate::problem::ApiError;

/// The documented body size limit: 1 MiB.
pub const MAX_BODY: usize = 1 << 20;

/// Code of a field whose JSON type is wrong (answered with 400).
pub const WRONG_TYPE: &str = "wrong_type";

/// Which JSON media types a write accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (POST).
    Json,
    /// `application/merge-patch+json` or `application/json` (PATCH).
    MergePatch,
}

/// Checks the request's content type (415 otherwise).
pub fn require_json(headers: &HeaderMap, kind: BodyKind) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let ok = matches!(
        (ct.as_deref(), kind),
        (Some("application/json"), _)
            | (Some("application/merge-patch+json"), BodyKind::MergePatch)
    );
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(match kind {
            BodyKind::Json => "application/json",
            BodyKind::MergePatch => "application/merge-patch+json",
        }))
    }
}

/// Parses a body that must be a JSON object (400 otherwise).
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::malformed("The body must be a JSON object.")),
        Err(_) => Err(ApiError::malformed("The body is not valid JSON.")),
    }
}

/// Turns collected field errors into the right problem: 400 when any value
/// has the wrong JSON type, 422 otherwise; `Ok` when there are none.
pub fn check(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else if errors.iter().any(|e| e.code == WRONG_TYPE) {
        Err(ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            detail: "Some values have the wrong JSON type.".into(),
            errors,
        })
    } else {
        Err(ApiError::unprocessable(errors))
    }
}

/// Answers 400 at once when any value has the wrong JSON type (the other
/// field errors wait for the decision, so every bad field is named together).
pub fn reject_wrong_types(errors: &[FieldError]) -> Result<(), ApiError> {
    if errors.iter().any(|e| e.code == WRONG_TYPE) {
        check(errors.to_vec())
    } else {
        Ok(())
    }
}

/// A JSON object being taken apart field by field.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
    /// Errors found so far (including those of nested objects).
    pub errors: Vec<FieldError>,
}

impl Fields {
    /// Starts on a top-level object.
    pub fn new(map: Map<String, Value>) -> Self {
        Fields {
            map,
            prefix: String::new(),
            errors: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn wrong_type(&mut self, name: &str, expected: &str) {
        let path = self.path(name);
        self.errors.push(FieldError::new(
            path,
            WRONG_TYPE,
            format!("must be {expected}"),
        ));
    }

    /// Whether the object has the field (even as `null`).
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Refuses a string holding NUL, which no stored text may hold (the
    /// database refuses it): `None` after recording the error.
    fn text(&mut self, name: &str, s: String) -> Option<String> {
        if s.contains('\0') {
            let path = self.path(name);
            self.errors.push(FieldError::new(
                path,
                "invalid",
                "must not contain the NUL character",
            ));
            None
        } else {
            Some(s)
        }
    }

    /// A string field; absent or `null` is `None`.
    pub fn string(&mut self, name: &str) -> Option<String> {
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => self.text(name, s),
            Some(_) => {
                self.wrong_type(name, "a string");
                None
            }
        }
    }

    /// A string field of a merge patch.
    pub fn string_patch(&mut self, name: &str) -> Patch<String> {
        match self.map.remove(name) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(Value::String(s)) => self.text(name, s).map_or(Patch::Absent, Patch::Set),
            Some(_) => {
                self.wrong_type(name, "a string or null");
                Patch::Absent
            }
        }
    }

    /// An integer field; absent or `null` is `None`. A number with a zero
    /// fraction (`35.0`) is an integer, as JSON Schema counts it.
    pub fn integer(&mut self, name: &str) -> Option<i64> {
        /// Beyond 2^53 a float no longer holds every integer exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let whole = |n: &serde_json::Number| {
            n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
                    .map(|f| f as i64)
            })
        };
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if whole(&n).is_some() => whole(&n),
            Some(_) => {
                self.wrong_type(name, "an integer");
                None
            }
        }
    }

    /// An array field; absent or `null` is `None`.
    pub fn array(&mut self, name: &str) -> Option<Vec<Value>> {
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                self.wrong_type(name, "an array");
                None
            }
        }
    }

    /// Any JSON value, as sent; absent is `None` (and so is a value holding
    /// a NUL character anywhere, after recording the error).
    pub fn raw(&mut self, name: &str) -> Option<Value> {
        fn has_nul(v: &Value) -> bool {
            match v {
                Value::String(s) => s.contains('\0'),
                Value::Array(items) => items.iter().any(has_nul),
                Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
                _ => false,
            }
        }
        let value = self.map.remove(name)?;
        if has_nul(&value) {
            let path = self.path(name);
            self.errors.push(FieldError::new(
                path,
                "invalid",
                "must not contain the NUL character",
            ));
            return None;
        }
        Some(value)
    }

    /// The `index`-th element of the array field `name`, which must be an
    /// object (`tests[0]`); `None` after recording a wrong type.
    pub fn element(&mut self, name: &str, index: usize, value: Value) -> Option<Fields> {
        let path = format!("{}[{index}]", self.path(name));
        match value {
            Value::Object(map) => Some(Fields {
                map,
                prefix: format!("{path}."),
                errors: Vec::new(),
            }),
            _ => {
                self.errors
                    .push(FieldError::new(path, WRONG_TYPE, "must be an object"));
                None
            }
        }
    }

    /// A nested object field; absent or `null` is `None`.
    pub fn object(&mut self, name: &str) -> Option<Fields> {
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(Fields {
                map,
                prefix: format!("{}.", self.path(name)),
                errors: Vec::new(),
            }),
            Some(_) => {
                self.wrong_type(name, "an object");
                None
            }
        }
    }

    /// A nested object field of a merge patch.
    pub fn object_patch(&mut self, name: &str) -> Patch<Fields> {
        match self.map.get(name) {
            None => Patch::Absent,
            Some(Value::Null) => {
                self.map.remove(name);
                Patch::Null
            }
            Some(_) => self.object(name).map_or(Patch::Absent, Patch::Set),
        }
    }

    /// Rejects fields the partner may not set (`patientID`, `version`, ...).
    pub fn read_only(&mut self, names: &[&str]) {
        for name in names {
            if self.map.remove(*name).is_some() {
                let path = self.path(name);
                self.errors.push(FieldError::new(
                    path,
                    "read_only",
                    "this field cannot be set",
                ));
            }
        }
    }

    /// Folds a nested object's errors (including its unknown fields) into
    /// this one's.
    pub fn absorb(&mut self, nested: Fields) {
        let errors = nested.finish();
        self.errors.extend(errors);
    }

    /// Ends the walk: every field not taken is unknown. Returns all errors.
    pub fn finish(mut self) -> Vec<FieldError> {
        let mut unknown: Vec<String> = self.map.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            let path = self.path(&name);
            self.errors.push(FieldError::new(
                path,
                "unknown_field",
                "this field is not recognised",
            ));
        }
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        Fields::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_number_with_a_zero_fraction_is_an_integer() {
        let mut f = fields(json!({"a": 35.0, "b": 35.5, "c": 35, "d": 1e300, "e": -2.0}));
        assert_eq!(f.integer("a"), Some(35));
        assert_eq!(f.integer("b"), None);
        assert_eq!(f.integer("c"), Some(35));
        assert_eq!(f.integer("d"), None);
        assert_eq!(f.integer("e"), Some(-2));
        let got: Vec<String> = f.finish().into_iter().map(|e| e.field).collect();
        assert_eq!(got, vec!["b", "d"]);
    }

    #[test]
    fn names_every_bad_field() {
        let mut f =
            fields(json!({"a": 1, "b": "x", "c": {"d": true, "e": "y"}, "zz": 0, "version": 3}));
        assert_eq!(f.string("a"), None);
        assert_eq!(f.string("b").as_deref(), Some("x"));
        let mut c = f.object("c").unwrap();
        assert_eq!(c.string("d"), None);
        f.absorb(c);
        f.read_only(&["version"]);
        let errors = f.finish();
        let got: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            vec![
                ("a", WRONG_TYPE),
                ("c.d", WRONG_TYPE),
                ("c.e", "unknown_field"),
                ("version", "read_only"),
                ("zz", "unknown_field")
            ]
        );
        let err = check(errors).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn merge_patch_states() {
        let mut f = fields(json!({"a": null, "b": "x", "o": null}));
        assert_eq!(f.string_patch("a"), Patch::Null);
        assert_eq!(f.string_patch("b"), Patch::Set("x".into()));
        assert_eq!(f.string_patch("c"), Patch::Absent);
        assert!(matches!(f.object_patch("o"), Patch::Null));
        assert!(f.finish().is_empty());
        assert_eq!(
            check(vec![FieldError::required("x")]).unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert_eq!(
            parse_object(b"[1]").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_object(b"{").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(
            parse_object(&big).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
