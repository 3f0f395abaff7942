//! Cold render of a per-MAC file (cache miss), per model, on one core (SPEC §6).
//!
//!     cargo bench --bench render
//!
//! Each model renders its main file for the template-validation sample device (primary line, an
//! SCA appearance, a BLF key) with the cache cleared before every render.

use std::sync::Arc;
use std::time::Instant;

use deskprov::catalog::Catalog;
use deskprov::domain::Mac;
use deskprov::render::{fixtures, Renderer};

fn main() {
    let catalog = Arc::new(Catalog::builtin().unwrap());
    let renderer = Renderer::new(catalog.clone(), fixtures::BASE_URL.to_string(), &[]);
    let mac = Mac::parse("000000000001").unwrap();
    for model in catalog.models() {
        let state = fixtures::sample_state(&catalog, &model.id).unwrap();
        let device = &state.devices[&mac];
        let spec = model.main_file().unwrap();
        let n = 5000;
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            renderer.clear_cache();
            bytes = renderer
                .render_device(&state, device, spec)
                .unwrap()
                .bytes
                .len();
        }
        let per = t.elapsed() / n;
        println!(
            "render: {:<22} {:>6.1} µs per cold render ({:>6.0}/s per core, {bytes} bytes)",
            model.id,
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64()
        );
    }
}
