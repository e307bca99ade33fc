//! The audit log: one JSON line per request (time, user, verb, path, resource, code), appended
//! from a dedicated thread so requests never wait on the file.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

use http::Method;
use serde_json::json;

use crate::request::{self, Query};

pub struct AuditLog {
    lines: mpsc::Sender<String>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog, String> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("atoll-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let _ = file.write_all(line.as_bytes());
                    // Batch what is already waiting before flushing.
                    while let Ok(more) = rx.try_recv() {
                        let _ = file.write_all(more.as_bytes());
                    }
                    let _ = file.flush();
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(AuditLog { lines: tx })
    }

    pub fn record(
        &self,
        user: Option<&str>,
        method: &Method,
        path: &str,
        query: &Query,
        code: u16,
    ) {
        let rr = request::parse(method, path, query).ok().flatten();
        let verb = match &rr {
            Some(r) => format!("{:?}", r.verb).to_lowercase(),
            None => method.as_str().to_lowercase(),
        };
        let mut entry = json!({
            "time": crate::object::now(),
            "user": user.unwrap_or("system:anonymous"),
            "verb": verb,
            "path": path,
            "code": code,
        });
        if let Some(r) = rr {
            entry["group"] = json!(r.group);
            entry["resource"] = json!(r.resource);
            if let Some(s) = r.subresource {
                entry["subresource"] = json!(s);
            }
            if let Some(ns) = r.namespace {
                entry["namespace"] = json!(ns);
            }
            if let Some(n) = r.name {
                entry["name"] = json!(n);
            }
        }
        let mut line = entry.to_string();
        line.push('\n');
        let _ = self.lines.send(line);
    }
}
