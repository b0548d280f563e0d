//! An atom's name is written twice: `Atom::TYPE` in Rust, and `atom = "…"` in the declaration
//! `infra/render.py` builds its queue, role and function from (`[package.metadata.reanimate]` in
//! `functions/<dir>/Cargo.toml`). This keeps the two equal: every declared atom is one the code
//! registers, and every registered atom is declared once.

use std::collections::BTreeMap;
use std::path::Path;

/// The `atom` of a declaration, if the Cargo.toml has one (render.py checks the rest of it).
fn declared_atom(cargo_toml: &str) -> Option<String> {
    let (_, table) = cargo_toml.split_once("[package.metadata.reanimate]")?;
    let table = table.split("\n[").next().unwrap_or_default();
    table.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("atom")?
            .trim_start()
            .strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_string())
    })
}

#[test]
fn every_declared_function_serves_a_registered_atom_and_every_atom_is_declared_once() {
    let functions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let mut declared: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let entries = std::fs::read_dir(&functions).unwrap_or_else(|e| panic!("{e}"));
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        assert!(
            text.contains("[package.metadata.reanimate]"),
            "{} has no declaration",
            manifest.display()
        );
        if let Some(atom) = declared_atom(&text) {
            let dir = entry.file_name().to_string_lossy().into_owned();
            declared.entry(atom).or_default().push(dir);
        }
    }
    let mut registered: Vec<&str> = reanimate_atoms::registry().names();
    registered.extend(reanimate_email::atoms::registry().names());
    registered.sort_unstable();
    let names: Vec<&str> = declared.keys().map(String::as_str).collect();
    assert_eq!(
        names, registered,
        "declared atoms (left) and registered atoms (right)"
    );
    for (atom, dirs) in &declared {
        assert_eq!(dirs.len(), 1, "{atom} is declared by {dirs:?}");
    }
}

#[test]
fn a_declaration_is_read_from_its_own_table_only() {
    let text = "[package]\nname = \"x\"\n\n[package.metadata.reanimate]\natom = \"fan-out\"\nprofile = \"steps\"\n\n[lints]\natom = \"no\"\n";
    assert_eq!(declared_atom(text).as_deref(), Some("fan-out"));
    assert_eq!(declared_atom("[package]\nname = \"x\"\n"), None);
}
