//! How the api binary reports a configuration it cannot use: one line naming the key,
//! each cause once, and a failure exit code, before touching the network.

use std::process::Command;

fn api_with(env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_regindex-api"))
        .env_remove("REGINDEX_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run regindex-api");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_value_is_reported_once_naming_the_key() {
    for (name, value, key) in [
        ("REGINDEX_WORKER__COALESCE_MS", "soon", "worker.coalesce_ms"),
        (
            "REGINDEX_API__PUBLISH_TIMEOUT_MS",
            "0",
            "api.publish_timeout_ms",
        ),
        ("REGINDEX_REGISTRY__URL", "ftp://registry", "registry.url"),
    ] {
        let (ok, stderr) = api_with(&[(name, value)]);
        assert!(!ok, "{name}={value} was accepted");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}={value}: one line:\n{stderr}");
        assert!(lines[0].starts_with("regindex-api: "), "{stderr}");
        assert_eq!(lines[0].matches(key).count(), 1, "{stderr}");
    }
}
