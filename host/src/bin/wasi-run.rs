//! `wasi-run`: runs a wasm32-wasip2 command component, for `cargo test --target wasm32-wasip2`
//! on machines without the wasmtime CLI:
//!
//! ```text
//! CARGO_TARGET_WASM32_WASIP2_RUNNER="$PWD/target/release/wasi-run --dir $PWD" \
//!     cargo test -p chord-engine --target wasm32-wasip2 --release
//! ```
//!
//! Usage: `wasi-run [--dir PATH]... COMPONENT.wasm [ARGS]...`. The guest gets `ARGS` (after the
//! component's path as its program name), the whole host environment, stdio, and these
//! directories at their own absolute paths: the current one (also as `.`), each `--dir`, and
//! each entry of `WASI_RUN_DIRS` (`:`-separated), less those inside another. The exit status is
//! the guest's (a panicking test aborts the guest: pass `--nocapture` to the test binary to see
//! its message). Imports other
//! than WASI (the engine library's own WIT imports, linked into its test binaries but never
//! called by the tests) trap if called.

use std::path::PathBuf;
use std::process::ExitCode;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceTable, ResourceType};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, Result, Store, bail, format_err};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasi-run: {e:#}");
            ExitCode::from(125)
        }
    }
}

/// Defines `item` as functions that trap (and resources nothing can create).
fn stub(
    engine: &Engine,
    linker: &mut LinkerInstance<'_, Host>,
    name: &str,
    item: ComponentItem,
) -> Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let what = name.to_owned();
            linker.func_new(name, move |_, _, _, _| {
                bail!("`{what}` is not provided by wasi-run")
            })?;
        }
        ComponentItem::ComponentInstance(instance) => {
            let mut inner = linker.instance(name)?;
            for (n, i) in instance.exports(engine) {
                stub(engine, &mut inner, n, i.ty)?;
            }
        }
        ComponentItem::Resource(_) => {
            linker.resource(name, ResourceType::host::<()>(), |_, _| Ok(()))?;
        }
        // Named types need no definition.
        ComponentItem::Type(_) => {}
        _ => bail!("cannot stub the import `{name}`"),
    }
    Ok(())
}

fn run() -> Result<ExitCode> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    let wasm = loop {
        match args.next() {
            Some(a) if a == "--dir" => {
                dirs.push(args.next().context("--dir needs a path")?.into());
            }
            Some(a) if a == "--help" || a == "-h" => {
                println!("usage: wasi-run [--dir PATH]... COMPONENT.wasm [ARGS]...");
                return Ok(ExitCode::SUCCESS);
            }
            Some(a) => break PathBuf::from(a),
            None => bail!("usage: wasi-run [--dir PATH]... COMPONENT.wasm [ARGS]..."),
        }
    };
    let guest_args: Vec<String> = std::iter::once(wasm.clone().into_os_string())
        .chain(args)
        .map(|a| {
            a.into_string()
                .map_err(|a| format_err!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<_>>()?;
    if let Some(list) = std::env::var_os("WASI_RUN_DIRS") {
        dirs.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
    }

    let mut config = Config::new();
    config.wasm_component_model(true);
    // As `chord` runs the relaxed-simd build of the engine (its tests check the same bits).
    chord_host::runtime::configure_relaxed_simd(&mut config);
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, &wasm)
        .with_context(|| format!("loading {}", wasm.display()))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // Not `define_unknown_imports_as_traps`: it would also shadow WASI imports whose version
    // differs from the linker's (the linker resolves those by semver).
    for (name, item) in component.component_type().imports(&engine) {
        if !name.starts_with("wasi:") {
            stub(&engine, &mut linker.root(), name, item.ty)?;
        }
    }

    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio().args(&guest_args);
    for (k, v) in std::env::vars_os() {
        if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
            wasi.env(k, v);
        }
    }
    let cwd = std::env::current_dir().context("current directory")?;
    wasi.preopened_dir(&cwd, ".", FsPerms::ReadWrite)
        .with_context(|| format!("preopening {}", cwd.display()))?;
    dirs.push(cwd);
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(std::path::absolute)
        .collect::<std::io::Result<_>>()?;
    for (i, dir) in dirs.iter().enumerate() {
        // Only the outermost of nested directories: the guest's C library resolves a path
        // through the longest matching preopen, and `..` may not leave it, so a test's
        // `<crate>/../../tests/…` must resolve through the workspace, not the crate.
        let covered = dirs
            .iter()
            .enumerate()
            .any(|(j, d)| dir.starts_with(d) && (dir != d || j < i));
        if covered {
            continue;
        }
        let guest = dir
            .to_str()
            .with_context(|| format!("{} is not UTF-8", dir.display()))?;
        wasi.preopened_dir(dir, guest, FsPerms::ReadWrite)
            .with_context(|| format!("preopening {}", dir.display()))?;
    }
    let mut store = Store::new(
        &engine,
        Host {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        },
    );
    let command = Command::instantiate(&mut store, &component, &linker)
        .with_context(|| format!("instantiating {}", wasm.display()))?;
    match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(())) => Ok(ExitCode::FAILURE),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            // Exit statuses beyond 255 keep their low byte, as on POSIX.
            Some(exit) => Ok(ExitCode::from(exit.0 as u8)),
            None => Err(e.context(
                "the guest trapped (a failing test aborts a wasm test binary; \
                 `-- --nocapture` shows its message)",
            )),
        },
    }
}
