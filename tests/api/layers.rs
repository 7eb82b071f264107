//! The layering `src/lib.rs` claims is the one the code has: no module names a module of its own
//! layer or of one above it (comments aside).

use std::collections::HashMap;
use std::path::Path;

/// Layer of each module, from lib.rs's numbered list (`1. `startup` ...`): 1 is the top.
fn claimed_layers(lib: &str) -> HashMap<String, usize> {
    let mut layers = HashMap::new();
    let mut current = None;
    for line in lib.lines().filter_map(|l| l.strip_prefix("//!")) {
        let line = line.trim();
        if let Some((n, _)) = line.split_once(". ")
            && let Ok(n) = n.parse::<usize>()
        {
            current = Some(n);
        } else if line.is_empty() {
            current = None;
        }
        let Some(layer) = current else { continue };
        // The module names are the backticked words that are modules (checked below).
        for name in line.split('`').skip(1).step_by(2) {
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                layers.entry(name.to_owned()).or_insert(layer);
            }
        }
    }
    layers
}

fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

#[test]
fn dependencies_point_one_way_as_lib_rs_says() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = claimed_layers(&lib);
    let modules: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    for module in &modules {
        assert!(layers.contains_key(module), "lib.rs places no layer for `{module}`");
    }
    let mut violations = Vec::new();
    for module in &modules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            sources(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.exists() {
            files.push(file);
        }
        for file in files {
            for (n, line) in std::fs::read_to_string(&file).unwrap().lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for (i, _) in code.match_indices("crate::") {
                    let used: String =
                        code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if used == *module || !layers.contains_key(&used) {
                        continue;
                    }
                    if layers[&used] <= layers[module] {
                        violations.push(format!("{}:{}: `{module}` uses `{used}`", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "dependencies against lib.rs's layers:\n{}", violations.join("\n"));
}
