//! Fuzzes every record warden reads back from disk or from the operator: `warden.toml`,
//! backup manifests, session health artifacts, migration bundle manifests (and the entry
//! paths a bundle names), lock records and audit lines.
//!
//! Invariants: no input panics any of them (a damaged record is an error, never a crash);
//! a bundle entry path that `check_entry_path` accepts never escapes the bundle (no `..`, not
//! absolute); a record that parses re-serializes and parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlite_warden::copies::backup::Manifest;
use sqlite_warden::guard::audit::AuditRecord;
use sqlite_warden::guard::lock::LockRecord;
use sqlite_warden::ops::config;
use sqlite_warden::ops::migrate::{BundleManifest, check_entry_path};
use sqlite_warden::session::health::HealthArtifact;

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&v).expect("a parsed record serializes"))
            .expect("a serialized record parses");
        assert_eq!(again, v, "round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = config::parse(&text);
    let _ = config::parse_limit(&text);
    round_trip::<Manifest>(data);
    round_trip::<BundleManifest>(data);
    round_trip::<LockRecord>(data);
    let _ = serde_json::from_slice::<HealthArtifact>(data);
    let _ = serde_json::from_slice::<AuditRecord>(data);
    if check_entry_path(&text).is_ok() {
        let p = std::path::Path::new(text.as_ref());
        assert!(!p.is_absolute(), "an accepted entry path is absolute: {text:?}");
        assert!(
            p.components().all(|c| matches!(c, std::path::Component::Normal(_))),
            "an accepted entry path leaves the bundle: {text:?}"
        );
    }
});
