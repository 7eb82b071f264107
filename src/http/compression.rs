//! Response compression by `Accept-Encoding` (brotli or gzip, the client's preference first),
//! for bodies of at least `MIN_BYTES` and types that compress (JSON, problem+json, text, CSV,
//! the Swagger UI's scripts). Tiny bodies are sent as they are: compressing them costs more CPU
//! than the bytes it saves. Every response that could have been compressed says
//! `Vary: Accept-Encoding`, so caches keep the variants apart.

use actix_web::Error;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, AcceptEncoding, ContentEncoding, Encoding, Header as _, HeaderValue};
use actix_web::middleware::Next;

/// Bodies smaller than this are not compressed.
pub const MIN_BYTES: u64 = 1024;

fn compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.starts_with("text/")
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/javascript"
        || essence == "image/svg+xml"
}

/// The middleware (`actix_web::middleware::from_fn(compress)`).
pub async fn compress(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let accepted = AcceptEncoding::parse(req.request()).ok();
    let mut res = next.call(req).await?;
    let size = res.response().body().size();
    let eligible = compressible(res.headers().get(header::CONTENT_TYPE))
        && !res.headers().contains_key(header::CONTENT_ENCODING)
        && !matches!(size, BodySize::None | BodySize::Sized(0));
    if !eligible {
        return Ok(res.map_into_boxed_body());
    }
    res.headers_mut().append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let supported = [Encoding::brotli(), Encoding::gzip()];
    let chosen =
        accepted.and_then(|a| a.negotiate(supported.iter())).and_then(|e| match e.to_string().as_str() {
            "br" => Some(ContentEncoding::Brotli),
            "gzip" => Some(ContentEncoding::Gzip),
            _ => None,
        });
    let large = match size {
        BodySize::Sized(n) => n >= MIN_BYTES,
        _ => true, // a stream: unknown, and usually large
    };
    match chosen {
        Some(encoding) if large => {
            Ok(res
                .map_body(|head, body| actix_http::encoding::Encoder::response(encoding, head, body).boxed()))
        }
        _ => Ok(res.map_into_boxed_body()),
    }
}
