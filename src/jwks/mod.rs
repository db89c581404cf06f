//! JWKS lifecycle, shared by every worker VM of one Envoy process.
//!
//! Each remote key set has one [`SharedState`] record and one raw-JWKS record in Envoy's shared data (one
//! store per process per `vm_id`). Workers read the record on every tick; the worker whose compare-and-swap
//! takes the *lease* makes the HTTP callout, so `--concurrency N` still fetches once per refresh. A worker
//! that dies mid-fetch only delays the next one until its lease runs out.
//!
//! This module decides; `filter::keys` reads and writes shared data and makes the callout.

use crate::jwt::jwk::{JwksError, KeySet};
use crate::jwt::provider::RemoteJwks;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedState {
    /// Bumped each time a key set that differs from the stored one is stored; workers reload their keys
    /// (and so empty their token caches) when it changes, so an unchanged refresh costs them nothing.
    pub generation: u64,
    /// Bumped when a fetch finishes, either way; requests held for a refetch are settled when it changes.
    pub completed: u64,
    /// When the next scheduled fetch is due (Unix ms); 0 means now.
    pub next_fetch_ms: u64,
    /// A worker holds the fetch until then (Unix ms).
    pub lease_until_ms: u64,
    /// Consecutive failures, for backoff.
    pub failures: u32,
    /// When a token with an unknown `kid` last caused a fetch (Unix ms).
    pub last_refetch_ms: u64,
}

/// What an unknown `kid` may do to the fetch schedule.
#[derive(Debug, PartialEq, Eq)]
pub enum Refetch {
    /// A fetch is scheduled now: store this state (CAS) and hold the request until it completes.
    Scheduled(SharedState),
    /// A fetch is already in flight: hold the request until it completes.
    InFlight,
    /// The last refetch was too recent: decide now with the keys we have.
    RateLimited,
}

impl SharedState {
    pub fn leased(&self, now_ms: u64) -> bool {
        now_ms < self.lease_until_ms
    }

    /// Whether a fetch should start now.
    pub fn fetch_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_fetch_ms && !self.leased(now_ms)
    }

    /// The state to CAS in to take the fetch. The lease outlives the callout timeout so that it cannot run
    /// out while the callout is still legitimately pending.
    pub fn with_lease(&self, now_ms: u64, cfg: &RemoteJwks) -> SharedState {
        SharedState { lease_until_ms: now_ms + cfg.timeout_ms + 1_000, ..self.clone() }
    }

    /// `keys_changed`: whether the fetched set differs from the stored one.
    pub fn after_success(
        &self,
        now_ms: u64,
        max_age_seconds: Option<u64>,
        keys_changed: bool,
        cfg: &RemoteJwks,
    ) -> SharedState {
        let refresh = max_age_seconds
            .map(|s| s.clamp(cfg.min_refresh_interval_seconds, cfg.max_refresh_interval_seconds))
            .unwrap_or(cfg.refresh_interval_seconds);
        SharedState {
            generation: self.generation + u64::from(keys_changed),
            completed: self.completed + 1,
            next_fetch_ms: now_ms + refresh * 1_000,
            lease_until_ms: 0,
            failures: 0,
            last_refetch_ms: self.last_refetch_ms,
        }
    }

    /// Keeps the stored keys (stale-if-error) and retries with exponential backoff.
    pub fn after_failure(&self, now_ms: u64, cfg: &RemoteJwks) -> SharedState {
        let failures = self.failures.saturating_add(1);
        let backoff =
            cfg.retry_initial_backoff_ms.saturating_mul(1u64 << (failures - 1).min(30)).min(cfg.retry_max_backoff_ms);
        SharedState {
            completed: self.completed + 1,
            next_fetch_ms: now_ms + backoff,
            lease_until_ms: 0,
            failures,
            ..self.clone()
        }
    }

    pub fn refetch(&self, now_ms: u64, cfg: &RemoteJwks) -> Refetch {
        if self.leased(now_ms) {
            return Refetch::InFlight;
        }
        let interval = cfg.unknown_kid_refetch_interval_seconds * 1_000;
        if self.last_refetch_ms != 0 && now_ms < self.last_refetch_ms.saturating_add(interval) {
            return Refetch::RateLimited;
        }
        Refetch::Scheduled(SharedState { next_fetch_ms: now_ms, last_refetch_ms: now_ms, ..self.clone() })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A missing or unreadable record is the initial state: fetch now.
    pub fn decode(bytes: Option<&[u8]>) -> SharedState {
        bytes.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default()
    }
}

/// Shared-data key names for one remote JWKS. Equal sources share one record, whichever filter uses them.
pub fn shared_keys(cfg: &RemoteJwks) -> (String, String) {
    let base = format!("mcp_authz.v1.jwks|{}|{}|{}", cfg.cluster, cfg.authority, cfg.path);
    (format!("{base}|state"), format!("{base}|keys"))
}

#[derive(Debug, PartialEq)]
pub enum FetchError {
    /// No response: connection failure, reset or timeout (Envoy reports these with zero headers).
    NoResponse,
    Status(String),
    TooLarge(usize),
    Invalid(JwksError),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            FetchError::NoResponse => f.write_str("no response (connection failure or timeout)"),
            FetchError::Status(s) => write!(f, "HTTP status {s}"),
            FetchError::TooLarge(n) => write!(f, "response of {n} bytes exceeds max_bytes"),
            FetchError::Invalid(e) => e.fmt(f),
        }
    }
}

