//! Property tests of the retention planner: whatever the backups, policy and protected ids,
//! the plan never drops what must survive (the newest good backup, protected ids), covers
//! every backup exactly once with consistent reasons, is idempotent and order-independent,
//! and honours `keep_last` and the size cap.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use sqlite_warden::copies::retention::{CLOCK_SKEW, Candidate, Plan, Reason, RetentionPolicy, plan};
use sqlite_warden::session::BackupKind;

const DAY: i64 = 86_400;
/// Candidates are spread over this many days after `base()`.
const SPAN_DAYS: i64 = 400;

fn base() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    base() + SignedDuration::from_secs(secs)
}

fn kind() -> impl Strategy<Value = BackupKind> {
    prop_oneof![
        3 => Just(BackupKind::Post),
        2 => Just(BackupKind::Pre),
        1 => Just(BackupKind::Manual),
        1 => Just(BackupKind::PostCrash),
    ]
}

fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        // Anywhere in the span, to the second.
        4 => 0..SPAN_DAYS * DAY,
        // Clustered on a few exact instants, so that buckets share backups and times tie.
        1 => (0..20i64).prop_map(|n| 380 * DAY + n * 3_600),
    ]
}

/// 0..60 candidates with unique ids `b000`, `b001`, ...
fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    proptest::collection::vec((offset(), 0u64..1_000_000, kind(), proptest::bool::weighted(0.8)), 0..60).prop_map(
        |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (secs, size, kind, verified))| Candidate {
                    id: format!("b{i:03}"),
                    created: at(secs),
                    size,
                    kind,
                    verified,
                })
                .collect()
        },
    )
}

fn policy() -> impl Strategy<Value = RetentionPolicy> {
    (0u32..12, 0u32..30, 0u32..10, 0u32..6, 0u32..14, 0u32..5, proptest::option::weighted(0.4, 0u64..20_000_000))
        .prop_map(|(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_crash_copies, cap)| {
            RetentionPolicy {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
                keep_monthly,
                keep_crash_copies,
                max_total_bytes: cap,
            }
        })
}

/// `now` near the end of the span, so some candidates are future-dated.
fn now() -> impl Strategy<Value = Timestamp> {
    ((SPAN_DAYS - 20) * DAY..(SPAN_DAYS + 10) * DAY).prop_map(at)
}

/// Candidates, a random subset of their ids (plus an id matching none), and `now`.
fn scenario() -> impl Strategy<Value = (Vec<Candidate>, BTreeSet<String>, Timestamp)> {
    (candidates(), proptest::collection::vec(proptest::bool::weighted(0.1), 60), any::<bool>(), now()).prop_map(
        |(candidates, mask, ghost, now)| {
            let mut protected: BTreeSet<String> =
                candidates.iter().zip(mask).filter(|(_, p)| *p).map(|(c, _)| c.id.clone()).collect();
            if ghost {
                protected.insert("no-such-backup".to_string());
            }
            (candidates, protected, now)
        },
    )
}

fn is_future(c: &Candidate, now: Timestamp) -> bool {
    c.created.duration_since(now) > CLOCK_SKEW
}

/// Good candidates, newest first, ties by id (the planner's documented order).
fn good_newest_first(candidates: &[Candidate]) -> Vec<&Candidate> {
    let mut good: Vec<&Candidate> = candidates.iter().filter(|c| c.is_good()).collect();
    good.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    good
}

fn kept(plan: &Plan, id: &str) -> bool {
    plan.decisions.iter().any(|d| d.id == id && d.keep)
}

