//! API errors as Kubernetes `metav1.Status` objects.
//!
//! Every failure a client can cause maps to a 4xx with a reason and a message a person can act on;
//! only faults of the server itself (a failed disk write) become 500, and their cause goes to the
//! log, never to the client.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

/// One field-level problem, as in `Status.details.causes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueDuplicate`,
    /// `FieldValueTooLong`, `FieldValueForbidden`.
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Cause {
        let field = field.into();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {detail}"),
            field,
        }
    }
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{value}\": supported values: {}",
                list.join(", ")
            ),
            field: field.into(),
        }
    }
}

/// What the resource an error is about is called, for `Status.details`.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub group: String,
    /// The resource (plural), e.g. `configmaps`.
    pub kind: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("{message}")]
    NotFound {
        subject: Box<Subject>,
        message: String,
    },
    #[error("{message}")]
    AlreadyExists {
        subject: Box<Subject>,
        message: String,
    },
    #[error("{message}")]
    Conflict {
        subject: Box<Subject>,
        message: String,
    },
    #[error("{message}")]
    Invalid {
        subject: Box<Subject>,
        kind: String,
        message: String,
        causes: Vec<Cause>,
    },
    #[error("{message}")]
    ApplyConflict {
        subject: Box<Subject>,
        message: String,
        causes: Vec<Cause>,
    },
    #[error("{message}")]
    Gone { message: String },
    #[error("{message}")]
    Forbidden {
        subject: Box<Subject>,
        message: String,
    },
    #[error("{message}")]
    Unauthorized { message: String },
    #[error("{message}")]
    MethodNotAllowed { message: String },
    #[error("{message}")]
    NotAcceptable { message: String },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    RequestEntityTooLarge { message: String },
    #[error("{message}")]
    UnprocessableEntity { message: String },
    #[error("internal error: {0}")]
    Internal(String),
    /// Something the request needs beyond this server (a node agent) cannot be reached.
    #[error("{message}")]
    ServiceUnavailable { message: String },
    /// A webhook with `failurePolicy: Fail` could not be consulted (kube-apiserver: 500).
    #[error("{message}")]
    WebhookFailed { message: String },
    /// A webhook said no, with the code it chose (403 by default).
    #[error("{message}")]
    AdmissionDenied { code: u16, message: String },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    /// `resource "name" not found`, phrased as kube-apiserver does.
    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::NotFound {
            message: format!("{} \"{name}\" not found", qualified(group, resource)),
            subject: Box::new(Subject {
                group: group.into(),
                kind: resource.into(),
                name: name.into(),
            }),
        }
    }

    /// The error for a path or resource this server does not serve.
    pub fn no_such_resource() -> ApiError {
        ApiError::NotFound {
            message: "the server could not find the requested resource".into(),
            subject: Box::default(),
        }
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::AlreadyExists {
            message: format!("{} \"{name}\" already exists", qualified(group, resource)),
            subject: Box::new(Subject {
                group: group.into(),
                kind: resource.into(),
                name: name.into(),
            }),
        }
    }

    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
            subject: Box::new(Subject {
                group: group.into(),
                kind: resource.into(),
                name: name.into(),
            }),
        }
    }

    /// `Kind.group "name" is invalid: field: message, ...` with one cause per problem.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let detail: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let detail = if detail.len() == 1 {
            detail[0].clone()
        } else {
            format!("[{}]", detail.join(", "))
        };
        ApiError::Invalid {
            message: format!("{} \"{name}\" is invalid: {detail}", qualified(group, kind)),
            subject: Box::new(Subject {
                group: group.into(),
                kind: kind.into(),
                name: name.into(),
            }),
            kind: kind.into(),
            causes,
        }
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::Gone {
            message: message.into(),
        }
    }

    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        ApiError::Forbidden {
            message: format!(
                "{} \"{name}\" is forbidden: {why}",
                qualified(group, resource)
            ),
            subject: Box::new(Subject {
                group: group.into(),
                kind: resource.into(),
                name: name.into(),
            }),
        }
    }

    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } | ApiError::UnprocessableEntity { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestEntityTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) | ApiError::WebhookFailed { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::AdmissionDenied { code, .. } => StatusCode::from_u16(*code)
                .ok()
                .filter(|c| c.is_client_error())
                .unwrap_or(StatusCode::FORBIDDEN),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::UnprocessableEntity { .. } => "UnprocessableEntity",
            ApiError::Gone { .. } => "Expired",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::Unauthorized { .. } => "Unauthorized",
            ApiError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ApiError::NotAcceptable { .. } => "NotAcceptable",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::RequestEntityTooLarge { .. } => "RequestEntityTooLarge",
            ApiError::Internal(_) | ApiError::WebhookFailed { .. } => "InternalError",
            ApiError::ServiceUnavailable { .. } => "ServiceUnavailable",
            ApiError::AdmissionDenied { code, .. } => match code {
                400 => "BadRequest",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                _ => "Forbidden",
            },
        }
    }

    /// The `metav1.Status` body, as a JSON value (inside watch events).
    pub fn status(&self) -> Value {
        serde_json::to_value(self.status_body()).unwrap_or_default()
    }

    /// The `metav1.Status` body as kube-apiserver writes it: the Go struct's field order and
    /// a trailing newline (clients compare these bytes).
    pub fn status_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(&self.status_body()).unwrap_or_default();
        out.push(b'\n');
        out
    }

    fn status_body(&self) -> StatusBody<'_> {
        let message = match self {
            // The cause of an internal fault stays in the log.
            ApiError::Internal(_) => "an internal error occurred; see the server log".to_string(),
            other => other.to_string(),
        };
        let details = match self {
            ApiError::NotFound { subject, .. }
            | ApiError::AlreadyExists { subject, .. }
            | ApiError::Conflict { subject, .. }
            | ApiError::Forbidden { subject, .. }
                if !subject.kind.is_empty() =>
            {
                Some(StatusDetails::of(subject, &[]))
            }
            ApiError::Invalid {
                subject, causes, ..
            }
            | ApiError::ApplyConflict {
                subject, causes, ..
            } => Some(StatusDetails::of(subject, causes)),
            _ => None,
        };
        StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: EmptyMeta {},
            status: "Failure",
            message,
            reason: self.reason(),
            details,
            code: self.code().as_u16(),
        }
    }
}