/// Checks a callout response before its body is read; `status` is None when the callout failed.
pub fn check_head(status: Option<&str>, body_size: usize, cfg: &RemoteJwks) -> Result<(), FetchError> {
    match status {
        None => Err(FetchError::NoResponse),
        Some("200") => {
            if body_size > cfg.max_bytes {
                Err(FetchError::TooLarge(body_size))
            } else {
                Ok(())
            }
        }
        Some(other) => Err(FetchError::Status(other.chars().take(3).collect())),
    }
}

pub fn parse_body(body: &[u8]) -> Result<KeySet, FetchError> {
    KeySet::parse(body).map_err(FetchError::Invalid)
}

/// `max-age` from a `Cache-Control` value; `no-store`/`no-cache` mean "use the configured interval".
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok();
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RemoteJwks {
        RemoteJwks {
            cluster: "c".into(),
            authority: "a".into(),
            path: "/jwks".into(),
            timeout_ms: 2_000,
            refresh_interval_seconds: 600,
            min_refresh_interval_seconds: 30,
            max_refresh_interval_seconds: 3_600,
            unknown_kid_refetch_interval_seconds: 30,
            retry_initial_backoff_ms: 1_000,
            retry_max_backoff_ms: 8_000,
            max_bytes: 1_000,
        }
    }

    #[test]
    fn initial_state_fetches_at_once_and_lease_excludes_others() {
        let s = SharedState::decode(None);
        assert!(s.fetch_due(5));
        let leased = s.with_lease(5, &cfg());
        assert!(!leased.fetch_due(6));
        assert!(leased.fetch_due(5 + 3_000), "lease runs out after timeout + 1 s");
    }

    #[test]
    fn success_schedules_refresh_honouring_max_age_within_bounds() {
        let s = SharedState::default().with_lease(0, &cfg());
        let ok = s.after_success(1_000, None, true, &cfg());
        assert_eq!((ok.generation, ok.completed, ok.next_fetch_ms, ok.lease_until_ms), (1, 1, 601_000, 0));
        assert_eq!(s.after_success(0, Some(120), true, &cfg()).next_fetch_ms, 120_000);
        assert_eq!(s.after_success(0, Some(1), true, &cfg()).next_fetch_ms, 30_000);
        assert_eq!(s.after_success(0, Some(999_999), true, &cfg()).next_fetch_ms, 3_600_000);
    }

    #[test]
    fn unchanged_keys_complete_the_fetch_without_a_new_generation() {
        let s = SharedState { generation: 4, completed: 9, ..Default::default() }.with_lease(0, &cfg());
        let same = s.after_success(1_000, None, false, &cfg());
        assert_eq!((same.generation, same.completed, same.lease_until_ms), (4, 10, 0));
        assert_eq!(s.after_success(1_000, None, true, &cfg()).generation, 5);
    }

    #[test]
    fn failures_back_off_exponentially_and_keep_generation() {
        let mut s = SharedState { generation: 3, ..Default::default() };
        let mut delays = vec![];
        for _ in 0..6 {
            s = s.with_lease(0, &cfg()).after_failure(0, &cfg());
            delays.push(s.next_fetch_ms);
        }
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
        assert_eq!(s.generation, 3);
        assert_eq!(s.completed, 6);
        assert_eq!(s.after_success(0, None, true, &cfg()).failures, 0);
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let s = SharedState { next_fetch_ms: 600_000, ..Default::default() };
        let Refetch::Scheduled(s) = s.refetch(10_000, &cfg()) else { panic!() };
        assert!(s.fetch_due(10_000));
        let s = s.with_lease(10_000, &cfg());
        assert_eq!(s.refetch(10_500, &cfg()), Refetch::InFlight);
        let s = s.after_success(11_000, None, true, &cfg());
        assert_eq!(s.refetch(20_000, &cfg()), Refetch::RateLimited);
        assert!(matches!(s.refetch(40_000, &cfg()), Refetch::Scheduled(_)));
    }

    #[test]
    fn state_round_trips_and_garbage_is_initial() {
        let s = SharedState { generation: 7, failures: 2, ..Default::default() };
        assert_eq!(SharedState::decode(Some(&s.encode())), s);
        assert_eq!(SharedState::decode(Some(b"junk")), SharedState::default());
    }

    #[test]
    fn response_checks() {
        assert_eq!(check_head(None, 0, &cfg()), Err(FetchError::NoResponse));
        assert_eq!(check_head(Some("500"), 10, &cfg()), Err(FetchError::Status("500".into())));
        assert_eq!(check_head(Some("200"), 1_001, &cfg()), Err(FetchError::TooLarge(1_001)));
        assert_eq!(check_head(Some("200"), 1_000, &cfg()), Ok(()));
        assert!(matches!(parse_body(b"<html>"), Err(FetchError::Invalid(_))));
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=300"), Some(300));
        assert_eq!(max_age("Max-Age=\"60\""), Some(60));
        assert_eq!(max_age("no-store, max-age=300"), None);
        assert_eq!(max_age("max-age=abc"), None);
        assert_eq!(max_age(""), None);
    }
}
