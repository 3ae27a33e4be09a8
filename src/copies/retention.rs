//! Retention: deciding which verified backups to keep, and why.
//!
//! Owns: the [`RetentionPolicy`] (its defaults and its validation), and [`plan`], a pure
//! function that turns a policy and a list of backups ([`Candidate`]s) into a [`Plan`]: one
//! [`Decision`] per backup, keep or drop, with the [`Reason`]s and a one-line human `detail`,
//! as restic's `forget --dry-run` and Borg's `prune --list` show them.
//!
//! Does not own: deleting files (the backup store applies a plan, and only its `dropped()`
//! half), reading manifests or verifying backups (the caller builds the candidates), or
//! choosing which backups the latest session references (the caller passes their ids).
//!
//! # Semantics
//!
//! This section is the user-facing specification; the README links here.
//!
//! **Good backups.** A backup is *good* when it passed verification (integrity check ok and
//! hash recorded) and its kind may be restored as a known-good state: every kind except
//! `post-crash` ([`Candidate::is_good`]). The keep rules below look at good backups only.
//!
//! **Order.** Backups are sorted newest first by creation time; equal times are ordered by
//! id (then kind, size and verified flag), so the plan never depends on the input order.
//! Decisions are listed in that order.
//!
//! **Keep rules** (restic's vocabulary). Rules are ORed: a backup is kept if *any* rule keeps
//! it, and a backup kept by one rule still counts for the others (a Sunday backup can be the
//! daily one and the weekly one). A rule with `N = 0` keeps nothing.
//!
//! - `keep_last N`: the `N` newest good backups ([`Reason::Last`]).
//! - `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly N`: walk the good backups
//!   newest to oldest; a backup is kept when its calendar bucket differs from the bucket of
//!   the backup this rule kept before it, until `N` buckets are kept. In other words: the
//!   newest backup of each of the `N` most recent buckets *that contain a backup*. Buckets
//!   are counted over the backups, not back from now, so a month without backups does not
//!   empty a `keep_daily 7`. Buckets are calendar periods in UTC, on natural boundaries:
//!   hour `YYYY-MM-DDTHH`, day `YYYY-MM-DD`, ISO 8601 week `YYYY-Www` (weeks start on Monday,
//!   and the year is the ISO week-numbering year, so 2027-01-01 falls in `2026-W53`), month
//!   `YYYY-MM` ([`Reason::Hourly`], [`Reason::Daily`], [`Reason::Weekly`],
//!   [`Reason::Monthly`]).
//! - Short buckets (Borg 1.2, restic's "oldest"): if a bucket rule with `N > 0` found fewer
//!   than `N` buckets, the oldest good backup is kept as well ([`Reason::OldestInShortBucket`]),
//!   so a young series keeps its first backup until the rule has enough history.
//!
//! **Protections.** These are kept whatever the rules and the size cap say:
//!
//! - the newest good backup ([`Reason::NewestGood`]), so there is always something to restore;
//! - every backup whose id is in `protected` ([`Reason::ReferencedBySession`]): the backups
//!   named by the latest successful session, whatever their kind or verification state;
//! - every future-dated backup, created more than [`CLOCK_SKEW`] after `now`
//!   ([`Reason::FutureDated`]). As in restic, a clock we cannot trust never deletes
//!   anything. Future-dated backups are set aside before the rules run: they do not use up
//!   `keep_last` slots or buckets, and "the newest good backup" above is the newest one that
//!   is not future-dated.
//!
//! **Post-crash copies.** Copies taken after an unclean exit are evidence, never restore
//! points. The newest `keep_crash_copies` of them are kept ([`Reason::CrashCopy`]) whether or
//! not they verified; older ones are dropped ([`Reason::NotSelected`]).
//!
//! **Dropped backups.** A backup no rule or protection keeps is dropped with
//! [`Reason::Unverified`] if it is an unverified backup of a kind other than `post-crash`,
//! and with [`Reason::NotSelected`] otherwise.
//!
//! **Size cap.** After the rules, if the kept backups total more than `max_total_bytes`,
//! kept backups are dropped oldest first, skipping protected ones (newest good, referenced
//! by the session, future-dated), until the total is at or under the cap. Each backup
//! dropped this way has the single reason [`Reason::OverSizeCap`]; its `detail` still says
//! which rules wanted it. Post-crash copies are not protected from the cap. If the protected
//! backups alone exceed the cap, they are kept anyway, and the `detail` of every kept backup
//! says the cap cannot be met.
//!
//! **Reasons.** Every decision has at least one reason. Keep reasons ([`Reason::is_keep`])
//! and drop reasons never appear together. Keep reasons are listed in this order: `last`,
//! `hourly`, `daily`, `weekly`, `monthly`, `oldest_in_short_bucket`, `newest_good`,
//! `referenced_by_session`, `crash_copy`, `future_dated`.
//!
//! **Purity.** [`plan`] reads nothing but its arguments: the same input gives the same plan.
//! `now` is used only to recognise future-dated backups. Planning again on exactly the kept
//! backups (same policy, protected ids and `now`) keeps all of them.
//!
//! [`plan`] does not validate the policy; call [`RetentionPolicy::validate`] first, as an
//! empty policy would keep only the protections.
//!
//! ```
//! use std::collections::BTreeSet;
//! use sqlite_warden::session::BackupKind;
//! use sqlite_warden::copies::retention::{Candidate, RetentionPolicy, plan};
//!
//! let policy = RetentionPolicy { keep_last: 1, keep_daily: 0, keep_weekly: 0, keep_monthly: 0, ..Default::default() };
//! policy.validate()?;
//! let backup = |id: &str, at: &str| Candidate {
//!     id: id.to_string(),
//!     created: at.parse().unwrap(),
//!     size: 100,
//!     kind: BackupKind::Post,
//!     verified: true,
//! };
//! let candidates = [backup("a", "2026-11-23T10:00:00Z"), backup("b", "2026-11-24T10:00:00Z")];
//! let plan = plan(&policy, &candidates, &BTreeSet::new(), "2026-11-25T00:00:00Z".parse()?);
//! assert_eq!(plan.kept().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["b"]);
//! assert_eq!(plan.decisions[1].detail, "drop: not selected by any rule");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::copies::kind::BackupKind;

