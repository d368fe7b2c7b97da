//! Field errors and the 422 `Invalid` Status built from them, worded as
//! k8s.io/apimachinery `pkg/util/validation/field/errors.go` (`Error.ErrorBody`,
//! `ErrorList.ToAggregate`) and `pkg/api/errors/errors.go` (`NewInvalid`) at v0.33.0
//! (Kubernetes v1.33.0).

use serde_json::{json, Value};

use crate::errors::ApiError;

/// `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueRequired` ("Required value").
    Required,
    /// `FieldValueInvalid` ("Invalid value").
    Invalid,
    /// `FieldValueForbidden` ("Forbidden").
    Forbidden,
    /// `FieldValueTooLong` ("Too long").
    TooLong,
    /// `FieldValueNotSupported` ("Unsupported value").
    NotSupported,
    /// `FieldValueDuplicate` ("Duplicate value").
    Duplicate,
}

impl ErrorType {
    /// The cause type (`reason` of a `StatusCause`).
    pub fn cause(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
        }
    }

    /// `ErrorType.String()`.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
        }
    }
}

/// The bad value of an error, as Go's `ErrorBody` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    /// A string, printed quoted (`%q`).
    Str(String),
    /// A number or bool, printed plain (`%v`).
    Plain(String),
    /// Anything else, printed as given (Go's `%#v`, e.g. `0x0` for a uint64 zero).
    Raw(String),
}

/// One `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Its type.
    pub kind: ErrorType,
    /// The field path (`metadata.name`).
    pub field: String,
    /// The bad value (unused for Required, Forbidden and TooLong).
    pub value: BadValue,
    /// The detail message.
    pub detail: String,
}

/// Go's `strconv.Quote` for the strings the simulator meets (JSON escaping differs only
/// for control characters).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl FieldError {
    /// `field.Required(path, detail)`.
    pub fn required(field: &str, detail: &str) -> Self {
        FieldError {
            kind: ErrorType::Required,
            field: field.into(),
            value: BadValue::Str(String::new()),
            detail: detail.into(),
        }
    }

    /// `field.Invalid(path, value, detail)` with a string value.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        FieldError {
            kind: ErrorType::Invalid,
            field: field.into(),
            value: BadValue::Str(value.into()),
            detail: detail.into(),
        }
    }

    /// `field.Invalid` with a value printed as given (numbers, Go `%#v` forms).
    pub fn invalid_raw(field: &str, value: BadValue, detail: &str) -> Self {
        FieldError {
            kind: ErrorType::Invalid,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            kind: ErrorType::Forbidden,
            field: field.into(),
            value: BadValue::Str(String::new()),
            detail: detail.into(),
        }
    }

    /// `field.TooLong(path, _, max)`: "may not be more than N bytes".
    pub fn too_long(field: &str, max: usize) -> Self {
        FieldError {
            kind: ErrorType::TooLong,
            field: field.into(),
            value: BadValue::Str(String::new()),
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// `Error.ErrorBody()`: the message without the field.
    pub fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong => {
                self.kind.text().to_string()
            }
            _ => match &self.value {
                BadValue::Str(v) => format!("{}: {}", self.kind.text(), go_quote(v)),
                BadValue::Plain(v) | BadValue::Raw(v) => format!("{}: {v}", self.kind.text()),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `Error.Error()`: `field: body`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// `errors.NewInvalid(GroupKind{group, kind}, name, errs)`: 422 `Invalid` with one cause per
/// error and the aggregated message (duplicates dropped, several in `[a, b]`).
pub fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> ApiError {
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut msgs: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    let agg = match msgs.len() {
        0 => String::new(),
        1 => msgs[0].clone(),
        _ => format!("[{}]", msgs.join(", ")),
    };
    let message = if agg.is_empty() {
        format!("{gk} {} is invalid", go_quote(name))
    } else {
        format!("{gk} {} is invalid: {agg}", go_quote(name))
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.kind.cause(), "message": e.body(), "field": e.field}))
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message,
        details: json!({"name": name, "group": group, "kind": kind, "causes": causes}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_like_go() {
        assert_eq!(
            FieldError::required("eventTime", "").message(),
            "eventTime: Required value"
        );
        assert_eq!(
            FieldError::invalid("metadata.name", "a.", "bad").message(),
            "metadata.name: Invalid value: \"a.\": bad"
        );
        assert_eq!(
            FieldError::invalid_raw(
                "metadata.resourceVersion",
                BadValue::Raw("0x0".into()),
                "must be specified for an update"
            )
            .message(),
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).message(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn aggregates_like_new_invalid() {
        let one = invalid("", "Event", "x", &[FieldError::required("action", "")]);
        assert_eq!(
            one.message,
            "Event \"x\" is invalid: action: Required value"
        );
        let two = invalid(
            "coordination.k8s.io",
            "Lease",
            "l",
            &[
                FieldError::required("a", ""),
                FieldError::required("a", ""),
                FieldError::required("b", ""),
            ],
        );
        assert_eq!(
            two.message,
            "Lease.coordination.k8s.io \"l\" is invalid: [a: Required value, b: Required value]"
        );
        assert_eq!(two.details["causes"].as_array().map(Vec::len), Some(3));
        assert_eq!(two.code, 422);
    }
}
