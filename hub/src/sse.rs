//! Server-Sent Events as bytes: the frames of the push channel (`GET /v1/sync/stream`).
//!
//! A recorded event's frame is the same for every stream that sends it, so it is encoded
//! once ([`crate::bus::LiveEvent::frame`]) and the bytes are shared by every stream; the
//! push pump then writes many frames per body chunk. The frames are standard SSE
//! (`event:`, `id:`, one `data:` line of compact JSON, a blank line), which any SSE parser
//! reads (the agent's is eventsource-stream): compact JSON never holds a raw line break.

use serde::Serialize;
use std::io::Write;

/// The keep-alive of an idle stream: an empty SSE comment.
pub const KEEP_ALIVE: &[u8] = b":\n\n";

/// One SSE message named `name` whose id is `id` and whose data is `data` as JSON.
pub fn frame(name: &str, id: u64, data: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(out, "\nid: {id}\ndata: ");
    serde_json::to_writer(&mut out, data)?;
    out.extend_from_slice(b"\n\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::sse::Event;
    use axum::response::IntoResponse;

    /// The frame is byte for byte what axum's `Sse` wrote for the same event before.
    #[tokio::test]
    async fn a_frame_is_the_standard_sse_encoding() {
        let data = serde_json::json!({"text": "two\nlines", "n": 7});
        let ours = frame("event", 42, &data).unwrap();
        let event = Event::default().event("event").id("42").json_data(&data).unwrap();
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(event)]);
        let body = axum::response::sse::Sse::new(stream).into_response().into_body();
        let axum_bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(ours, axum_bytes.to_vec());
        assert_eq!(ours.iter().filter(|b| **b == b'\n').count(), 4);
    }
}