/// How far past `now` a backup's creation time may be before it counts as future-dated.
///
/// One minute absorbs ordinary clock skew between the host that took a backup and the host
/// that plans retention; beyond that, the clock is wrong and the backup is kept untouched.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// Which backups to keep. Deserialized from the `[retention]` configuration; missing
/// fields take their defaults, unknown fields are refused.
///
/// The defaults (last 10, daily 7, weekly 4, monthly 6, 3 post-crash copies, no size cap)
/// keep a week of day-by-day restore points, a month of weekly ones and half a year of
/// monthly ones, plus the last ten whatever their age, which covers a burst of sessions in
/// one day. Hourly buckets are off by default: sessions are rarely that frequent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the `N` newest good backups. Default 10.
    pub keep_last: u32,
    /// Keep the newest good backup of each of the `N` most recent hours (UTC) that have one.
    /// Default 0.
    pub keep_hourly: u32,
    /// Keep the newest good backup of each of the `N` most recent days (UTC) that have one.
    /// Default 7.
    pub keep_daily: u32,
    /// Keep the newest good backup of each of the `N` most recent ISO 8601 weeks (Monday to
    /// Sunday, UTC) that have one. Default 4.
    pub keep_weekly: u32,
    /// Keep the newest good backup of each of the `N` most recent months (UTC) that have one.
    /// Default 6.
    pub keep_monthly: u32,
    /// Keep the `N` newest post-crash copies as evidence, verified or not. Default 3: enough
    /// to compare a crash with the ones before it without keeping every crash forever.
    pub keep_crash_copies: u32,
    /// Cap, in bytes, on the total size of kept backups; protected backups are kept even
    /// over it. Default none: the rules alone bound the count.
    pub max_total_bytes: Option<u64>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_last: 10,
            keep_hourly: 0,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            keep_crash_copies: 3,
            max_total_bytes: None,
        }
    }
}

impl RetentionPolicy {
    /// Refuses a policy whose rules for good backups are all zero.
    ///
    /// Such a policy would keep only the newest good backup and the protected ones; like
    /// restic refusing `forget` without a rule, we treat it as a mistake rather than a wish.
    /// `keep_crash_copies` and `max_total_bytes` do not count: neither keeps a good backup.
    pub fn validate(&self) -> Result<(), RetentionError> {
        let rules = [self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly];
        if rules.iter().all(|&n| n == 0) {
            return Err(RetentionError::EmptyPolicy {
                hint: "set at least one of them, e.g. `keep_last = 10`, or remove the [retention] section to get the defaults",
            });
        }
        Ok(())
    }
}

/// Checking a retention policy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// Every keep rule for good backups is zero.
    #[error(
        "refusing an empty retention policy: keep_last, keep_hourly, keep_daily, keep_weekly and keep_monthly are all 0\n(hint: {hint})"
    )]
    EmptyPolicy {
        /// What to do instead.
        hint: &'static str,
    },
}

