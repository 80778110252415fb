//! The manifest tells the truth: the `rust-version` that `Cargo.toml` declares is at least
//! the highest `rust-version` of any package in `Cargo.lock`, so a toolchain that the
//! manifest admits can build what is locked.

use std::process::Command;

/// `1.88`, `1.88.0` → `[1, 88, 0]`, so that versions compare by number.
fn numbers(version: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = version
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect();
    parts.resize(3, 0);
    parts
}

/// The declared `rust-version` is not below any locked dependency's.
#[test]
fn declared_rust_version_allows_every_locked_dependency() {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("a package list");
    let ours = packages
        .iter()
        .find(|p| p["name"] == "heartbeat")
        .expect("the heartbeat package");
    let declared = ours["rust_version"]
        .as_str()
        .expect("Cargo.toml declares a rust-version");
    let highest = packages
        .iter()
        .filter(|p| p["name"] != "heartbeat")
        .filter_map(|p| Some((p["rust_version"].as_str()?, p["name"].as_str()?)))
        .max_by_key(|(version, _)| numbers(version))
        .expect("some dependency declares a rust-version");
    assert!(
        numbers(declared) >= numbers(highest.0),
        "Cargo.toml declares rust-version {declared}, but the locked {} needs {}",
        highest.1,
        highest.0
    );
}

#[test]
fn versions_compare_by_number_not_by_text() {
    assert!(numbers("1.100") > numbers("1.88.0"));
    assert_eq!(numbers("1.88"), numbers("1.88.0"));
}
