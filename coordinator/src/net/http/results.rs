//! A job's final records: a page of them, or every one as NDJSON, streamed
//! as they are stored until the job ends.

use super::{ndjson_line, HttpResult, Owner};
use crate::domain::model::{JobState, ResultRecord};
use crate::net::Edge;
use crate::services::{jobs, Event, Services};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// Output bytes one page of results holds at most (one record always): a
/// page of `limit` records ends early past it, and the client asks for the
/// next from the last task it got.
pub const PAGE_BYTES: usize = 32 << 20;

#[derive(Deserialize)]
pub(super) struct Page {
    after: Option<u32>,
    limit: Option<u32>,
}

pub(super) async fn list(
    State(edge): State<Arc<Edge>>,
    _: Owner,
    Path(id): Path<u64>,
    Query(page): Query<Page>,
) -> HttpResult<Json<Vec<ResultRecord>>> {
    jobs::status(&edge.services, id).await?;
    let limit = page.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(edge.services.store.results(id, page.after, limit, PAGE_BYTES).await?))
}

/// Newline-delimited JSON: every final record so far, then each new one as it
/// is stored; the stream ends when the job ends.
pub(super) async fn stream(State(edge): State<Arc<Edge>>, _: Owner, Path(id): Path<u64>) -> HttpResult<Response> {
    let services = edge.services.clone();
    jobs::status(&services, id).await?;
    // Subscribe before reading, so nothing stored in between is missed.
    let mut events = services.events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut sent = HashSet::new();
        // Read the state first: a job that ended before this point has all its
        // records in the store; one that ends later announces it as an event.
        let ended_before = ended(&services, id).await;
        if catch_up(&services, id, &mut sent, &tx).await.is_err() || ended_before {
            return;
        }
        loop {
            match events.recv().await {
                Ok(Event::Finished { job, task }) if job == id && !sent.contains(&task) => {
                    if let Ok(Some(r)) = services.store.result(id, task).await {
                        sent.insert(task);
                        if tx.send(Ok(ndjson_line(&r))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Event::Voided { job, task }) if job == id => {
                    // Decided again: its new record is sent when stored.
                    sent.remove(&task);
                }
                Ok(Event::JobEnded { job }) if job == id => {
                    let _ = catch_up(&services, id, &mut sent, &tx).await;
                    return;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: catch up from the store.
                    let ended_before = ended(&services, id).await;
                    if catch_up(&services, id, &mut sent, &tx).await.is_err() || ended_before {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Whether the job has ended (or can no longer be read).
async fn ended(services: &Services, id: u64) -> bool {
    jobs::status(services, id).await.map(|s| s.state != JobState::Running.as_str()).unwrap_or(true)
}

type LineSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends every stored record not yet sent. Err when the reader has gone.
async fn catch_up(services: &Services, id: u64, sent: &mut HashSet<u32>, tx: &LineSender) -> Result<(), ()> {
    let mut after = None;
    while let Ok(page) = services.store.results(id, after, 1000, PAGE_BYTES).await {
        let Some(last) = page.last() else { break };
        after = Some(last.task);
        for r in &page {
            if !sent.insert(r.task) {
                continue;
            }
            tx.send(Ok(ndjson_line(r))).await.map_err(|_| ())?;
        }
    }
    Ok(())
}
