//! `--check-config` cases: each refused with a clear message.

use super::{Config, ConfigError};
use std::path::Path;

const HEAD: &str = "[manager]\nlisten = \"192.0.2.10:1638\"\n[[service]]\nname = \"web\"\n";

/// The errors for `HEAD` + `rest`, as `LINE:COL: message` lines.
fn errors(rest: &str) -> Vec<String> {
    match Config::parse(&format!("{HEAD}{rest}")) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(ConfigError::to_string).collect(),
    }
}

#[test]
fn a_backend_listed_twice_is_refused() {
    let e = errors(
        "virtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n",
    );
    assert!(
        e.iter()
            .any(|e| e.contains("198.51.100.11:8080 listed twice")),
        "{e:?}"
    );
}

#[test]
fn virtual_port_zero_is_refused() {
    let e = errors(
        "virtual = \"203.0.113.10:0\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n",
    );
    assert!(
        e.iter()
            .any(|e| e.starts_with("5:") && e.contains("needs a port from 1 to 65535")),
        "{e:?}"
    );
}

#[test]
fn all_weights_zero_is_refused_but_some_zero_is_fine() {
    let one = "virtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\nweight = 0\n";
    assert!(
        errors(one).iter().any(|e| e.contains("has weight 0")),
        "{:?}",
        errors(one)
    );
    let mixed = format!("{one}[[service.backend]]\naddress = \"198.51.100.12:8080\"\n");
    assert_eq!(errors(&mixed), Vec::<String>::new());
}

#[test]
fn health_timeout_longer_than_interval_is_refused() {
    let e = errors("virtual = \"203.0.113.10:80\"\nhealth = { kind = \"tcp\", interval_ms = 300, timeout_ms = 400 }\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n");
    assert!(
        e.iter()
            .any(|e| e.starts_with("6:")
                && e.contains("timeout_ms 400 is longer than interval_ms 300")),
        "{e:?}"
    );
}