/// `metav1.Status`, its fields in the Go struct's order (`omitempty` as there).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: EmptyMeta,
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails<'a>>,
    code: u16,
}

#[derive(serde::Serialize)]
struct EmptyMeta {}

/// `metav1.StatusDetails`: name, group, kind (the resource), causes.
#[derive(serde::Serialize)]
struct StatusDetails<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    group: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<StatusCause<'a>>,
}

impl<'a> StatusDetails<'a> {
    fn of(s: &'a Subject, causes: &'a [Cause]) -> StatusDetails<'a> {
        StatusDetails {
            name: &s.name,
            group: &s.group,
            kind: &s.kind,
            causes: causes
                .iter()
                .map(|c| StatusCause {
                    reason: c.reason,
                    message: &c.message,
                    field: &c.field,
                })
                .collect(),
        }
    }
}

/// `metav1.StatusCause`: its `Type` is written as `reason`.
#[derive(serde::Serialize)]
struct StatusCause<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    field: &'a str,
}

/// `configmaps` or `widgets.example.com`, as kube-apiserver names a resource in messages.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let body = self.status_bytes();
        (
            self.code(),
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<atoll_store::StoreError> for ApiError {
    fn from(e: atoll_store::StoreError) -> Self {
        use atoll_store::StoreError as S;
        match e {
            S::Compacted { requested, oldest } => {
                ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            S::FutureRevision { requested, current } => ApiError::Gone {
                message: format!(
                    "Timeout: Too large resource version: {requested}, current resource version: {current}"
                ),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_are_the_bytes_kube_apiserver_writes() {
        // As kube-apiserver 1.33 answers (the Python client's e2e suite compares these).
        let cases = [
            (
                ApiError::already_exists("apps", "deployments", "triple-nginx"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \"triple-nginx\" already exists","reason":"AlreadyExists","details":{"name":"triple-nginx","group":"apps","kind":"deployments"},"code":409}"#,
            ),
            (
                ApiError::already_exists("", "services", "mock-2"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services \"mock-2\" already exists","reason":"AlreadyExists","details":{"name":"mock-2","kind":"services"},"code":409}"#,
            ),
            (
                ApiError::bad_request("no"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"no","reason":"BadRequest","code":400}"#,
            ),
            (
                ApiError::invalid(
                    "",
                    "ConfigMap",
                    "c",
                    vec![Cause::invalid("metadata.name", "C", "must be lower case")],
                ),
                r#""details":{"name":"c","kind":"ConfigMap","causes":[{"reason":"FieldValueInvalid","message":"#,
            ),
        ];
        for (err, want) in cases {
            let bytes = err.status_bytes();
            let text = String::from_utf8(bytes).expect("UTF-8");
            assert!(text.ends_with("}\n"), "a trailing newline: {text:?}");
            assert!(text.contains(want), "{text}\nwants {want}");
        }
        // The value form (inside watch events) says the same.
        let v = ApiError::not_found("", "pods", "p").status();
        assert_eq!(v["details"]["kind"], "pods");
        assert_eq!(v["code"], 404);
    }
}
