// The built-in models are embedded with include_dir; rebuild when any of their files change.
fn main() {
    println!("cargo:rerun-if-changed=device-templates");
}
