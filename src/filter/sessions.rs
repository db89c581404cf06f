//! Session bindings in shared data: reads, compare-and-swap writes. Decisions are `mcp::sessions`'.

use super::host::Host;
use super::keys::compare_and_swap_cas;
use crate::mcp::sessions::{self, Owner, SessionPolicy, Slot};
use proxy_wasm::types::Status;

/// Bounded retries for a compare-and-swap that loses to other workers.
const CAS_ATTEMPTS: usize = 4;

/// What a request that names a session may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allow,
    /// The filter knows no such session (or it expired): 404, the client starts a new one.
    NotFound,
    /// The session is another caller's.
    OtherCaller,
}

fn read(host: &dyn Host, name: &str) -> (Slot, Option<u32>) {
    let (bytes, cas) = host.shared_get(name);
    (Slot::decode(bytes.as_deref()), cas)
}

/// Rewrites the slot with `change` (None: leave it) until no other worker wrote in between. Returns the
/// slot as it was when the change applied (or was declined).
fn update(host: &dyn Host, name: &str, change: impl Fn(&Slot) -> Option<Slot>) -> Option<Slot> {
    for _ in 0..CAS_ATTEMPTS {
        let (slot, cas) = read(host, name);
        let Some(next) = change(&slot) else { return Some(slot) };
        match host.shared_set(name, &next.encode(), compare_and_swap_cas(cas)) {
            Ok(()) => return Some(slot),
            Err(Status::CasMismatch) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Whether `caller` may use the session `session_id` now; refreshes its binding, or adopts an unknown
/// session when the policy says so.
pub fn check(host: &dyn Host, policy: &SessionPolicy, session_id: &str, caller: &str, now_ms: u64) -> Access {
    let session = sessions::session_fingerprint(session_id);
    let name = sessions::slot_name(&session, policy.slots());
    let (slot, _) = read(host, &name);
    match slot.owner(&session, caller, now_ms, policy) {
        Owner::Caller { refresh } => {
            if refresh {
                // Best effort: a lost race means another request of the same caller refreshed it.
                update(host, &name, |s| {
                    matches!(s.owner(&session, caller, now_ms, policy), Owner::Caller { .. })
                        .then(|| s.bind(&session, caller, now_ms, policy))
                });
            }
            Access::Allow
        }
        Owner::Other => Access::OtherCaller,
        Owner::Unknown if !policy.adopt_unknown => Access::NotFound,
        Owner::Unknown => {
            // Adopted only if no other caller took it in the meantime.
            let before = update(host, &name, |s| {
                (s.owner(&session, caller, now_ms, policy) == Owner::Unknown)
                    .then(|| s.bind(&session, caller, now_ms, policy))
            });
            match before.map(|s| s.owner(&session, caller, now_ms, policy)) {
                Some(Owner::Unknown | Owner::Caller { .. }) => Access::Allow,
                Some(Owner::Other) => Access::OtherCaller,
                None => Access::NotFound,
            }
        }
    }
}

/// The upstream issued `session_id` to `caller`.
pub fn bind(host: &dyn Host, policy: &SessionPolicy, session_id: &str, caller: &str, now_ms: u64) -> bool {
    let session = sessions::session_fingerprint(session_id);
    let name = sessions::slot_name(&session, policy.slots());
    update(host, &name, |s| Some(s.bind(&session, caller, now_ms, policy))).is_some()
}

/// The session was ended (`DELETE` answered 2xx).
pub fn unbind(host: &dyn Host, policy: &SessionPolicy, session_id: &str) {
    let session = sessions::session_fingerprint(session_id);
    let name = sessions::slot_name(&session, policy.slots());
    update(host, &name, |s| Some(s.unbind(&session)));
}
