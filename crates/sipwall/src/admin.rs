//! The local admin endpoint and its client: `sipwall bans list|add|del`.
//!
//! An HTTP/1.1 JSON API on a loopback address by default, every request authenticated
//! with the bearer token of the `[admin]` table. The CLI reads the same configuration
//! file to find the endpoint and the token, so an operator types no secret.
//!
//! - `GET /v1/bans`: active bans.
//! - `POST /v1/bans` `{"source": "192.0.2.7", "ttl_seconds": 3600, "reason": "…"}`:
//!   bans a source (an IPv4 address, or an IPv6 address or prefix); refused with 403 for
//!   admin networks, trusted peers and the upstream.
//! - `DELETE /v1/bans/{source}`: lifts a ban.
//! - `GET /v1/keeper`: what the keeper of bans has done (restored bans, kernel
//!   transactions, decision-to-kernel times, store errors).
//!
//! A ban or unban is acknowledged once the keeper has carried it to the kernel and the
//! disk; if the disk fails, the answer is 503 and says that the ban holds in memory only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use sipwall_edge::SharedPolicy;
use sipwall_policy::{Ban, BanKind, Engine, Millis};
use tokio::sync::watch;

use crate::keeper::Progress;

/// What the endpoint shares with its handlers.
#[derive(Clone)]
struct Admin {
    policy: SharedPolicy,
    token: String,
    /// The origin of the pipeline's clock (the runtime's).
    clock: Instant,
    /// What the keeper of bans has done.
    progress: watch::Receiver<Progress>,
}

/// How long an acknowledgement waits for the keeper.
const PERSIST_WAIT: Duration = Duration::from_secs(5);

impl Admin {
    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A ban as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BanView {
    /// The source: an address, or an IPv6 prefix.
    pub source: String,
    /// The rule that banned it.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Seconds left.
    pub ttl_seconds: u64,
    /// Packets refused since the ban started.
    pub hits: u64,
    /// Bans of this source so far.
    pub offences: u32,
    /// `drop` or `honeypot`.
    pub kind: String,
}

impl BanView {
    fn new(ban: &Ban, now: Millis) -> BanView {
        BanView {
            source: ban.source.to_string(),
            rule: ban.rule.name().to_string(),
            reason: ban.reason.clone(),
            ttl_seconds: ban.until.saturating_sub(now).div_ceil(1000),
            hits: ban.hits,
            offences: ban.offences,
            kind: match ban.kind {
                BanKind::Drop => "drop",
                BanKind::Honeypot => "honeypot",
            }
            .to_string(),
        }
    }
}

/// The body of `POST /v1/bans`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    /// The source.
    pub source: String,
    /// Seconds; the configured TTL if absent.
    pub ttl_seconds: Option<u64>,
    /// Why; "banned by an administrator" if absent.
    pub reason: Option<String>,
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    policy: SharedPolicy,
    token: String,
    clock: Instant,
    progress: watch::Receiver<Progress>,
) {
    let state = Admin {
        policy,
        token,
        clock,
        progress,
    };
    let app = axum::Router::new()
        .route("/v1/bans", get(list).post(add))
        .route("/v1/keeper", get(keeper))
        .route("/v1/bans/{*source}", delete(remove))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "admin endpoint stopped");
    }
}

/// Refuses requests without the bearer token (compared in constant time).
async fn authenticate(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), admin.token.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list(State(admin): State<Admin>) -> Json<Vec<BanView>> {
    let now = admin.now();
    let engine = admin.engine();
    let mut bans: Vec<BanView> = engine.bans(now).map(|b| BanView::new(b, now)).collect();
    bans.sort_by(|a, b| a.source.cmp(&b.source));
    Json(bans)
}

async fn add(State(admin): State<Admin>, Json(new): Json<NewBan>) -> Response {
    let now = admin.now();
    let reason = new
        .reason
        .unwrap_or_else(|| "banned by an administrator".to_string());
    let ttl = new.ttl_seconds.map(|s| s.saturating_mul(1000));
    // The engine's lock is released before waiting for the keeper.
    let decided = {
        let mut engine = admin.engine();
        match engine.parse_source(&new.source) {
            None => Err((
                StatusCode::BAD_REQUEST,
                format!("not an address or IPv6 prefix: {}\n", new.source),
            )),
            Some(key) => match engine.ban(key, &reason, ttl, now) {
                Ok(ban) => Ok((key, ban, engine.events_recorded())),
                Err(error) => Err((StatusCode::FORBIDDEN, format!("{error}\n"))),
            },
        }
    };
    let (key, ban, ticket) = match decided {
        Ok(decided) => decided,
        Err(refusal) => return refusal.into_response(),
    };
    match admin.handled(ticket).await {
        Ok(()) => (StatusCode::CREATED, Json(BanView::new(&ban, now))).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{key} is banned in memory but not acknowledged: {why}\n"),
        )
            .into_response(),
    }
}

async fn keeper(State(admin): State<Admin>) -> Json<Progress> {
    Json(admin.progress.borrow().clone())
}

impl Admin {
    /// Waits until the keeper has handled `ticket` events (the ban is in the kernel and
    /// on disk); says why not otherwise.
    async fn handled(&self, ticket: u64) -> Result<(), String> {
        let mut progress = self.progress.clone();
        let wait = progress.wait_for(|p| p.handled >= ticket);
        match tokio::time::timeout(PERSIST_WAIT, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the keeper of bans has stopped".into()),
            Err(_) => Err(self
                .progress
                .borrow()
                .store_error
                .clone()
                .unwrap_or_else(|| "the keeper of bans did not answer in time".into())),
        }
    }
}

async fn remove(State(admin): State<Admin>, Path(source): Path<String>) -> Response {
    let now = admin.now();
    // The engine's lock is released before waiting for the keeper.
    let decided = {
        let mut engine = admin.engine();
        match engine.parse_source(&source) {
            None => Err((
                StatusCode::BAD_REQUEST,
                format!("not an address or IPv6 prefix: {source}\n"),
            )),
            Some(key) if engine.unban(key, now) => Ok((key, engine.events_recorded())),
            Some(key) => Err((StatusCode::NOT_FOUND, format!("{key} is not banned\n"))),
        }
    };
    let (key, ticket) = match decided {
        Ok(decided) => decided,
        Err(refusal) => return refusal.into_response(),
    };
    match admin.handled(ticket).await {
        Ok(()) => (StatusCode::OK, format!("lifted the ban of {key}\n")).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the ban of {key} is lifted in memory but not acknowledged: {why}\n"),
        )
            .into_response(),
    }
}

/// One request to the endpoint from the CLI; returns the status and the body.
pub fn call(
    address: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).with_context(|| {
            format!("connecting to the admin endpoint {address} (is sipwall running?)")
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed answer from the admin endpoint")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .context("malformed status line from the admin endpoint")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("unexpected chunked answer from the admin endpoint");
    }
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
