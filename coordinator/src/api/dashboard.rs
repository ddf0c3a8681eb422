//! The web dashboard under `/ui`: server-rendered, read-only pages for
//! runs (held hosts first), one run (the report page with the same plots)
//! and hosts with their last contact. A browser logs in by pasting the
//! operator token into `/ui/login`; the answer is a random session id in
//! an HttpOnly, SameSite=Strict cookie. Sessions live in memory (a restart
//! logs everyone out) and end after [`SESSION_TTL`] or at `/ui/logout`.
//!
//! Never: change anything but sessions, put the operator token in a
//! cookie or a page, serve a script, or show agent text unescaped.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use common::run_state::RunState;
use common::time::Timestamp;
use common::wire::{Host, Run};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::auth;
use crate::lifecycle::now;
use crate::report::html::{esc, STYLE};

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1024;
const COOKIE: &str = "vet_session";
/// Runs listed on the front page.
const RUNS_SHOWN: usize = 200;

/// Live dashboard sessions, by the SHA-256 of their id.
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session; returns the id for the cookie.
    pub fn create(&self) -> String {
        let id = auth::new_token();
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, exp| *exp > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(auth::hash_token(&id), now + SESSION_TTL);
        id
    }

    pub fn valid(&self, id: &str) -> bool {
        let hash = auth::hash_token(id);
        self.lock()
            .get(&hash)
            .is_some_and(|exp| *exp > Instant::now())
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(&auth::hash_token(id));
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then(|| v.to_string())
        })
}

/// Whether the request is logged in: a live session cookie (or, for
/// scripts, the operator bearer token).
fn logged_in(app: &AppState, headers: &HeaderMap) -> bool {
    session_cookie(headers).is_some_and(|id| app.sessions.valid(&id))
        || app.require_operator(headers).is_ok()
}

/// An HTML answer with headers that keep it self-contained and uncached
/// (also the API's `report.html`).
pub(crate) fn page(status: StatusCode, html: impl IntoResponse) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

const EXTRA_STYLE: &str = "nav{display:flex;gap:18px;align-items:center;border-bottom:1px solid #ddd;padding-bottom:8px;margin-bottom:16px}
nav a{color:#1f4e9c;text-decoration:none;font-weight:600}nav form{margin-left:auto}
button{font:inherit;padding:3px 10px}input[type=password]{font:inherit;width:32em;max-width:100%;padding:3px}
.held{background:#fdecea}.err{color:#c62828;font-weight:600}";

fn nav() -> String {
    format!(
        "<style>{EXTRA_STYLE}</style><nav><b>Vetting</b><a href=\"/ui\">Runs</a><a href=\"/ui/hosts\">Hosts</a>\
         <form method=\"post\" action=\"/ui/logout\"><button type=\"submit\" id=\"logout\">Log out</button></form></nav>"
    )
}

fn shell(title: &str, refresh_s: Option<u32>, body: &str) -> String {
    let refresh = refresh_s
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>{refresh}<style>{STYLE}</style></head><body>{nav}{body}</body></html>",
        title = esc(title),
        nav = nav(),
    )
}

/// "3 min ago" from `then` to `now`.
fn ago(then: Timestamp, now: Timestamp) -> String {
    let s = ((now.unix_millis() - then.unix_millis()) / 1000).max(0);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86399 => format!("{} h {} min ago", s / 3600, s % 3600 / 60),
        _ => format!("{} d ago", s / 86400),
    }
}

fn run_link(r: &Run) -> String {
    format!("<a href=\"/ui/runs/{id}\">{id}</a>", id = r.id)
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| esc(&v.to_string()))
        .unwrap_or_else(|| "–".into())
}

