//! Connections per principal (`max_connections`): a count per `sub`, taken at
//! admission and given back when the connection's [`Admitted`] goes.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::principal::Principal;

/// Open connections by principal name.
#[derive(Default)]
pub struct ConnectionCounts(Mutex<HashMap<String, u32>>);

/// A principal admitted for one connection; holds its place under the
/// principal's connection limit until dropped.
#[derive(Debug, Default)]
pub struct Admitted {
    pub principal: Principal,
    place: Option<(Arc<ConnectionCounts>, String)>,
}

impl std::fmt::Debug for ConnectionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionCounts")
    }
}

impl Admitted {
    /// Anyone, without a limit to count against.
    pub fn anonymous() -> Admitted {
        Admitted::default()
    }

    /// `principal`, counted against no limit (tests, and principals admitted
    /// where connections are not counted).
    pub fn anonymous_as(principal: Principal) -> Admitted {
        Admitted {
            principal,
            place: None,
        }
    }
}

impl ConnectionCounts {
    /// Admits `principal` unless it is at its `max_connections` (`None`).
    pub fn admit(self: &Arc<Self>, principal: Principal) -> Option<Admitted> {
        match (principal.sub(), principal.limits().max_connections) {
            (Some(sub), Some(max)) => {
                let key = sub.to_owned();
                self.admit_as(key, max, principal)
            }
            _ => Some(Admitted::anonymous_as(principal)),
        }
    }

    /// Admits `principal` counted under `key` (a name, an address), unless
    /// `max` connections hold that key already (`None`).
    pub fn admit_as(
        self: &Arc<Self>,
        key: String,
        max: u32,
        principal: Principal,
    ) -> Option<Admitted> {
        let mut counts = self.0.lock();
        let n = counts.entry(key.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(counts);
        Some(Admitted {
            principal,
            place: Some((self.clone(), key)),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((counts, sub)) = self.place.take() {
            let mut counts = counts.0.lock();
            if let Some(n) = counts.get_mut(&sub) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&sub);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::settings::LimitSettings;

    #[test]
    fn a_principal_gets_its_places_back() {
        let counts = Arc::new(ConnectionCounts::default());
        let limits = LimitSettings {
            max_connections: Some(2),
            ..Default::default()
        };
        let p = Principal::with_limits("a", vec![], limits, None);
        let one = counts.admit(p.clone()).unwrap();
        let two = counts.admit(p.clone()).unwrap();
        assert!(counts.admit(p.clone()).is_none());
        assert!(counts.admit(Principal::restricted("b", vec![])).is_some());
        drop(one);
        let _three = counts.admit(p.clone()).unwrap();
        drop(two);
        assert!(counts.0.lock().get("a") == Some(&1));
    }
}
