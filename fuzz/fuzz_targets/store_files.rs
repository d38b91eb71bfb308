//! Every store file format (roster, pending request, queued act, audit line): never panics
//! on any input; what parses re-serialises and parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use server_trust::store::{AuditRecord, PendingRequest, Queued, RosterFile};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(text: &str) {
    if let Ok(v) = toml::from_str::<T>(text) {
        let again = toml::to_string(&v).expect("serialises");
        assert_eq!(toml::from_str::<T>(&again).expect("re-parses"), v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    round_trip::<RosterFile>(text);
    round_trip::<PendingRequest>(text);
    round_trip::<Queued>(text);
    if let Ok(rec) = serde_json::from_str::<AuditRecord>(text) {
        let again = serde_json::to_string(&rec).unwrap();
        assert_eq!(serde_json::from_str::<AuditRecord>(&again).unwrap(), rec);
    }
});