/// One backup as retention sees it: the facts from its manifest, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Unique backup id (the file stem).
    pub id: String,
    /// When the backup was taken. Serialized as RFC 3339 in UTC.
    #[serde(with = "timestamp_serde")]
    pub created: Timestamp,
    /// Size on disk, in bytes.
    pub size: u64,
    /// Why the backup was taken.
    pub kind: BackupKind,
    /// The backup passed verification (integrity check ok and hash recorded).
    pub verified: bool,
}

impl Candidate {
    /// The backup may serve as a restore point: verified, and not a post-crash copy.
    pub fn is_good(&self) -> bool {
        self.verified && self.kind.can_be_good()
    }
}

/// Why a backup is kept or dropped. See the [module docs](self) for each rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Keep: one of the `keep_last` newest good backups.
    Last,
    /// Keep: newest good backup of one of the `keep_hourly` most recent hours.
    Hourly,
    /// Keep: newest good backup of one of the `keep_daily` most recent days.
    Daily,
    /// Keep: newest good backup of one of the `keep_weekly` most recent ISO weeks.
    Weekly,
    /// Keep: newest good backup of one of the `keep_monthly` most recent months.
    Monthly,
    /// Keep: the oldest good backup, because a bucket rule has fewer buckets than it asks for.
    OldestInShortBucket,
    /// Keep (protected): the newest good backup.
    NewestGood,
    /// Keep (protected): named by the latest successful session.
    ReferencedBySession,
    /// Keep: one of the `keep_crash_copies` newest post-crash copies.
    CrashCopy,
    /// Drop: no rule or protection keeps it.
    NotSelected,
    /// Drop: not verified (and not a post-crash copy).
    Unverified,
    /// Drop: a rule kept it, but the kept backups exceeded `max_total_bytes`.
    OverSizeCap,
    /// Keep (protected): created more than [`CLOCK_SKEW`] after `now`.
    FutureDated,
}

impl Reason {
    /// The reason keeps the backup (as opposed to dropping it).
    pub fn is_keep(self) -> bool {
        !matches!(self, Reason::NotSelected | Reason::Unverified | Reason::OverSizeCap)
    }

    /// The reason protects the backup from the size cap.
    pub fn is_protection(self) -> bool {
        matches!(self, Reason::NewestGood | Reason::ReferencedBySession | Reason::FutureDated)
    }

    /// The name used in text and JSON output (the same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::OldestInShortBucket => "oldest_in_short_bucket",
            Reason::NewestGood => "newest_good",
            Reason::ReferencedBySession => "referenced_by_session",
            Reason::CrashCopy => "crash_copy",
            Reason::NotSelected => "not_selected",
            Reason::Unverified => "unverified",
            Reason::OverSizeCap => "over_size_cap",
            Reason::FutureDated => "future_dated",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The backup's id.
    pub id: String,
    /// When the backup was taken. Serialized as RFC 3339 in UTC.
    #[serde(with = "timestamp_serde")]
    pub created: Timestamp,
    /// Why the backup was taken.
    pub kind: BackupKind,
    /// Size on disk, in bytes.
    pub size: u64,
    /// Keep the backup (`false`: the store may delete it).
    pub keep: bool,
    /// Why; never empty, and all keep reasons or all drop reasons.
    pub reasons: Vec<Reason>,
    /// One line for humans, naming the rules and buckets, e.g.
    /// `keep: last (#2 of 10), daily 2026-11-24, weekly 2026-W48`.
    pub detail: String,
}

/// The outcome of [`plan`]: one decision per candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Newest first (ties by id).
    pub decisions: Vec<Decision>,
    /// The page store's packs that no kept backup uses (removed, or in a dry run, to be
    /// removed): filled in by `prune`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packs: Option<crate::copies::store::Collected>,
}

impl Plan {
    /// The backups to keep, newest first.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The backups the store may delete, newest first.
    pub fn dropped(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }

    /// Total size of the kept backups (saturating).
    pub fn kept_bytes(&self) -> u64 {
        self.kept().fold(0u64, |sum, d| sum.saturating_add(d.size))
    }

    /// Total size of the dropped backups (saturating): what applying the plan frees.
    pub fn freed_bytes(&self) -> u64 {
        self.dropped().fold(0u64, |sum, d| sum.saturating_add(d.size))
    }
}

