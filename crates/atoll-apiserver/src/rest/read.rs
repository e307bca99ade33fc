//! Reads: get, list (paged, at a revision, filtered) and the selectors they use.

use super::*;

impl Ctx {
    pub(crate) fn get(&self) -> ApiResult<Response> {
        let entry = self.get_entry(self.name())?;
        if self.rr.subresource.as_deref() != Some("scale") && !self.wants_table() {
            return Ok(bytes_response(
                StatusCode::OK,
                object::stored_bytes(&self.rt, &entry)?,
            ));
        }
        let obj = decode_stored(&self.rt, &entry)?;
        if self.rr.subresource.as_deref() == Some("scale") {
            return Ok(json_response(StatusCode::OK, &self.scale_of(&obj)));
        }
        if self.wants_table() {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or_default();
            let t = crate::table::table(
                &self.rt.strategy.columns(),
                &[obj],
                self.query.get("includeObject").unwrap_or("Metadata"),
                json!({"resourceVersion": rv}),
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        Ok(json_response(StatusCode::OK, &obj))
    }

    /// Label and field selectors of the request, checked.
    pub fn selectors(&self) -> ApiResult<(LabelSelector, FieldSelector)> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
        let known = self.rt.strategy.fields();
        for r in &fields.0 {
            let ok = matches!(r.field.as_str(), "metadata.name" | "metadata.namespace")
                || known.contains(&r.field);
            if !ok {
                let mut all = vec![
                    "metadata.name".to_string(),
                    "metadata.namespace".to_string(),
                ];
                all.extend(known.iter().cloned());
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {} (\"{}\" is not a known field selector: only {})",
                    r.field,
                    r.field,
                    all.iter()
                        .map(|f| format!("\"{f}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok((labels, fields))
    }

    pub fn matches(&self, obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(&object::labels_of(obj))
            && fields.matches(|f| match f {
                "metadata.name" => meta_str(obj, "name").map(String::from),
                "metadata.namespace" => {
                    Some(meta_str(obj, "namespace").unwrap_or_default().to_string())
                }
                other => self.rt.strategy.field(obj, other),
            })
    }

    pub(crate) fn list(&self) -> ApiResult<Response> {
        let (labels, fields) = self.selectors()?;
        let limit = match self.query.int("limit")? {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => 0,
        };
        let rv = self.query.get("resourceVersion");
        let rv_match = self.query.get("resourceVersionMatch");
        let (mut at, mut start) = (None, None);
        if let Some(token) = self.query.get("continue") {
            if rv.is_some_and(|v| v != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let t = decode_continue(token)?;
            at = Some(t.rv);
            start = Some(t.start);
        } else {
            match (rv, rv_match) {
                (None, Some(_)) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (Some(v), Some("Exact")) => {
                    if v == "0" {
                        return Err(ApiError::bad_request(
                            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                        ));
                    }
                    at = Some(object::parse_rv(v)?);
                }
                (Some(v), Some("NotOlderThan") | None) => {
                    let want = if v == "0" { 0 } else { object::parse_rv(v)? };
                    let head = self.server.store.revision();
                    if want > head {
                        return Err(ApiError::gone(format!(
                            "Too large resource version: {want}, current resource version: {head}"
                        )));
                    }
                }
                (_, Some(other)) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid resourceVersionMatch {other:?}: must be \"Exact\" or \"NotOlderThan\""
                    )));
                }
                (None, None) => {}
            }
        }
        let prefix = self.list_prefix();
        if labels.0.is_empty() && fields.0.is_empty() && !self.wants_table() {
            return self.list_unfiltered(&prefix, start, limit, at);
        }
        let mut items = Vec::new();
        let mut revision = at;
        let mut cursor = start.clone();
        let mut next_continue = None;
        loop {
            let page = self
                .server
                .store
                .list(&prefix, cursor.as_deref(), if limit > 0 { limit.max(64) } else { 0 }, revision)
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if start.is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.",
                    ),
                    other => other.into(),
                })?;
            revision = Some(page.revision);
            let mut last_key = None;
            for (key, entry) in &page.items {
                last_key = Some(key.to_string());
                let obj = decode_stored(&self.rt, entry)?;
                if self.matches(&obj, &labels, &fields) {
                    items.push(obj);
                    if limit > 0 && items.len() == limit {
                        break;
                    }
                }
            }
            let page_done =
                !page.more && last_key.as_deref() == page.items.last().map(|(k, _)| &**k);
            if limit > 0 && items.len() == limit {
                // More may follow only if this page or the store has more keys after the last one.
                let more = !page_done || page.more;
                if more && let Some(k) = last_key {
                    next_continue = Some(encode_continue(&ContinueToken {
                        rv: page.revision,
                        start: k,
                    }));
                }
                break;
            }
            if !page.more {
                break;
            }
            cursor = last_key;
        }
        let mut meta = json!({"resourceVersion": revision.unwrap_or(0).to_string()});
        if let Some(c) = next_continue {
            meta["continue"] = json!(c);
        }
        if self.wants_table() {
            let t = crate::table::table(
                &self.rt.strategy.columns(),
                &items,
                self.query.get("includeObject").unwrap_or("Metadata"),
                meta,
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        let list = json!({
            "kind": format!("{}List", self.rt.kind),
            "apiVersion": self.rt.api_version(),
            "metadata": meta,
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &list))
    }

    /// A list without selectors, as JSON assembled from the stored bytes (nothing decoded).
    pub(crate) fn list_unfiltered(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
        at: Option<u64>,
    ) -> ApiResult<Response> {
        let page = self.server.store.list(prefix, start.as_deref(), limit, at).map_err(|e| match e {
            StoreError::Compacted { .. } if start.is_some() => ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.",
            ),
            other => other.into(),
        })?;
        let mut meta = json!({"resourceVersion": page.revision.to_string()});
        if page.more
            && let Some((last, _)) = page.items.last()
        {
            meta["continue"] = json!(encode_continue(&ContinueToken {
                rv: page.revision,
                start: last.to_string()
            }));
        }
        let total: usize = page.items.iter().map(|(_, e)| e.value.len() + 32).sum();
        let mut out = Vec::with_capacity(total + 256);
        out.extend_from_slice(b"{\"kind\":");
        out.extend_from_slice(
            &serde_json::to_vec(&format!("{}List", self.rt.kind)).unwrap_or_default(),
        );
        out.extend_from_slice(b",\"apiVersion\":");
        out.extend_from_slice(&serde_json::to_vec(&self.rt.api_version()).unwrap_or_default());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(&serde_json::to_vec(&meta).unwrap_or_default());
        out.extend_from_slice(b",\"items\":[");
        for (i, (_, entry)) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&object::stored_bytes(&self.rt, entry)?);
        }
        out.extend_from_slice(b"]}");
        Ok(bytes_response(StatusCode::OK, out))
    }
}

/// The list position a `continue` token carries.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ContinueToken {
    rv: u64,
    start: String,
}

pub(crate) fn encode_continue(t: &ContinueToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

pub(crate) fn decode_continue(s: &str) -> ApiResult<ContinueToken> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: it was not produced by this server")
        })
}