fn runs_page(runs: &[Run], now: Timestamp) -> String {
    let mut b = String::with_capacity(16 * 1024);
    let held: Vec<&Run> = runs
        .iter()
        .filter(|r| r.state == RunState::FailedHolding)
        .collect();
    let _ = write!(b, "<h2 id=\"held\">Held hosts ({})</h2>", held.len());
    if held.is_empty() {
        b.push_str("<p class=\"meta\">No host is held.</p>");
    } else {
        b.push_str("<table><tr><th>Host</th><th>Run</th><th>Failed stage</th><th>Address</th><th>Reach it</th></tr>");
        for r in &held {
            let _ = write!(
                b,
                "<tr class=\"held\"><td>{host}</td><td>{link}</td><td class=\"bad\">{stage}</td><td>{ip}</td><td><code>vetctl run ssh {id}</code></td></tr>",
                host = esc(&r.host),
                link = run_link(r),
                stage = opt(&r.failed_stage),
                ip = opt(&r.hold_ip),
                id = r.id,
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(b, "<h2 id=\"runs\">Runs ({})</h2>", runs.len());
    if runs.len() > RUNS_SHOWN {
        let _ = write!(
            b,
            "<p class=\"meta\">The newest {RUNS_SHOWN} are shown; <code>vetctl run list</code> has all.</p>"
        );
    }
    b.push_str("<table><tr><th>Run</th><th>Host</th><th>State</th><th>Profile</th><th>Result</th><th>Failed stage</th><th>Started</th><th>Ended</th></tr>");
    for r in runs.iter().take(RUNS_SHOWN) {
        let class = match r.state {
            RunState::Passed => "ok",
            RunState::Failed | RunState::FailedHolding | RunState::Aborted => "bad",
            _ => "pend",
        };
        let _ = write!(
            b,
            "<tr><td>{link}</td><td>{host}</td><td class=\"{class}\">{state}</td><td>{profile}</td><td>{result}</td><td>{stage}</td><td>{start} <span class=\"meta\">({ago})</span></td><td>{end}</td></tr>",
            link = run_link(r),
            host = esc(&r.host),
            state = r.state,
            profile = r.profile.as_str(),
            result = opt(&r.result),
            stage = opt(&r.failed_stage),
            start = r.started_at,
            ago = ago(r.started_at, now),
            end = r.completed_at.map(|t| t.to_string()).unwrap_or_else(|| "–".into()),
        );
    }
    b.push_str("</table>");
    shell("Vetting: runs", Some(15), &b)
}

fn hosts_page(hosts: &[Host], runs: &[Run], now: Timestamp) -> String {
    let mut b = String::with_capacity(8 * 1024);
    let _ = write!(b, "<h2 id=\"hosts\">Hosts ({})</h2>", hosts.len());
    b.push_str("<table><tr><th>Host</th><th>MAC</th><th>Last seen</th><th>Latest run</th><th>Notes</th></tr>");
    for h in hosts {
        // `runs` is newest first.
        let latest = runs.iter().find(|r| r.host_id == h.id);
        let seen = match h.last_seen_at {
            Some(t) => format!("{t} <span class=\"meta\">({})</span>", ago(t, now)),
            None => "never".into(),
        };
        let latest = latest
            .map(|r| {
                let held = if r.state == RunState::FailedHolding {
                    " class=\"bad\""
                } else {
                    ""
                };
                format!("{} <span{held}>{}</span>", run_link(r), r.state)
            })
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            b,
            "<tr><td>{name}</td><td><code>{mac}</code></td><td class=\"seen\">{seen}</td><td>{latest}</td><td>{notes}</td></tr>",
            name = esc(&h.name),
            mac = esc(&h.mac),
            notes = esc(&h.notes),
        );
    }
    b.push_str("</table>");
    shell("Vetting: hosts", Some(30), &b)
}

fn login_page(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"err\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Vetting: log in</title><style>{STYLE}{EXTRA_STYLE}</style></head><body>\
         <h1>Vetting</h1>{error}<form method=\"post\" action=\"/ui/login\">\
         <p><label for=\"token\">Operator token (the content of <code>&lt;data-dir&gt;/operator.token</code>)</label></p>\
         <p><input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required autofocus></p>\
         <p><button type=\"submit\" id=\"login\">Log in</button></p></form>\
         <p class=\"meta\">The dashboard is read-only; runs are driven with <code>vetctl</code>.</p></body></html>"
    )
}

fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form() -> Response {
    page(StatusCode::OK, login_page(None))
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(wait) = app.login_limit.check(peer.ip()) {
        tracing::warn!(caller = %peer.ip(), "dashboard login throttled");
        let secs = wait.as_secs().max(1);
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            login_page(Some(&format!(
                "Too many login attempts from this address; try again in {secs} s."
            ))),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    if !app.is_operator_token(form.token.trim()) {
        tracing::warn!("dashboard login with a wrong token");
        return page(
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not the operator token.")),
        );
    }
    let id = app.sessions.create();
    // Over HTTPS the browser must never send it in clear.
    let secure = if app.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let mut resp = Redirect::to("/ui").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        app.sessions.end(&id);
    }
    let mut resp = to_login();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vet_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

async fn runs(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !logged_in(&app, &headers) {
        return Ok(to_login());
    }
    let runs = app.db(|s| Ok(s.list_runs()?)).await?;
    Ok(page(StatusCode::OK, runs_page(&runs, now())))
}

async fn hosts(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !logged_in(&app, &headers) {
        return Ok(to_login());
    }
    let (hosts, runs) = app.db(|s| Ok((s.list_hosts()?, s.list_runs()?))).await?;
    Ok(page(StatusCode::OK, hosts_page(&hosts, &runs, now())))
}

async fn run(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !logged_in(&app, &headers) {
        return Ok(to_login());
    }
    let run_id = crate::api::parse_id(&id, "run id")?;
    let html = app
        .db(move |s| {
            let inputs = s.report_inputs(run_id, true)?;
            let live = !inputs.detail.run.state.is_terminal();
            let report = crate::report::build(&inputs);
            let head = if live {
                "<meta http-equiv=\"refresh\" content=\"10\">"
            } else {
                ""
            };
            Ok(crate::report::html::render_page(
                &report,
                &inputs.plots,
                head,
                &nav(),
            ))
        })
        .await?;
    Ok(page(StatusCode::OK, html))
}

/// The dashboard's routes (merged beside `/api/v1` by `api::router`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(runs))
        .route("/ui/hosts", get(hosts))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_valid_until_ended_and_ids_are_not_stored() {
        let s = Sessions::default();
        let id = s.create();
        assert!(s.valid(&id));
        assert!(!s.valid("not-a-session"));
        assert!(!s.lock().contains_key(&id), "only the hash is kept");
        s.end(&id);
        assert!(!s.valid(&id));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; vet_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("vet_session="));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        let t: Timestamp = "2026-11-23T10:00:00.000Z".parse().unwrap();
        assert_eq!(ago(t, t.plus_millis(42_000)), "42 s ago");
        assert_eq!(ago(t, t.plus_millis(5 * 60_000)), "5 min ago");
        assert_eq!(ago(t, t.plus_millis(90 * 60_000)), "1 h 30 min ago");
        assert_eq!(ago(t, t.plus_millis(3 * 86_400_000)), "3 d ago");
    }
}