fn is_protected(reasons: &[Reason]) -> bool {
    reasons.iter().any(|r| r.is_protection())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// 1. The newest good backup (overall, and among those not future-dated) and every
    /// protected id survive, whatever the policy and the size cap say.
    #[test]
    fn never_drops_newest_good_or_protected((candidates, protected, now) in scenario(), policy in policy()) {
        let plan = plan(&policy, &candidates, &protected, now);
        let good = good_newest_first(&candidates);
        if let Some(newest) = good.first() {
            prop_assert!(kept(&plan, &newest.id), "newest good {} dropped", newest.id);
        }
        if let Some(newest) = good.iter().find(|c| !is_future(c, now)) {
            prop_assert!(kept(&plan, &newest.id), "newest non-future good {} dropped", newest.id);
            let d = plan.decisions.iter().find(|d| d.id == newest.id).unwrap();
            prop_assert!(d.reasons.contains(&Reason::NewestGood));
        }
        for d in &plan.decisions {
            if protected.contains(&d.id) {
                prop_assert!(d.keep, "protected {} dropped: {}", d.id, d.detail);
                prop_assert!(d.reasons.contains(&Reason::ReferencedBySession));
            }
        }
    }

    /// 2. Planning again on exactly the kept backups keeps all of them.
    #[test]
    fn idempotent((candidates, protected, now) in scenario(), policy in policy()) {
        let first = plan(&policy, &candidates, &protected, now);
        let kept_ids: BTreeSet<&str> = first.kept().map(|d| d.id.as_str()).collect();
        let survivors: Vec<Candidate> = candidates.iter().filter(|c| kept_ids.contains(c.id.as_str())).cloned().collect();
        let second = plan(&policy, &survivors, &protected, now);
        for d in second.dropped() {
            prop_assert!(false, "second pass dropped {}: {}", d.id, d.detail);
        }
        prop_assert_eq!(second.decisions.len(), kept_ids.len());
    }

    /// 3. Every candidate appears exactly once; every decision has at least one reason, all
    /// of them keep reasons or all drop reasons, matching `keep`. Decisions are newest first,
    /// and the byte totals add up.
    #[test]
    fn every_candidate_once_with_consistent_reasons((candidates, protected, now) in scenario(), policy in policy()) {
        let plan = plan(&policy, &candidates, &protected, now);
        let mut planned: Vec<&str> = plan.decisions.iter().map(|d| d.id.as_str()).collect();
        let mut input: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        planned.sort_unstable();
        input.sort_unstable();
        prop_assert_eq!(planned, input);
        for d in &plan.decisions {
            prop_assert!(!d.reasons.is_empty(), "{} has no reason", d.id);
            prop_assert!(d.reasons.iter().all(|r| r.is_keep() == d.keep), "{}: {:?} keep={}", d.id, d.reasons, d.keep);
            let prefix = if d.keep { "keep: " } else { "drop: " };
            prop_assert!(d.detail.starts_with(prefix), "{}", d.detail);
            prop_assert!(!d.detail.contains('\n'));
            let unique: BTreeSet<String> = d.reasons.iter().map(|r| r.to_string()).collect();
            prop_assert_eq!(unique.len(), d.reasons.len(), "repeated reason in {:?}", &d.reasons);
        }
        for pair in plan.decisions.windows(2) {
            prop_assert!(
                (pair[0].created, &pair[1].id) >= (pair[1].created, &pair[0].id),
                "not newest first: {} then {}", pair[0].id, pair[1].id
            );
        }
        let total: u64 = candidates.iter().map(|c| c.size).sum();
        prop_assert_eq!(plan.kept_bytes() + plan.freed_bytes(), total);
    }

    /// 4. `keep_last N` keeps the `min(N, #good)` newest good backups, unless the size cap
    /// removed them (and then it says so).
    #[test]
    fn keep_last_is_honoured((candidates, protected, now) in scenario(), policy in policy()) {
        let plan = plan(&policy, &candidates, &protected, now);
        let good = good_newest_first(&candidates);
        let want = (policy.keep_last as usize).min(good.len());
        let kept_good = plan.kept().filter(|d| good.iter().any(|g| g.id == d.id)).count();
        if policy.max_total_bytes.is_none() {
            prop_assert!(kept_good >= want, "kept {} good backups, keep_last asks {}", kept_good, want);
        }
        let present: Vec<&&Candidate> = good.iter().filter(|c| !is_future(c, now)).take(policy.keep_last as usize).collect();
        for c in present {
            let d = plan.decisions.iter().find(|d| d.id == c.id).unwrap();
            prop_assert!(
                d.keep || d.reasons == [Reason::OverSizeCap],
                "{} is among the last {} but dropped: {}", c.id, policy.keep_last, d.detail
            );
        }
    }

    /// 5. With a size cap, the kept total fits under it unless everything kept is protected.
    #[test]
    fn size_cap_is_honoured((candidates, protected, now) in scenario(), policy in policy(), cap in 0u64..20_000_000) {
        let policy = RetentionPolicy { max_total_bytes: Some(cap), ..policy };
        let plan = plan(&policy, &candidates, &protected, now);
        if plan.kept_bytes() > cap {
            for d in plan.kept() {
                prop_assert!(is_protected(&d.reasons), "over the cap yet kept unprotected {}: {}", d.id, d.detail);
                prop_assert!(d.detail.contains("cannot be met"), "{}", d.detail);
            }
        }
        // The cap only ever removes what the rules kept, oldest first: every backup it
        // dropped is older than (or tied with) every unprotected backup still kept.
        let oldest_unprotected_kept = plan.kept().filter(|d| !is_protected(&d.reasons)).map(|d| d.created).min();
        if let Some(oldest) = oldest_unprotected_kept {
            for d in plan.dropped().filter(|d| d.reasons == [Reason::OverSizeCap]) {
                prop_assert!(d.created <= oldest, "{} dropped by the cap before a younger backup", d.id);
            }
        }
    }

    /// 6. Shuffling the input gives the same plan, and planning twice gives the same plan.
    #[test]
    fn order_independent(
        (candidates, shuffled) in candidates().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
        policy in policy(),
        now in now(),
        mask in proptest::collection::vec(proptest::bool::weighted(0.1), 60),
    ) {
        let protected: BTreeSet<String> = candidates.iter().zip(mask).filter(|(_, p)| *p).map(|(c, _)| c.id.clone()).collect();
        let a = plan(&policy, &candidates, &protected, now);
        let b = plan(&policy, &shuffled, &protected, now);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &plan(&policy, &candidates, &protected, now));
    }

    /// Any plan survives a JSON round trip unchanged.
    #[test]
    fn plan_round_trips_through_json((candidates, protected, now) in scenario(), policy in policy()) {
        let plan = plan(&policy, &candidates, &protected, now);
        let json = serde_json::to_string(&plan).unwrap();
        prop_assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }

    /// `validate` refuses exactly the policies with no rule for good backups.
    #[test]
    fn validate_refuses_only_empty_policies(policy in policy()) {
        let empty = [policy.keep_last, policy.keep_hourly, policy.keep_daily, policy.keep_weekly, policy.keep_monthly]
            .iter()
            .all(|&n| n == 0);
        prop_assert_eq!(policy.validate().is_err(), empty);
    }
}
