//! Every store file format (roster, pending request, queued act, audit line, roster journal
//! line): never panics on any input; what parses re-serialises and parses to the same value;
//! a journal line that applies gives an entry whose own journal line rebuilds it; the reader
//! of sealed roster files takes nothing the TOML parser refuses and reads what it takes as
//! the TOML parser does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use server_trust::store::{AuditRecord, Change, PendingRequest, Queued, RosterFile};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(text: &str) {
    if let Ok(v) = toml::from_str::<T>(text) {
        let again = toml::to_string(&v).expect("serialises");
        assert_eq!(toml::from_str::<T>(&again).expect("re-parses"), v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    round_trip::<RosterFile>(text);
    if let Some(fast) = server_trust::store::read_sealed_roster(text) {
        assert_eq!(toml::from_str::<RosterFile>(text).ok(), Some(fast), "sealed reader vs toml");
    }
    round_trip::<PendingRequest>(text);
    round_trip::<Queued>(text);
    if let Ok(change) = serde_json::from_str::<Change>(text) {
        let again = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&again).unwrap(), change);
        if let Ok(Some(entry)) = change.apply(None) {
            let rebuilt = Change::between(&change.peer, None, Some(&entry));
            assert_eq!(rebuilt.apply(None), Ok(Some(entry.clone())));
            assert!(Change::between(&change.peer, Some(&entry), Some(&entry)).set.is_empty());
        }
    }
    if let Ok(rec) = serde_json::from_str::<AuditRecord>(text) {
        let again = serde_json::to_string(&rec).unwrap();
        assert_eq!(serde_json::from_str::<AuditRecord>(&again).unwrap(), rec);
    }
});
