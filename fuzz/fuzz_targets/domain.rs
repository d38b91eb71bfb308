//! Domain parsing: never panics; whatever it accepts is normal (parsing it again gives the
//! same), a safe file name and shell word, and has an A-label form that parses back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use server_trust::Domain;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = Domain::may_change_when_normalised(s);
    if let Ok(d) = Domain::new(s) {
        assert_eq!(Domain::new(d.as_str()).unwrap(), d, "not idempotent");
        assert!(!d.as_str().contains(['/', '\\', '\0', '@', ' ', '$', '`', ';', '*']), "{d:?}");
        assert!(d.as_str() != "." && d.as_str() != "..");
        assert_eq!(Domain::new(&d.ascii()).unwrap(), d, "A-label does not parse back");
        if Domain::is_normal(d.as_str()) {
            assert!(d.as_str().is_ascii());
        }
        let _ = d.site();
    }
});