/// Decides, for every candidate, whether to keep it and why. See the [module docs](self) for
/// the exact semantics.
///
/// `protected` holds the ids the latest successful session references; ids that match no
/// candidate are ignored. `now` only serves to recognise future-dated backups.
pub fn plan(policy: &RetentionPolicy, candidates: &[Candidate], protected: &BTreeSet<String>, now: Timestamp) -> Plan {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.size.cmp(&b.size))
            .then_with(|| a.verified.cmp(&b.verified))
    });

    let mut marks: Vec<Marks> = order
        .iter()
        .map(|c| Marks {
            referenced: protected.contains(&c.id),
            future: c.created.duration_since(now) > CLOCK_SKEW,
            ..Marks::default()
        })
        .collect();

    // Good backups that are not future-dated, as indices into `order` (newest first).
    let good: Vec<usize> = (0..order.len()).filter(|&i| !marks[i].future && order[i].is_good()).collect();

    for (rank, &i) in good.iter().take(to_usize(policy.keep_last)).enumerate() {
        marks[i].last = Some(rank + 1);
    }

    let mut short = Vec::new();
    for rule in BucketRule::ALL {
        let want = to_usize(rule.count(policy));
        if want == 0 {
            continue;
        }
        let mut filled = 0;
        let mut previous: Option<Bucket> = None;
        for &i in &good {
            if filled == want {
                break;
            }
            let bucket = rule.bucket(order[i].created);
            if previous != Some(bucket) {
                marks[i].buckets.push((rule, bucket));
                previous = Some(bucket);
                filled += 1;
            }
        }
        if filled < want {
            short.push(Shortfall { rule, filled, want });
        }
    }
    if let Some(&oldest) = good.last() {
        marks[oldest].short = short;
    }
    if let Some(&newest) = good.first() {
        marks[newest].newest_good = true;
    }

    let crash_copies = order.iter().zip(marks.iter_mut()).filter(|(c, m)| !m.future && c.kind == BackupKind::PostCrash);
    for (rank, (_, m)) in crash_copies.take(to_usize(policy.keep_crash_copies)).enumerate() {
        m.crash = Some(rank + 1);
    }

    // The size cap: drop kept, unprotected backups oldest first until the total fits.
    let mut cap_unmet = None;
    if let Some(cap) = policy.max_total_bytes {
        let mut total: u128 =
            order.iter().zip(&marks).filter(|(_, m)| m.keeps()).map(|(c, _)| u128::from(c.size)).sum();
        for (c, m) in order.iter().zip(marks.iter_mut()).rev() {
            if total <= u128::from(cap) {
                break;
            }
            if m.keeps() && !m.is_protected() {
                m.over_cap = true;
                total -= u128::from(c.size);
            }
        }
        if total > u128::from(cap) {
            cap_unmet = Some((cap, total));
        }
    }

    let decisions = order
        .iter()
        .zip(&marks)
        .map(|(c, m)| {
            let (keep, reasons, detail) = m.verdict(c, policy, cap_unmet);
            Decision { id: c.id.clone(), created: c.created, kind: c.kind, size: c.size, keep, reasons, detail }
        })
        .collect();
    Plan { decisions, packs: None }
}

/// `u32` to `usize`, saturating on (hypothetical) 16-bit targets.
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The calendar rules, in the order their reasons are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketRule {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl BucketRule {
    const ALL: [BucketRule; 4] = [BucketRule::Hourly, BucketRule::Daily, BucketRule::Weekly, BucketRule::Monthly];

    fn count(self, policy: &RetentionPolicy) -> u32 {
        match self {
            BucketRule::Hourly => policy.keep_hourly,
            BucketRule::Daily => policy.keep_daily,
            BucketRule::Weekly => policy.keep_weekly,
            BucketRule::Monthly => policy.keep_monthly,
        }
    }

    fn reason(self) -> Reason {
        match self {
            BucketRule::Hourly => Reason::Hourly,
            BucketRule::Daily => Reason::Daily,
            BucketRule::Weekly => Reason::Weekly,
            BucketRule::Monthly => Reason::Monthly,
        }
    }

    /// The UTC calendar period `ts` falls in.
    fn bucket(self, ts: Timestamp) -> Bucket {
        let dt = TimeZone::UTC.to_datetime(ts);
        match self {
            BucketRule::Hourly => Bucket::Hour(dt.date(), dt.hour()),
            BucketRule::Daily => Bucket::Day(dt.date()),
            BucketRule::Weekly => {
                let week = dt.date().iso_week_date();
                Bucket::Week(week.year(), week.week())
            }
            BucketRule::Monthly => Bucket::Month(dt.year(), dt.month()),
        }
    }
}

/// One calendar period; displays as `2026-11-24T10`, `2026-11-24`, `2026-W48`, `2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Hour(Date, i8),
    Day(Date),
    /// ISO week-numbering year and week.
    Week(i16, i8),
    Month(i16, i8),
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bucket::Hour(date, hour) => write!(f, "{date}T{hour:02}"),
            Bucket::Day(date) => write!(f, "{date}"),
            Bucket::Week(year, week) => write!(f, "{year:04}-W{week:02}"),
            Bucket::Month(year, month) => write!(f, "{year:04}-{month:02}"),
        }
    }
}

