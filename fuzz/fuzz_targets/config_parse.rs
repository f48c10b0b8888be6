#![no_main]
//! Arbitrary text as the manager's configuration: parsing and validation
//! must never panic, every error must carry a place inside the text, and
//! an accepted configuration must build a core. Seeds:
//! fuzz/seeds/config_parse (the example and the lab's configurations).
use affinity_manager::{Config, ManagerCore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(cfg) => {
            let _ = cfg.auth_policy();
            let mut core = ManagerCore::new(cfg, 0);
            let _ = core.tick(0);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = text.matches('\n').count() + 1;
            for e in errors {
                assert!(e.line <= lines, "{e:?} past the end");
            }
        }
    }
});