#[test]
fn a_negative_weight_is_explained_in_words() {
    let e = errors("virtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\nweight = -1\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("8:"), "{e:?}");
    assert!(
        e[0].contains("weight must be a whole number from 0"),
        "{e:?}"
    );
    assert!(e[0].contains("not -1"), "{e:?}");
    assert!(!e[0].contains("u32"), "{e:?}");
}

#[test]
fn a_missing_file_is_named_without_a_place() {
    let path = Path::new("/nonexistent/affinity-manager.toml");
    let e = Config::load(path).unwrap_err();
    let text = e[0].located(path);
    assert!(
        text.starts_with("/nonexistent/affinity-manager.toml: cannot read"),
        "{text}"
    );
    assert!(!text.contains(":0:0:"), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

#[test]
fn errors_point_at_the_key_not_at_comments_or_longer_names() {
    let text = "[manager]\nlisten = \"192.0.2.10:1638\"\n\n# weighted-round-robin spreads by weight; unhealthy backends are skipped\n[[service]]\nname = \"web\"\nvirtual = \"203.0.113.10:80\"\nsticky_timeout_ms = 1000\nhealth = { kind = \"tcp\", interval_ms = 1000, timeout_ms = 1500, rise = 2, fall = 2 }\n[[service.backend]]\naddress = \"198.51.100.1:8080\"\nweight = 0\n";
    let errs = Config::parse(text).unwrap_err();
    let timeout = errs
        .iter()
        .find(|e| e.message.contains("timeout_ms"))
        .expect("timeout_ms refused");
    // Line 9, the health table's `timeout_ms`, not `sticky_timeout_ms` on 8.
    assert_eq!((timeout.line, timeout.column), (9, 46), "{timeout}");
    let weight = errs
        .iter()
        .find(|e| e.message.contains("weight"))
        .expect("all weights 0 refused");
    assert_eq!(weight.line, 12, "{weight}");
}

#[test]
fn addresses_health_requests_ttls_and_key_ids_that_break_the_service_are_refused() {
    let svc = |virt: &str, backend: &str, health: &str| {
        format!("virtual = \"{virt}\"\n{health}[[service.backend]]\naddress = \"{backend}\"\n")
    };
    let ok = svc("203.0.113.10:80", "198.51.100.11:8080", "");
    assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
    for (rest, expect) in [
        (
            svc("224.1.2.3:80", "198.51.100.11:8080", ""),
            "virtual address 224.1.2.3 must be a unicast host address",
        ),
        (
            svc("203.0.113.10:80", "0.0.0.0:8080", ""),
            "backend 0.0.0.0 must be a unicast host address",
        ),
        (
            svc("203.0.113.10:80", "255.255.255.255:8080", ""),
            "backend 255.255.255.255 must be a unicast host address",
        ),
        (
            svc(
                "203.0.113.10:80",
                "198.51.100.11:8080",
                "health = { kind = \"http\", path = \"no slash\\r\\nX: y\" }\n",
            ),
            "must start with / and hold no spaces or control characters",
        ),
        (
            svc(
                "203.0.113.10:80",
                "198.51.100.11:8080",
                "health = { kind = \"http\", expect = 999 }\n",
            ),
            "health expect 999 is not an HTTP status",
        ),
    ] {
        let e = errors(&rest);
        assert!(e.iter().any(|m| m.contains(expect)), "{expect}: {e:?}");
    }
    let top = |extra: &str| match Config::parse(&format!(
        "[manager]\nlisten = \"192.0.2.10:1638\"\n{extra}\n[[service]]\nname = \"web\"\n{ok}"
    )) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(ConfigError::to_string).collect::<Vec<_>>(),
    };
    assert!(top("fixed_ttl = 4294967295")
        .iter()
        .any(|m| m.contains("fixed_ttl must be 3..=86400")));
    assert!(top("[agents]\nunicast = [\"192.0.2.1:0\"]")
        .iter()
        .any(|m| m.contains("unicast agent 192.0.2.1:0 needs")));
    let keys = "[auth]\nkeys = [{ id = 7, file = \"/dev/null\", send = true }, { id = 7, file = \"/dev/null\" }]";
    assert!(top(keys)
        .iter()
        .any(|m| m.contains("key id 7 listed twice")));
}

#[test]
fn syn_proxy_on_a_udp_service_is_refused() {
    let svc = "virtual = \"203.0.113.10:53\"\nsyn_proxy = true\n[[service.backend]]\naddress = \"198.51.100.11:5353\"\n";
    let udp = errors(&svc.replace("virtual", "protocol = \"udp\"\nvirtual"));
    assert!(
        udp.iter()
            .any(|e| e.contains("syn_proxy is for tcp services")),
        "{udp:?}"
    );
    assert_eq!(
        errors(svc),
        Vec::<String>::new(),
        "tcp (the default) takes it"
    );
}

#[test]
fn half_open_policy_is_checked() {
    use super::HalfOpenPolicy;
    let svc = |line: &str| {
        format!("virtual = \"203.0.113.10:80\"\n{line}\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n")
    };
    let parse = |line: &str| Config::parse(&format!("{HEAD}{}", svc(line)));
    // Absent: evict-oldest; both names parse.
    let policy = |line: &str| parse(line).map(|c| c.services[0].half_open_policy());
    assert_eq!(policy(""), Ok(HalfOpenPolicy::EvictOldest));
    assert_eq!(
        policy("half_open_policy = \"evict-oldest\""),
        Ok(HalfOpenPolicy::EvictOldest)
    );
    assert_eq!(
        policy("half_open_policy = \"refuse\""),
        Ok(HalfOpenPolicy::Refuse)
    );
    // Another word is refused where it stands (line 6), naming the choices.
    let bad = errors(&svc("half_open_policy = \"drop\""));
    assert!(
        bad.iter()
            .any(|e| e.starts_with("6:") && e.contains("evict-oldest") && e.contains("refuse")),
        "{bad:?}"
    );
    // Another type is told as such, where it stands (it was "wanted
    // string or table").
    for v in ["1", "true", "[\"refuse\"]", "{ refuse = 1 }"] {
        let bad = errors(&svc(&format!("half_open_policy = {v}")));
        assert!(
            bad.iter()
                .any(|e| e.starts_with("6:") && e.contains("expected a string")),
            "{v}: {bad:?}"
        );
    }
    // Half-open is a TCP state: on a UDP service the option is an error.
    let udp = errors(
        &svc("half_open_policy = \"refuse\"").replace("virtual", "protocol = \"udp\"\nvirtual"),
    );
    assert!(
        udp.iter()
            .any(|e| e.starts_with("7:") && e.contains("half_open_policy is for tcp services")),
        "{udp:?}"
    );
}