/// A bucket rule that found fewer buckets than it asks for.
#[derive(Debug, Clone, Copy)]
struct Shortfall {
    rule: BucketRule,
    filled: usize,
    want: usize,
}

/// What the rules said about one backup, before it becomes a [`Decision`].
#[derive(Debug, Default)]
struct Marks {
    /// Rank among the `keep_last` newest good backups (1-based).
    last: Option<usize>,
    /// The bucket rules that kept it, with its bucket.
    buckets: Vec<(BucketRule, Bucket)>,
    /// Set on the oldest good backup: the bucket rules that fell short.
    short: Vec<Shortfall>,
    newest_good: bool,
    referenced: bool,
    /// Rank among the `keep_crash_copies` newest post-crash copies (1-based).
    crash: Option<usize>,
    future: bool,
    /// Kept by the rules, then dropped by the size cap.
    over_cap: bool,
}

impl Marks {
    fn keeps(&self) -> bool {
        !self.over_cap && !self.keep_reasons().is_empty()
    }

    fn is_protected(&self) -> bool {
        self.newest_good || self.referenced || self.future
    }

    /// Keep reasons in their documented order.
    fn keep_reasons(&self) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if self.last.is_some() {
            reasons.push(Reason::Last);
        }
        reasons.extend(self.buckets.iter().map(|(rule, _)| rule.reason()));
        let flags = [
            (!self.short.is_empty(), Reason::OldestInShortBucket),
            (self.newest_good, Reason::NewestGood),
            (self.referenced, Reason::ReferencedBySession),
            (self.crash.is_some(), Reason::CrashCopy),
            (self.future, Reason::FutureDated),
        ];
        reasons.extend(flags.iter().filter(|(set, _)| *set).map(|&(_, reason)| reason));
        reasons
    }

    /// Human phrases for the keep reasons, in the same order.
    fn keep_phrases(&self, policy: &RetentionPolicy) -> Vec<String> {
        let mut phrases = Vec::new();
        if let Some(rank) = self.last {
            phrases.push(format!("last (#{rank} of {})", policy.keep_last));
        }
        for (rule, bucket) in &self.buckets {
            phrases.push(format!("{} {bucket}", rule.reason()));
        }
        if !self.short.is_empty() {
            let short: Vec<String> =
                self.short.iter().map(|s| format!("{} {} of {}", s.rule.reason(), s.filled, s.want)).collect();
            phrases.push(format!("oldest good backup while buckets are short ({})", short.join(", ")));
        }
        if self.newest_good {
            phrases.push("newest good backup".to_string());
        }
        if self.referenced {
            phrases.push("referenced by the latest session".to_string());
        }
        if let Some(rank) = self.crash {
            phrases.push(format!("post-crash copy (#{rank} of {})", policy.keep_crash_copies));
        }
        if self.future {
            phrases.push("future-dated (created more than 1 minute after now; check the clock)".to_string());
        }
        phrases
    }

    /// `(keep, reasons, detail)` for this backup.
    fn verdict(
        &self,
        candidate: &Candidate,
        policy: &RetentionPolicy,
        cap_unmet: Option<(u64, u128)>,
    ) -> (bool, Vec<Reason>, String) {
        let reasons = self.keep_reasons();
        if self.over_cap {
            let cap = policy.max_total_bytes.unwrap_or_default();
            let detail = format!(
                "drop: over the size cap of {cap} bytes (kept by the rules as: {})",
                self.keep_phrases(policy).join(", ")
            );
            return (false, vec![Reason::OverSizeCap], detail);
        }
        if !reasons.is_empty() {
            let mut detail = format!("keep: {}", self.keep_phrases(policy).join(", "));
            if let Some((cap, total)) = cap_unmet {
                detail.push_str(&format!(
                    "; the size cap of {cap} bytes cannot be met: protected backups alone total {total} bytes"
                ));
            }
            return (true, reasons, detail);
        }
        if candidate.kind == BackupKind::PostCrash {
            let detail = match policy.keep_crash_copies {
                0 => "drop: post-crash copy (keep_crash_copies is 0)".to_string(),
                n => format!("drop: post-crash copy older than the newest {n}"),
            };
            return (false, vec![Reason::NotSelected], detail);
        }
        if !candidate.verified {
            return (
                false,
                vec![Reason::Unverified],
                "drop: unverified (verification failed or never ran)".to_string(),
            );
        }
        (false, vec![Reason::NotSelected], "drop: not selected by any rule".to_string())
    }
}

