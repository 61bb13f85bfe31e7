//! Write `golden/frames.json`: every message type as a complete wire frame, plus invalid frames
//! and the `ERROR` they draw. Run from `firmware/`:
//!
//! ```text
//! cargo run -p odt-proto --example gen_golden_frames
//! ```
//!
//! `cargo test -p odt-proto` fails if the file differs from what this writes.

#[path = "../tests/golden_gen/mod.rs"]
mod golden_gen;

fn main() {
    let text = golden_gen::to_text(&golden_gen::golden());
    if let Err(e) = std::fs::write(golden_gen::PATH, &text) {
        eprintln!("cannot write {}: {e}", golden_gen::PATH);
        std::process::exit(1);
    }
    let n = golden_gen::golden().as_array().map_or(0, |a| a.len());
    println!("wrote {} frames to {}", n, golden_gen::PATH);
}
