//! `Accept: text/csv` for the lists people open in a spreadsheet (the audit log, invoices,
//! usage): RFC 4180 with a header row, a page of up to `MAX_CSV_ROWS` rows, and the next and
//! previous pages in a `Link` header (RFC 8288), so a download is never silently cut short.
//! A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR) is prefixed
//! with `'` (OWASP's advice on CSV injection): names and audit details are user data.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

/// Rows one CSV response may hold (`limit`, default `DEFAULT_CSV_ROWS`).
pub const MAX_CSV_ROWS: i64 = 10_000;
pub const DEFAULT_CSV_ROWS: i64 = 1_000;

/// Whether the client prefers CSV to JSON (`Accept`, with q-values).
pub fn wants_csv(req: &HttpRequest) -> bool {
    let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let mut csv = 0.0f32;
    let mut json = 0.0f32;
    for part in accept.split(',').take(32) {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "text/csv" => csv = csv.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    csv > 0.0 && csv >= json
}

fn cell(value: &Value) -> String {
    let defused = match value {
        Value::Null => return String::new(),
        // Only text can carry a formula: numbers (a negative amount) stay numbers.
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

/// The items as CSV: `columns` are the fields of each item's JSON, in this order.
pub fn render<T: Serialize>(columns: &[&str], items: &[T]) -> String {
    let mut out = columns.join(",");
    out.push_str("\r\n");
    for item in items {
        let value = serde_json::to_value(item).unwrap_or(Value::Null);
        let row: Vec<String> = columns.iter().map(|c| cell(&value[*c])).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A CSV response, with `Link` to the pages around it (`cursor` replaced in this request's query).
pub fn response(req: &HttpRequest, body: String, next: Option<&str>, prev: Option<&str>) -> HttpResponse {
    let mut links = Vec::new();
    for (rel, cursor) in [("next", next), ("prev", prev)] {
        let Some(cursor) = cursor else { continue };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in
            url::form_urlencoded::parse(req.query_string().as_bytes()).filter(|(k, _)| k != "cursor")
        {
            query.append_pair(&k, &v);
        }
        query.append_pair("cursor", cursor);
        links.push(format!("<{}?{}>; rel=\"{rel}\"", req.path(), query.finish()));
    }
    let mut response = HttpResponse::Ok();
    response.content_type("text/csv; charset=utf-8").insert_header((header::VARY, "Accept"));
    if !links.is_empty() {
        response.insert_header((header::LINK, links.join(", ")));
    }
    response.body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn csv_is_chosen_by_accept_and_quoted_and_defused() {
        let with = |accept: &str| {
            wants_csv(&TestRequest::default().insert_header((header::ACCEPT, accept)).to_http_request())
        };
        assert!(with("text/csv"));
        assert!(with("text/csv, application/json;q=0.5"));
        assert!(!with("application/json, text/csv;q=0.5"));
        assert!(!with("*/*"));
        assert!(!with("text/csv;q=0"));
        assert!(!wants_csv(&TestRequest::default().to_http_request()));

        #[derive(Serialize)]
        struct Row {
            name: &'static str,
            n: i64,
            details: Value,
        }
        let rows = [
            Row { name: "=HYPERLINK(\"http://evil\")", n: 1, details: serde_json::json!({"a": 1}) },
            Row { name: "plain", n: -2, details: Value::Null },
        ];
        let csv = render(&["name", "n", "details", "absent"], &rows);
        assert_eq!(
            csv,
            "name,n,details,absent\r\n\"'=HYPERLINK(\"\"http://evil\"\")\",1,\"{\"\"a\"\":1}\",\r\nplain,-2,,\r\n"
        );
    }
}
