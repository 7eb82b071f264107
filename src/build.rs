//! Build script (not a module of the crate; see `build` in Cargo.toml).
//! Embeds sql/ and policies/ into the binary (so `tenantry migrate` needs no files beside it) and
//! makes cargo rebuild when a migration, SQL or policy file is added or changed.

use std::fmt::Write as _;
use std::path::Path;

fn embed(dir: &str, out: &mut String, name: &str) {
    println!("cargo:rerun-if-changed={dir}");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    writeln!(out, "pub static {name}: &[(&str, &str)] = &[").unwrap();
    for path in files {
        let abs = std::fs::canonicalize(&path).unwrap();
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            path.display().to_string(),
            abs.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let mut out = String::new();
    embed("sql", &mut out, "SQL_FILES");
    embed("policies", &mut out, "POLICY_FILES");
    // Two checkouts building into one CARGO_TARGET_DIR share this script's output, and cargo
    // reruns it only when files of the checkout being built are newer than that output. So a
    // build could embed another checkout's SQL; the crate refuses to compile when it would.
    // `make` exports TNTY_BUILD_CHECKOUT (the checkout's path), so a build through it reruns
    // this script when the checkout changes; a bare `cargo build` gets the error instead.
    println!("cargo:rerun-if-env-changed=TNTY_BUILD_CHECKOUT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    writeln!(out, "pub const EMBEDDED_FROM: &str = {dir:?};").unwrap();
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded_sql.rs");
    std::fs::write(dest, out).unwrap();
    build_commit();
}

/// The commit built, for `tenantry_build_info{commit}`: `TNTY_BUILD_COMMIT` (a release
/// pipeline building from an archive), else git's HEAD, else `unknown`. Reruns when HEAD moves.
fn build_commit() {
    println!("cargo:rerun-if-env-changed=TNTY_BUILD_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    for path in ["HEAD", "refs/heads"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("TNTY_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let commit: String =
        commit.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').take(64).collect();
    println!("cargo:rustc-env=TNTY_COMMIT={commit}");
}
