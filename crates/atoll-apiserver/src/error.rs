//! API errors as Kubernetes `metav1.Status` objects.
//!
//! Every failure a client can cause maps to a 4xx with a reason and a message a person can act on;
//! only faults of the server itself (a failed disk write) become 500, and their cause goes to the
//! log, never to the client.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

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

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let message = match self {
            // The cause of an internal fault stays in the log.
            ApiError::Internal(_) => "an internal error occurred; see the server log".to_string(),
            other => other.to_string(),
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let details = match self {
            ApiError::NotFound { subject, .. }
            | ApiError::AlreadyExists { subject, .. }
            | ApiError::Conflict { subject, .. }
            | ApiError::Forbidden { subject, .. }
                if !subject.kind.is_empty() =>
            {
                Some(subject_json(subject))
            }
            ApiError::Invalid {
                subject, causes, ..
            }
            | ApiError::ApplyConflict {
                subject, causes, ..
            } => {
                let mut d = subject_json(subject);
                d["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(d)
            }
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

fn subject_json(s: &Subject) -> Value {
    let mut d = json!({"name": s.name, "kind": s.kind});
    if !s.group.is_empty() {
        d["group"] = json!(s.group);
    }
    d
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
        let body = self.status().to_string();
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
