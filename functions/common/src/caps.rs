//! The default cap policy of a stack (`NEARCAST_CAP_PER_DAY`, `NEARCAST_CAP_PER_WEEK`,
//! `NEARCAST_CAP_MIN_GAP_MINUTES`): in force until a marketer saves a policy.

use crate::InitError;
use nearcast_core::config::CapPolicy;
use nearcast_core::ports::{BoxFuture, StateStore, StoreError, StoreLayer};
use std::sync::Arc;

/// The cap policy in force until a marketer saves one, from `NEARCAST_CAP_PER_DAY`,
/// `NEARCAST_CAP_PER_WEEK` and `NEARCAST_CAP_MIN_GAP_MINUTES` (through `var`, which answers
/// `None` for unset or empty ones). Unset ones keep [`CapPolicy::default`]'s values;
/// `None` when all three are unset.
///
/// # Errors
/// [`InitError::Invalid`] naming the variable: not a whole number, or outside the limits of
/// [`CapPolicy::validate`] (1..=50 a day, per day..=200 a week, 0..=1440 minutes).
pub fn cap_defaults(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<CapPolicy>, InitError> {
    const VARS: [(&str, &str); 3] = [
        ("NEARCAST_CAP_PER_DAY", "per_day"),
        ("NEARCAST_CAP_PER_WEEK", "per_week"),
        ("NEARCAST_CAP_MIN_GAP_MINUTES", "min_gap_minutes"),
    ];
    let mut policy = CapPolicy::default();
    let mut any = false;
    for (name, _) in VARS {
        let Some(v) = var(name) else { continue };
        any = true;
        let n: u32 = v.trim().parse().map_err(|_| InitError::Invalid {
            var: name,
            reason: format!("must be a whole number, got {v:?}"),
        })?;
        match name {
            "NEARCAST_CAP_PER_DAY" => policy.per_day = n,
            "NEARCAST_CAP_PER_WEEK" => policy.per_week = n,
            _ => policy.min_gap_minutes = n,
        }
    }
    if !any {
        return Ok(None);
    }
    policy.validate().map_err(|e| {
        let var = VARS
            .iter()
            .find(|(_, field)| *field == e.field)
            .map_or("NEARCAST_CAP_PER_DAY", |(name, _)| name);
        InitError::Invalid {
            var,
            reason: e.reason.clone(),
        }
    })?;
    Ok(Some(policy))
}

/// A state store whose cap policy, while none is saved, is `default`: the engine reads the
/// policy through [`StateStore::get_policy`] (`None` means "never saved"), so wrapping the
/// store makes the `NEARCAST_CAP_*` defaults the policy in force without writing them. A
/// policy saved through the admin API replaces them; every other call goes to the inner store.
pub struct DefaultPolicy {
    inner: Arc<dyn StateStore>,
    default: CapPolicy,
}

impl DefaultPolicy {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn StateStore>, default: CapPolicy) -> Self {
        Self { inner, default }
    }
}

impl StoreLayer for DefaultPolicy {
    fn wrapped(&self) -> &dyn StateStore {
        self.inner.as_ref()
    }
    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>> {
        Box::pin(async move {
            Ok(Some(
                self.inner
                    .get_policy()
                    .await?
                    .unwrap_or_else(|| self.default.clone()),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nearcast_core::memory::InMemoryStateStore;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn error_of(pairs: &[(&str, &str)]) -> (&'static str, String) {
        match cap_defaults(&vars(pairs)) {
            Err(InitError::Invalid { var, reason }) => (var, reason),
            other => panic!("expected an invalid variable, got {other:?}"),
        }
    }

    #[test]
    fn unset_variables_mean_no_default_and_set_ones_override_the_built_in_policy() {
        assert_eq!(cap_defaults(&vars(&[])).unwrap(), None);
        let p = cap_defaults(&vars(&[("NEARCAST_CAP_PER_DAY", "3")]))
            .unwrap()
            .expect("a policy");
        assert_eq!(p.per_day, 3);
        assert_eq!(p.per_week, CapPolicy::default().per_week);
        assert_eq!(p.min_gap_minutes, CapPolicy::default().min_gap_minutes);
        let p = cap_defaults(&vars(&[
            ("NEARCAST_CAP_PER_DAY", "4"),
            ("NEARCAST_CAP_PER_WEEK", "20"),
            ("NEARCAST_CAP_MIN_GAP_MINUTES", " 0 "),
        ]))
        .unwrap()
        .expect("a policy");
        assert_eq!((p.per_day, p.per_week, p.min_gap_minutes), (4, 20, 0));
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let (var, reason) = error_of(&[("NEARCAST_CAP_PER_DAY", "two")]);
        assert_eq!(var, "NEARCAST_CAP_PER_DAY");
        assert!(reason.contains("whole number"), "{reason}");
        assert_eq!(
            error_of(&[("NEARCAST_CAP_MIN_GAP_MINUTES", "-5")]).0,
            "NEARCAST_CAP_MIN_GAP_MINUTES"
        );
        assert_eq!(
            error_of(&[("NEARCAST_CAP_PER_DAY", "0")]).0,
            "NEARCAST_CAP_PER_DAY"
        );
        assert_eq!(
            error_of(&[("NEARCAST_CAP_PER_DAY", "51")]).0,
            "NEARCAST_CAP_PER_DAY"
        );
        // 7 a day is more than the built-in 6 a week: the week is what is wrong.
        assert_eq!(
            error_of(&[("NEARCAST_CAP_PER_DAY", "7")]).0,
            "NEARCAST_CAP_PER_WEEK"
        );
        assert_eq!(
            error_of(&[("NEARCAST_CAP_MIN_GAP_MINUTES", "1441")]).0,
            "NEARCAST_CAP_MIN_GAP_MINUTES"
        );
        let msg = InitError::Invalid {
            var: "NEARCAST_CAP_PER_WEEK",
            reason: "must be in [per_day, 200]".into(),
        }
        .to_string();
        assert!(msg.contains("NEARCAST_CAP_PER_WEEK"), "{msg}");
    }

    #[tokio::test]
    async fn the_default_is_the_policy_until_one_is_saved() {
        let inner: Arc<dyn StateStore> = Arc::new(InMemoryStateStore::new());
        let default = CapPolicy {
            per_day: 4,
            ..CapPolicy::default()
        };
        let store: Arc<dyn StateStore> =
            Arc::new(DefaultPolicy::new(inner.clone(), default.clone()));
        assert_eq!(store.get_policy().await.unwrap(), Some(default));
        // Nothing was written: the inner store still has no policy.
        assert_eq!(inner.get_policy().await.unwrap(), None);
        let saved = CapPolicy {
            per_day: 1,
            per_week: 1,
            ..CapPolicy::default()
        };
        store.put_policy(&saved).await.unwrap();
        assert_eq!(store.get_policy().await.unwrap(), Some(saved.clone()));
        assert_eq!(inner.get_policy().await.unwrap(), Some(saved));
    }
}
