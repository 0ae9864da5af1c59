//! The request log over HTTP, for the admin API to route (it owns the
//! paths and the auth): `GET /api/v1/requests` ([`query_response`]) and
//! the live tail `GET /api/v1/requests/stream` ([`stream_response`], SSE).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Error, Filter, RequestLog, now_ms};

/// A comment on an idle tail, so proxies and browsers keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `200 {"items":[...]}` newest first, or `400 {"error":"..."}` for a bad
/// parameter (503 when the store cannot answer, 404 when the log is off).
pub async fn query_response(log: &RequestLog, query: Option<&str>) -> Response<Full<Bytes>> {
    let found = match Filter::parse(query, now_ms()) {
        Ok(filter) => log.query(&filter).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(items) => json(StatusCode::OK, &serde_json::json!({ "items": items })),
        Err(e) => json(
            status_of(&e),
            &serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadQuery(_) => StatusCode::BAD_REQUEST,
        Error::Off => StatusCode::NOT_FOUND,
        Error::Store(_) | Error::Config(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A `text/event-stream` of the new records of this process that match
/// the query (`host`, `ip`, `user`, `status`): `event: request` and the
/// record's JSON each, `: keep-alive` every 15 s. Ends on `shutdown` or
/// when the client goes; a client too slow for the traffic skips records.
pub fn stream_response(
    log: Arc<RequestLog>,
    query: Option<&str>,
    shutdown: CancellationToken,
) -> Response<BoxBody<Bytes, Infallible>> {
    let filter = match Filter::parse(query, now_ms()) {
        Ok(filter) => filter,
        Err(e) => {
            let response = json(
                status_of(&e),
                &serde_json::json!({ "error": e.to_string() }),
            );
            return response.map(BodyExt::boxed);
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(pump(log.subscribe(), filter, tx, shutdown));
    let mut response = Response::new(Events(rx).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and friends would otherwise hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Moves matching records from the tail to one client's body until the
/// client goes (the body is dropped), the log closes, or `shutdown`.
async fn pump(
    mut tail: broadcast::Receiver<Arc<super::Record>>,
    filter: Filter,
    out: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
) {
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => return,
            () = out.closed() => return,
            _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            next = tail.recv() => match next {
                Ok(record) if filter.matches(&record) => event(&record),
                Ok(_) => continue,
                // Too slow: go on with the newest, say so as a comment.
                Err(broadcast::error::RecvError::Lagged(n)) => Bytes::from(format!(": skipped {n}\n\n")),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}

fn event(record: &super::Record) -> Bytes {
    let json = serde_json::to_string(record).unwrap_or_default();
    Bytes::from(format!("event: request\ndata: {json}\n\n"))
}

/// The SSE body: the frames [`pump`] sends.
struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::record;
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    async fn written(records: Vec<super::super::Record>) -> Arc<RequestLog> {
        let log = Arc::new(RequestLog::memory(100, Duration::from_secs(3600)));
        let stop = CancellationToken::new();
        let writer = tokio::spawn(log.clone().run(stop.clone()));
        for r in records {
            log.record(r);
        }
        stop.cancel();
        writer.await.expect("writer");
        log
    }

    #[tokio::test]
    async fn queries_answer_items_or_400() {
        let now = now_ms();
        let log = written(vec![
            record(now, "a.test", "10.0.0.1", 200),
            record(now, "b.test", "10.0.0.2", 502),
        ])
        .await;
        let ok = query_response(&log, Some("status=5xx")).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let json = body_json(ok).await;
        let items = json["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["host"], "b.test");
        let bad = query_response(&log, Some("limit=5000")).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(
            body_json(bad).await["error"]
                .as_str()
                .is_some_and(|m| m.contains("limit"))
        );
    }

    #[tokio::test]
    async fn the_tail_sends_matching_records_as_events_and_ends_on_shutdown() {
        let log = Arc::new(RequestLog::memory(100, Duration::from_secs(3600)));
        let stop = CancellationToken::new();
        let writer = tokio::spawn(log.clone().run(stop.clone()));
        let response = stream_response(log.clone(), Some("host=b.test"), stop.clone());
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();
        // The pump subscribed before the response was handed back.
        let now = now_ms();
        log.record(record(now, "a.test", "10.0.0.1", 200));
        log.record(record(now, "b.test", "10.0.0.2", 201));
        let frame = body.frame().await.expect("a frame").expect("infallible");
        let text = String::from_utf8(frame.into_data().expect("data").to_vec()).expect("utf-8");
        assert!(text.starts_with("event: request\ndata: {"), "{text}");
        assert!(
            text.contains("\"host\":\"b.test\"") && text.ends_with("\n\n"),
            "{text}"
        );
        stop.cancel();
        assert!(body.frame().await.is_none(), "the tail ends on shutdown");
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn a_bad_tail_query_is_400() {
        let log = Arc::new(RequestLog::memory(10, Duration::from_secs(60)));
        let response = stream_response(log, Some("status=abc"), CancellationToken::new());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
