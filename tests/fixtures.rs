//! Golden fixtures: every model's scenarios render byte for byte as expected, and pass the
//! semantic checks (XML parses, shared flags and line keys, no secrets in common files).
//! `UPDATE_FIXTURES=1 cargo test --test fixtures` rewrites the expected files for review.

use deskprov::catalog::Catalog;

#[test]
fn every_model_renders_its_fixtures() {
    let catalog = Catalog::builtin().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let (n, problems) =
        deskprov::render::fixtures::check_all(&catalog, &root, update, None).unwrap();
    assert!(
        problems.is_empty(),
        "{} problems in {n} scenarios:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Four scenarios per model at least (and models to check at all).
    let models = catalog.models().count();
    assert!(models > 0, "the built-in catalogue has no models");
    assert!(n >= 4 * models, "{n} scenarios for {models} models");
}
