//! `chord`: the wasm-chord command line.
fn main() -> anyhow::Result<()> {
    Ok(())
}