/// `Timestamp` as an RFC 3339 string, the format jiff's own `serde` feature uses.
mod timestamp_serde {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ts: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(ts)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn backup(id: &str, created: &str) -> Candidate {
        Candidate { id: id.to_string(), created: ts(created), size: 100, kind: BackupKind::Post, verified: true }
    }

    fn only(keep_last: u32, keep_daily: u32, keep_weekly: u32, keep_monthly: u32) -> RetentionPolicy {
        RetentionPolicy { keep_last, keep_hourly: 0, keep_daily, keep_weekly, keep_monthly, ..Default::default() }
    }

    fn kept_ids(plan: &Plan) -> Vec<&str> {
        plan.kept().map(|d| d.id.as_str()).collect()
    }

    fn decision<'a>(plan: &'a Plan, id: &str) -> &'a Decision {
        plan.decisions.iter().find(|d| d.id == id).unwrap()
    }

    const NOW: &str = "2027-02-01T00:00:00Z";

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn defaults_validate_and_empty_policy_is_refused() {
        assert!(RetentionPolicy::default().validate().is_ok());
        let empty = RetentionPolicy { keep_crash_copies: 5, max_total_bytes: Some(1), ..only(0, 0, 0, 0) };
        let err = empty.validate().unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("refusing an empty retention policy"), "{msg}");
        assert!(msg.contains("(hint: set at least one"), "{msg}");
        assert!(RetentionPolicy { keep_hourly: 1, ..only(0, 0, 0, 0) }.validate().is_ok());
    }

    #[test]
    fn policy_serde_defaults_and_unknown_fields() {
        let p: RetentionPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RetentionPolicy::default());
        let p: RetentionPolicy = serde_json::from_str(r#"{"keep_last": 3, "max_total_bytes": 1000}"#).unwrap();
        assert_eq!(p, RetentionPolicy { keep_last: 3, max_total_bytes: Some(1000), ..Default::default() });
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"keep_yearly": 3}"#).is_err());
    }

    #[test]
    fn daily_keeps_newest_of_each_of_last_seven_days() {
        // 3 backups a day (02:00, 10:00, 18:00) for 10 days, 2026-11-15 .. 2026-11-24.
        let mut candidates = Vec::new();
        for day in 15..=24 {
            for hour in [2, 10, 18] {
                candidates.push(backup(&format!("d{day}h{hour:02}"), &format!("2026-11-{day}T{hour:02}:00:00Z")));
            }
        }
        let plan = plan(&only(2, 7, 0, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["d24h18", "d24h10", "d23h18", "d22h18", "d21h18", "d20h18", "d19h18", "d18h18"]);
        let newest = decision(&plan, "d24h18");
        assert_eq!(newest.reasons, [Reason::Last, Reason::Daily, Reason::NewestGood]);
        assert_eq!(newest.detail, "keep: last (#1 of 2), daily 2026-11-24, newest good backup");
        assert_eq!(decision(&plan, "d24h10").detail, "keep: last (#2 of 2)");
        assert_eq!(decision(&plan, "d18h18").reasons, [Reason::Daily]);
        let old = decision(&plan, "d17h18");
        assert!(!old.keep);
        assert_eq!(old.reasons, [Reason::NotSelected]);
        assert_eq!(plan.decisions.len(), 30);
        assert_eq!(plan.kept_bytes(), 800);
        assert_eq!(plan.freed_bytes(), 2200);
    }

    #[test]
    fn buckets_count_backups_not_days_since_now() {
        // A gap of months: keep_daily 3 still keeps three days' worth.
        let candidates = [
            backup("a", "2026-01-01T12:00:00Z"),
            backup("b", "2026-01-02T12:00:00Z"),
            backup("c", "2026-01-05T12:00:00Z"),
            backup("d", "2026-01-09T12:00:00Z"),
        ];
        let plan = plan(&only(0, 3, 0, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["d", "c", "b"]);
    }

    #[test]
    fn iso_weeks_across_the_year_boundary() {
        // 2026 has 53 ISO weeks: Monday 2026-12-28 .. Sunday 2027-01-03 is 2026-W53.
        let week = |s: &str| BucketRule::Weekly.bucket(ts(s)).to_string();
        assert_eq!(week("2026-12-28T00:00:00Z"), "2026-W53");
        assert_eq!(week("2026-12-31T23:59:59Z"), "2026-W53");
        assert_eq!(week("2027-01-01T00:00:00Z"), "2026-W53");
        assert_eq!(week("2027-01-03T23:59:59Z"), "2026-W53");
        assert_eq!(week("2027-01-04T00:00:00Z"), "2027-W01");
        assert_eq!(week("2026-12-27T23:59:59Z"), "2026-W52");
        // ... while months and days follow the civil calendar.
        assert_eq!(BucketRule::Monthly.bucket(ts("2027-01-01T00:00:00Z")).to_string(), "2027-01");
        assert_eq!(BucketRule::Hourly.bucket(ts("2027-01-01T07:59:00Z")).to_string(), "2027-01-01T07");

        let candidates = [
            backup("w52", "2026-12-27T10:00:00Z"),
            backup("dec28", "2026-12-28T10:00:00Z"),
            backup("dec31", "2026-12-31T10:00:00Z"),
            backup("jan01", "2027-01-01T10:00:00Z"),
            backup("jan03", "2027-01-03T10:00:00Z"),
            backup("jan04", "2027-01-04T10:00:00Z"),
        ];
        let plan = plan(&only(0, 0, 3, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["jan04", "jan03", "w52"]);
        assert_eq!(decision(&plan, "jan03").detail, "keep: weekly 2026-W53");
        assert_eq!(decision(&plan, "w52").detail, "keep: weekly 2026-W52");
        assert_eq!(decision(&plan, "jan04").detail, "keep: weekly 2027-W01, newest good backup");
    }

    #[test]
    fn rules_are_ored_and_counted_independently() {
        // Sunday 2026-11-29 is the newest backup of its day, ISO week and month.
        let candidates = [backup("sun", "2026-11-29T20:00:00Z"), backup("sat", "2026-11-28T20:00:00Z")];
        let plan = plan(&only(0, 1, 1, 1), &candidates, &none(), ts(NOW));
        let sun = decision(&plan, "sun");
        assert_eq!(sun.reasons, [Reason::Daily, Reason::Weekly, Reason::Monthly, Reason::NewestGood]);
        assert_eq!(sun.detail, "keep: daily 2026-11-29, weekly 2026-W48, monthly 2026-11, newest good backup");
        assert!(!decision(&plan, "sat").keep);
    }

    #[test]
    fn short_bucket_keeps_the_oldest_good_backup() {
        // Two days of backups, keep_daily 7: the rule is short, so the very first backup stays
        // even though it is not the newest of its day.
        let candidates = [
            backup("first", "2026-11-23T08:00:00Z"),
            backup("second", "2026-11-23T20:00:00Z"),
            backup("third", "2026-11-24T08:00:00Z"),
        ];
        let plan = plan(&only(0, 7, 0, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["third", "second", "first"]);
        let first = decision(&plan, "first");
        assert_eq!(first.reasons, [Reason::OldestInShortBucket]);
        assert_eq!(first.detail, "keep: oldest good backup while buckets are short (daily 2 of 7)");

        // Once the rule is full, the oldest goes.
        let plan = super::plan(&only(0, 2, 0, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["third", "second"]);
    }

    #[test]
    fn post_crash_copies_are_evidence_not_restore_points() {
        let crash =
            |id: &str, at: &str, verified| Candidate { kind: BackupKind::PostCrash, verified, ..backup(id, at) };
        let candidates = [
            backup("good", "2026-11-20T00:00:00Z"),
            crash("c1", "2026-11-21T00:00:00Z", false),
            crash("c2", "2026-11-22T00:00:00Z", true),
            crash("c3", "2026-11-23T00:00:00Z", true),
            crash("c4", "2026-11-24T00:00:00Z", false),
            crash("c5", "2026-11-25T00:00:00Z", true),
        ];
        let policy = RetentionPolicy { keep_crash_copies: 3, ..only(1, 0, 0, 0) };
        let plan = plan(&policy, &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["c5", "c4", "c3", "good"]);
        assert_eq!(decision(&plan, "c4").reasons, [Reason::CrashCopy]);
        assert_eq!(decision(&plan, "c4").detail, "keep: post-crash copy (#2 of 3)");
        assert_eq!(decision(&plan, "good").reasons, [Reason::Last, Reason::NewestGood]);
        assert_eq!(decision(&plan, "c2").reasons, [Reason::NotSelected]);
        assert_eq!(decision(&plan, "c1").detail, "drop: post-crash copy older than the newest 3");
    }

    #[test]
    fn unverified_backups_are_dropped_unless_protected() {
        let unverified = |id: &str, at: &str| Candidate { verified: false, ..backup(id, at) };
        let candidates = [
            backup("good", "2026-11-20T00:00:00Z"),
            unverified("bad", "2026-11-21T00:00:00Z"),
            unverified("named", "2026-11-22T00:00:00Z"),
        ];
        let protected = BTreeSet::from(["named".to_string(), "gone".to_string()]);
        let plan = plan(&only(5, 0, 0, 0), &candidates, &protected, ts(NOW));
        assert_eq!(kept_ids(&plan), ["named", "good"]);
        assert_eq!(decision(&plan, "bad").reasons, [Reason::Unverified]);
        assert_eq!(decision(&plan, "named").reasons, [Reason::ReferencedBySession]);
        assert_eq!(decision(&plan, "good").reasons, [Reason::Last, Reason::NewestGood]);
    }

    #[test]
    fn future_dated_backups_are_kept_and_use_no_slot() {
        let candidates = [
            backup("past", "2027-01-31T00:00:00Z"),
            backup("skewed", "2027-02-01T00:00:59Z"),
            backup("future", "2027-02-01T00:01:01Z"),
        ];
        let plan = plan(&only(1, 0, 0, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["future", "skewed"]);
        assert_eq!(decision(&plan, "future").reasons, [Reason::FutureDated]);
        assert_eq!(decision(&plan, "skewed").reasons, [Reason::Last, Reason::NewestGood]);
        assert_eq!(decision(&plan, "past").reasons, [Reason::NotSelected]);
    }

    #[test]
    fn size_cap_drops_oldest_unprotected_first() {
        let sized = |id: &str, at: &str, size| Candidate { size, ..backup(id, at) };
        let candidates = [
            sized("a", "2026-11-20T00:00:00Z", 100),
            sized("b", "2026-11-21T00:00:00Z", 100),
            sized("c", "2026-11-22T00:00:00Z", 100),
            sized("d", "2026-11-23T00:00:00Z", 100),
        ];
        let protected = BTreeSet::from(["a".to_string()]);
        let policy = RetentionPolicy { max_total_bytes: Some(250), ..only(4, 0, 0, 0) };
        let plan = plan(&policy, &candidates, &protected, ts(NOW));
        // a is protected, d is the newest good: b goes first, then c.
        assert_eq!(kept_ids(&plan), ["d", "a"]);
        let b = decision(&plan, "b");
        assert_eq!(b.reasons, [Reason::OverSizeCap]);
        assert_eq!(b.detail, "drop: over the size cap of 250 bytes (kept by the rules as: last (#3 of 4))");
        assert_eq!(plan.kept_bytes(), 200);

        // Protected backups alone over the cap: kept anyway, and said so.
        let policy = RetentionPolicy { max_total_bytes: Some(150), ..policy };
        let plan = super::plan(&policy, &candidates, &protected, ts(NOW));
        assert_eq!(kept_ids(&plan), ["d", "a"]);
        assert!(
            decision(&plan, "d")
                .detail
                .ends_with("; the size cap of 150 bytes cannot be met: protected backups alone total 200 bytes")
        );
    }

    #[test]
    fn ties_are_broken_by_id() {
        let candidates = [backup("b", "2026-11-24T00:00:00Z"), backup("a", "2026-11-24T00:00:00Z")];
        let plan = plan(&only(1, 1, 0, 0), &candidates, &none(), ts(NOW));
        assert_eq!(kept_ids(&plan), ["a"]);
        assert_eq!(plan.decisions[1].id, "b");
    }

    #[test]
    fn plan_round_trips_through_json() {
        let candidates = [backup("a", "2026-11-24T10:00:00Z"), backup("b", "2026-11-23T10:00:00Z")];
        let plan = plan(&RetentionPolicy::default(), &candidates, &none(), ts(NOW));
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#""created":"2026-11-24T10:00:00Z""#), "{json}");
        assert!(json.contains(r#""reasons":["last","daily","weekly","monthly","newest_good"]"#), "{json}");
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
        assert_eq!(Reason::OldestInShortBucket.to_string(), "oldest_in_short_bucket");
    }
}
