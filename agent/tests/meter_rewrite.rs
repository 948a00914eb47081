//! The metering bench's rewriting option (`executor/meter.rs`) is sound: a
//! rewritten module still stops in a loop, in recursion and in an exponential tree of calls
//! without loops, a real guest's output is unchanged, and so is what random valid modules
//! (wasm-smith) compute, trap on and leave in their globals and memories. Its figures in
//! BENCHMARKS.md mean something only if it meters what fuel meters.

use meter_rewrite::{rewrite, Placement};
use tessera_agent::executor::meter as meter_rewrite;
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

/// The placements the random-module tests rewrite with: the executor's, and the three it
/// builds on (the bench-only variant keeping the budget in a local is left out).
const RANDOM_PLACEMENTS: [Placement; 4] = [
    Placement::CountedRuns,
    Placement::BackEdgesSaved,
    Placement::BackEdges,
    Placement::Headers,
];

const PLACEMENTS: [Placement; 6] = [
    Placement::CountedRuns,
    Placement::Headers,
    Placement::HeadersSaved,
    Placement::BackEdges,
    Placement::BackEdgesSaved,
    Placement::BackEdgesSavedLocal,
];

/// Runs `run` of `wat` rewritten with `placement`, its host granting `budget` a tick until it
/// stops the guest at the `stop_at`th tick; returns the store (whose data counts the ticks) and
/// the instance.
fn run_until_stopped(
    wat: &str,
    placement: Placement,
    budget: i64,
    stop_at: u32,
) -> (Store<u32>, wasmtime::Instance) {
    let wasm = rewrite(&wat::parse_str(wat).unwrap(), placement).unwrap();
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).unwrap();
    let mut linker: Linker<u32> = Linker::new(&engine);
    linker
        .func_wrap(
            meter_rewrite::TICK_MODULE,
            meter_rewrite::TICK_NAME,
            move |mut caller: wasmtime::Caller<'_, u32>| -> wasmtime::Result<i64> {
                *caller.data_mut() += 1;
                if *caller.data() >= stop_at {
                    wasmtime::bail!("stopped by the host");
                }
                Ok(budget)
            },
        )
        .unwrap();
    let mut store = Store::new(&engine, 0u32);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let run = instance
        .get_typed_func::<(), ()>(&mut store, "run")
        .unwrap();
    let err = run
        .call(&mut store, ())
        .expect_err("runs forever unless stopped");
    assert!(
        format!("{err:?}").contains("stopped by the host"),
        "stopped by something else: {err:?}"
    );
    (store, instance)
}

/// Ticks a module took before its host stopped it.
fn ticks_until_stopped(wat: &str, placement: Placement, budget: i64, stop_at: u32) -> u32 {
    *run_until_stopped(wat, placement, budget, stop_at).0.data()
}

#[test]
fn an_endless_loop_is_stopped() {
    let wat = r#"(module (func (export "run") (loop $l (br $l))))"#;
    for p in PLACEMENTS {
        assert_eq!(ticks_until_stopped(wat, p, 1000, 3), 3, "{p:?}");
    }
}

#[test]
fn an_endless_conditional_loop_in_a_block_is_stopped() {
    // A `br_if` back edge under a block, with a value on the stack: the rewriting relabels
    // the branch past the labels it adds.
    let wat = r#"(module (func (export "run") (local i32)
        (block $out
            (loop $l
                (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                (block $b (br_if $b (i32.eqz (local.get 0))))
                (br_if $l (i32.const 1))
                (br $out)))))"#;
    for p in PLACEMENTS {
        assert_eq!(ticks_until_stopped(wat, p, 1000, 3), 3, "{p:?}");
    }
}

#[test]
fn loops_closed_by_every_kind_of_branch_are_stopped() {
    // A tenant's module may go back to a loop's header by any branch the executor's engine
    // accepts, not only `br` and `br_if`: each of these loops must still reach its check.
    let loops = [
        (
            "br_table",
            r#"(module (func (export "run") (loop $l (br_table $l $l (i32.const 1)))))"#,
        ),
        (
            "br_on_null",
            r#"(module (func (export "run") (loop $l (drop (br_on_null $l (ref.null func))))))"#,
        ),
        (
            "br_on_non_null",
            r#"(module (func $f) (elem declare func $f)
                (func (export "run")
                  (ref.func $f)
                  (loop $l (param (ref func)) (br_on_non_null $l))))"#,
        ),
        (
            "br_on_cast",
            r#"(module (type $s (struct))
                (func (export "run")
                  (struct.new $s)
                  (loop $l (param (ref $s))
                    (br_on_cast $l anyref (ref $s))
                    (drop))))"#,
        ),
        (
            "br_on_cast_fail",
            r#"(module (type $s (struct)) (type $t (struct (field i32)))
                (func (export "run")
                  (struct.new $s)
                  (loop $l (param anyref)
                    (br_on_cast_fail $l anyref (ref $t))
                    (drop))))"#,
        ),
        (
            "try_table catch",
            r#"(module (tag $e)
                (func (export "run") (loop $l (try_table (catch_all $l) (throw $e)))))"#,
        ),
        (
            "try_table catch, thrown by a callee",
            r#"(module (tag $e) (func $throw (throw $e))
                (func (export "run") (loop $l (try_table (catch $e $l) (call $throw)))))"#,
        ),
        (
            "return_call to itself",
            r#"(module (func $f (export "run") (return_call $f)))"#,
        ),
        (
            "call_ref to itself",
            r#"(module (type $t (func)) (elem declare func $f)
                (func $f (export "run") (call_ref $t (ref.func $f))))"#,
        ),
        (
            "return_call_ref to itself",
            r#"(module (type $t (func)) (elem declare func $f)
                (func $f (export "run") (return_call_ref $t (ref.func $f))))"#,
        ),
    ];
    for (what, wat) in loops {
        let original = wat::parse_str(wat).unwrap();
        Module::new(&Engine::default(), &original).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        for p in PLACEMENTS {
            let rewritten = rewrite(&original, p).unwrap();
            Module::new(&Engine::default(), &rewritten)
                .unwrap_or_else(|e| panic!("{what}, {p:?}: {e:?}"));
            assert_eq!(ticks_until_stopped(wat, p, 1000, 3), 3, "{what}, {p:?}");
        }
    }
}

#[test]
fn a_loop_of_bulk_fills_is_charged_by_the_byte() {
    // Each pass fills 64 KiB: charged one per byte (as fuel does), a budget of 1 MiB lasts about
    // 16 passes; charged as one operator, it would last some 100,000.
    let wat = r#"(module (memory 1) (global $passes (export "passes") (mut i32) (i32.const 0))
        (func (export "run")
          (loop $l
            (memory.fill (i32.const 0) (i32.const 7) (i32.const 65536))
            (global.set $passes (i32.add (global.get $passes) (i32.const 1)))
            (br $l))))"#;
    for p in PLACEMENTS {
        if p == Placement::BackEdgesSavedLocal {
            continue; // a bench-only variant whose bulk operations cost one
        }
        // Stopped at the fourth tick: three grants of 1 MiB used.
        let (mut store, instance) = run_until_stopped(wat, p, 1 << 20, 4);
        let passes = instance
            .get_global(&mut store, "passes")
            .unwrap()
            .get(&mut store)
            .unwrap_i32();
        assert!(passes <= 3 * 17 + 1, "{p:?}: {passes} passes for 3 MiB");
    }
}

#[test]
fn loops_of_gc_array_and_table_work_are_charged_by_the_element() {
    // As the bulk fills above: each pass does 64 Ki elements of work, so a budget of 1 Mi lasts
    // about 16 passes. Charged as one operator each, it would last some 100,000.
    let loops = [
        (
            "array.fill",
            r#"(type $a (array (mut i8)))
               (func (export "run") (local $arr (ref null $a))
                 (local.set $arr (array.new_default $a (i32.const 65536)))
                 (loop $l
                   (array.fill $a (local.get $arr) (i32.const 0) (i32.const 7) (i32.const 65536))
                   (global.set $passes (i32.add (global.get $passes) (i32.const 1)))
                   (br $l)))"#,
        ),
        (
            "array.new_default",
            r#"(type $a (array (mut i8)))
               (func (export "run")
                 (loop $l
                   (drop (array.new_default $a (i32.const 65536)))
                   (global.set $passes (i32.add (global.get $passes) (i32.const 1)))
                   (br $l)))"#,
        ),
        (
            "array.copy",
            r#"(type $a (array (mut i8)))
               (func (export "run") (local $arr (ref null $a))
                 (local.set $arr (array.new_default $a (i32.const 131072)))
                 (loop $l
                   (array.copy $a $a (local.get $arr) (i32.const 0)
                     (local.get $arr) (i32.const 65536) (i32.const 65536))
                   (global.set $passes (i32.add (global.get $passes) (i32.const 1)))
                   (br $l)))"#,
        ),
        (
            "table.grow",
            r#"(table $t 0 funcref)
               (func (export "run")
                 (loop $l
                   (drop (table.grow $t (ref.null func) (i32.const 65536)))
                   (global.set $passes (i32.add (global.get $passes) (i32.const 1)))
                   (br $l)))"#,
        ),
    ];
    for (what, body) in loops {
        let wat = format!(
            r#"(module (global $passes (export "passes") (mut i32) (i32.const 0)) {body})"#
        );
        for p in PLACEMENTS {
            if p == Placement::BackEdgesSavedLocal {
                continue; // a bench-only variant whose bulk operations cost one
            }
            let (mut store, instance) = run_until_stopped(&wat, p, 1 << 20, 4);
            let passes = instance
                .get_global(&mut store, "passes")
                .unwrap()
                .get(&mut store)
                .unwrap_i32();
            assert!(
                passes <= 3 * 17 + 1,
                "{what}, {p:?}: {passes} passes for 3 Mi"
            );
        }
    }
}

#[test]
fn endless_mutual_recursion_is_stopped_before_the_stack_overflows() {
    let wat = r#"(module
        (func $f (export "run") (call $g))
        (func $g (call $f)))"#;
    for p in PLACEMENTS {
        assert_eq!(ticks_until_stopped(wat, p, 10, 3), 3, "{p:?}");
    }
}

#[test]
fn an_exponential_tree_of_calls_without_loops_is_stopped() {
    // f0 calls f1 twice, f1 calls f2 twice, ... f39: 2^40 calls, no loop, no recursion.
    let mut wat = String::from("(module\n(func (export \"run\") (call $f0))\n");
    for i in 0..40 {
        wat.push_str(&format!(
            "(func $f{i} (call $f{n}) (call $f{n}))\n",
            n = i + 1
        ));
    }
    wat.push_str("(func $f40 nop))");
    for p in PLACEMENTS {
        assert_eq!(ticks_until_stopped(&wat, p, 100_000, 3), 3, "{p:?}");
    }
}

/// Runs a real guest's `_start` and returns its standard output.
fn guest_output(wasm: &[u8], args: &[&str], tick: bool) -> Vec<u8> {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).unwrap();
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
    if tick {
        linker
            .func_wrap(meter_rewrite::TICK_MODULE, meter_rewrite::TICK_NAME, || {
                10_000i64
            })
            .unwrap();
    }
    let out = MemoryOutputPipe::new(1 << 20);
    let wasi = WasiCtxBuilder::new()
        .args(args)
        .stdout(out.clone())
        .build_p1();
    let mut store = Store::new(&engine, wasi);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    if let Err(e) = start.call(&mut store, ()) {
        let code = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0);
        assert_eq!(code, Some(0), "{e:?}");
    }
    out.contents().to_vec()
}

#[test]
fn real_guests_print_the_same_once_rewritten() {
    let guests: [(&str, &[&str]); 5] = [
        (wasm_examples::JSON_PATH, &["json", "200", "2"]),
        (wasm_examples::SHA256_PATH, &["sha256", "64", "2"]),
        (wasm_examples::PI_PATH, &["pi", "42", "20000"]),
        (wasm_examples::ARITH_PATH, &["arith", "2"]),
        (wasm_examples::BULKMEM_PATH, &["bulkmem", "2", "1"]),
    ];
    for (path, args) in guests {
        let wasm = std::fs::read(path).unwrap();
        let plain = guest_output(&wasm, args, false);
        assert!(!plain.is_empty(), "{path} printed nothing");
        for p in PLACEMENTS {
            let rewritten = rewrite(&wasm, p).unwrap();
            assert_eq!(guest_output(&rewritten, args, true), plain, "{path} {p:?}");
        }
    }
}

/// Runs `run` of a module without imports, or rewritten with a budget of `budget` per tick.
fn result_of(wasm: &[u8], rewritten: Option<(Placement, i64)>) -> (i64, u32) {
    let engine = Engine::default();
    let wasm = match rewritten {
        Some((p, _)) => rewrite(wasm, p).unwrap(),
        None => wasm.to_vec(),
    };
    let module = Module::new(&engine, wasm).unwrap();
    let mut linker: Linker<u32> = Linker::new(&engine);
    if let Some((_, budget)) = rewritten {
        linker
            .func_wrap(
                meter_rewrite::TICK_MODULE,
                meter_rewrite::TICK_NAME,
                move |mut caller: wasmtime::Caller<'_, u32>| -> i64 {
                    *caller.data_mut() += 1;
                    budget
                },
            )
            .unwrap();
    }
    let mut store = Store::new(&engine, 0u32);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let run = instance
        .get_typed_func::<(), i64>(&mut store, "run")
        .unwrap();
    let r = run.call(&mut store, ()).unwrap();
    (r, *store.data())
}

#[test]
fn locals_live_across_the_slow_path_keep_their_values() {
    // Locals of every numeric type (three of one) live around nested loops, one set before the loops and used
    // only after them, one dead at the header (written before it is read in each pass), and
    // calls in the loop; a budget of one operator takes the slow path on every back edge.
    let wat = r#"(module
        (func $inc (param i64) (result i64) (i64.add (local.get 0) (i64.const 1)))
        (func (export "run") (result i64)
          (local $i i32) (local $j i32) (local $sum i64) (local $f f64) (local $g f32)
          (local $before i64) (local $dead i64) (local $v v128) (local $k i32)
          (local.set $before (i64.const 1000000))
          (local.set $v (v128.const i64x2 3 4))
          (loop $outer
            (local.set $j (i32.const 0))
            (loop $inner
              (local.set $dead (i64.extend_i32_u (local.get $j)))
              (local.set $sum (i64.add (local.get $sum) (call $inc (local.get $dead))))
              (local.set $f (f64.add (local.get $f) (f64.const 0.5)))
              (local.set $g (f32.add (local.get $g) (f32.const 0.25)))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (local.set $k (i32.add (local.get $k) (i32.const 2)))
              (br_if $inner (i32.lt_u (local.get $j) (i32.const 37))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $outer (i32.lt_u (local.get $i) (i32.const 23))))
          (i64.add
            (i64.add (i64.add (local.get $sum) (local.get $before)) (i64.extend_i32_u (local.get $k)))
            (i64.add
              (i64.add (i64.trunc_f64_s (local.get $f)) (i64.trunc_f32_s (local.get $g)))
              (i64.add (i64x2.extract_lane 0 (local.get $v)) (i64x2.extract_lane 1 (local.get $v)))))))"#;
    let wasm = wat::parse_str(wat).unwrap();
    let (plain, _) = result_of(&wasm, None);
    for p in PLACEMENTS {
        let (r, ticks) = result_of(&wasm, Some((p, 1)));
        assert_eq!(r, plain, "{p:?}");
        assert!(ticks >= 23 * 36, "{p:?}: {ticks} ticks"); // every back edge
    }
}

/// What calling every exported function of an instance, in order, with zero arguments gave: a
/// line per call (results as bits, or the trap), or the instantiation's trap.
fn behaviour(engine: &Engine, wasm: &[u8], tick_budget: Option<i64>) -> Vec<String> {
    use wasmtime::Val;
    let module = match Module::new(engine, wasm) {
        Ok(m) => m,
        Err(e) => return vec![format!("invalid: {e:#}")],
    };
    let mut linker: Linker<wasmtime::StoreLimits> = Linker::new(engine);
    if let Some(budget) = tick_budget {
        linker
            .func_wrap(
                meter_rewrite::TICK_MODULE,
                meter_rewrite::TICK_NAME,
                move || -> i64 { budget },
            )
            .unwrap();
    }
    // Random modules may grow memories, tables and the GC heap in loops: a bound, as the
    // executor's limiter sets one.
    let limits = wasmtime::StoreLimitsBuilder::new()
        .memory_size(64 << 20)
        .table_elements(1 << 20)
        .build();
    let mut store = Store::new(engine, limits);
    store.limiter(|l| l);
    let trap = |e: wasmtime::Error| match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => format!("trap: {t:?}"),
        // Without the backtrace, whose function indices and offsets the rewriting moves.
        None => format!("error: {}", e.root_cause()),
    };
    let instance = match linker.instantiate(&mut store, &module) {
        Ok(i) => i,
        Err(e) => return vec![trap(e)],
    };
    let mut out = Vec::new();
    let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
    for name in exports {
        let Some(f) = instance.get_func(&mut store, &name) else {
            continue;
        };
        let ty = f.ty(&store);
        let args: Option<Vec<Val>> = ty.params().map(zero).collect();
        let Some(args) = args else { continue };
        let mut results = vec![Val::I32(0); ty.results().len()];
        match f.call(&mut store, &args, &mut results) {
            Ok(()) => out.push(format!(
                "{name}: {:?}",
                results
                    .iter()
                    .map(|v| match v {
                        Val::I32(x) => format!("{x}"),
                        Val::I64(x) => format!("{x}"),
                        Val::F32(x) => format!("f32 {x:#x}"),
                        Val::F64(x) => format!("f64 {x:#x}"),
                        Val::V128(x) => format!("v128 {:#x}", x.as_u128()),
                        other => format!("ref null {}", other.ref_().is_none_or(|r| r.is_null())),
                    })
                    .collect::<Vec<_>>()
            )),
            Err(e) => {
                let t = trap(e);
                // Frames of a rewritten function are larger: a recursion may overflow the
                // stack at another depth, after which the two runs' states differ.
                if t.contains("StackOverflow") {
                    out.push(format!("{name}: stack overflow, stop"));
                    break;
                }
                out.push(format!("{name}: {t}"));
            }
        }
        out.push(state(&instance, &mut store));
    }
    out
}

/// The instance's exported numeric globals and a digest of its exported memories: what a call
/// left behind, even if it trapped afterwards.
fn state(instance: &wasmtime::Instance, store: &mut Store<wasmtime::StoreLimits>) -> String {
    use std::hash::{Hash, Hasher};
    use wasmtime::{Extern, Val};
    let exports: Vec<(String, Extern)> = instance
        .exports(&mut *store)
        .map(|e| (e.name().to_owned(), e.into_extern()))
        .collect();
    let mut out = String::new();
    for (name, e) in exports {
        if name == meter_rewrite::BUDGET_EXPORT {
            continue; // the rewriting's own
        }
        match e {
            Extern::Global(g) => match g.get(&mut *store) {
                Val::I32(x) => out += &format!(" {name}={x}"),
                Val::I64(x) => out += &format!(" {name}={x}"),
                Val::F32(x) => out += &format!(" {name}={x:#x}"),
                Val::F64(x) => out += &format!(" {name}={x:#x}"),
                Val::V128(x) => out += &format!(" {name}={:#x}", x.as_u128()),
                _ => {}
            },
            Extern::Memory(m) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                m.data(&*store).hash(&mut h);
                out += &format!(" {name}#{:x}", h.finish());
            }
            _ => {}
        }
    }
    out
}

/// A deterministic byte stream (xorshift) for `arbitrary`.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn random_modules_behave_the_same_once_rewritten() {
    // Random valid modules (wasm-smith; loops, recursion, multi-value blocks, SIMD, tables,
    // bulk memory, tail calls) made to terminate by wasm-smith's own counter; every exported
    // function is called on the original and on each rewriting, whose slow path runs every few
    // operators. Results, traps and their order must match.
    let config = wasm_smith::Config {
        exceptions_enabled: false,
        gc_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        relaxed_simd_enabled: false,
        ..smith_config()
    };
    // More seeds for a longer hunt: METER_REWRITE_SEEDS=5000.
    let compared = compare_random_modules(config, 0, seeds(120));
    assert!(compared >= 300, "only {compared} rewrites compared");
}

#[test]
fn random_modules_of_later_proposals_behave_the_same_once_rewritten() {
    // The same with what the executor's engine also accepts: exceptions (a loop may be closed
    // by a catch), GC (by `br_on_cast`), 64-bit memories and tables (lengths of bulk
    // operations are `i64`), shared memories and atomics, relaxed SIMD.
    let compared = compare_random_modules(smith_config(), 1 << 32, seeds(120));
    assert!(compared >= 150, "only {compared} rewrites compared");
}

#[test]
fn random_modules_without_an_end_are_stopped_once_rewritten() {
    // wasm-smith's modules as they come, with no termination counter (loops without end,
    // unbounded recursion) and every proposal the engine accepts. Rewritten, every call must
    // come back to its host within a bounded number of operators: the host stops it at its
    // third tick, microseconds in. Wasmtime's epochs are only a hang guard here: a call
    // interrupted after seconds went on without a check.
    struct Host {
        limits: wasmtime::StoreLimits,
        ticks: u32,
    }
    /// Epochs (of 100 ms) a call may run: far beyond any stopped call, never a speed bound.
    const GUARD_EPOCHS: u64 = 100;
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    let ticking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let epochs = {
        let (engine, ticking) = (engine.clone(), ticking.clone());
        std::thread::spawn(move || {
            while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                engine.increment_epoch();
            }
        })
    };
    let (mut calls, mut stopped) = (0, 0);
    for seed in (2 << 32)..(2 << 32) + seeds(60) {
        let bytes = random_bytes(seed, 16 << 10);
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(module) = wasm_smith::Module::new(smith_config(), &mut u) else {
            continue;
        };
        let wasm = module.to_bytes();
        if Module::validate(&engine, &wasm).is_err() {
            continue;
        }
        for p in RANDOM_PLACEMENTS {
            let rewritten = rewrite(&wasm, p).unwrap();
            let module = Module::new(&engine, &rewritten).unwrap();
            let mut linker: Linker<Host> = Linker::new(&engine);
            linker
                .func_wrap(
                    meter_rewrite::TICK_MODULE,
                    meter_rewrite::TICK_NAME,
                    |mut caller: wasmtime::Caller<'_, Host>| -> wasmtime::Result<i64> {
                        caller.data_mut().ticks += 1;
                        if caller.data().ticks >= 3 {
                            wasmtime::bail!("stopped by the host");
                        }
                        Ok(10_000)
                    },
                )
                .unwrap();
            let limits = wasmtime::StoreLimitsBuilder::new()
                .memory_size(64 << 20)
                .table_elements(1 << 20)
                .build();
            let mut store = Store::new(&engine, Host { limits, ticks: 0 });
            store.limiter(|h| &mut h.limits);
            store.set_epoch_deadline(GUARD_EPOCHS);
            let ran_out = |e: &wasmtime::Error| {
                e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
            };
            let instance = match linker.instantiate(&mut store, &module) {
                Ok(i) => i,
                Err(e) => {
                    assert!(
                        !ran_out(&e),
                        "seed {seed}, {p:?}: the start function ran on"
                    );
                    continue;
                }
            };
            let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
            for name in exports {
                let Some(f) = instance.get_func(&mut store, &name) else {
                    continue;
                };
                let ty = f.ty(&store);
                let args: Option<Vec<wasmtime::Val>> = ty.params().map(zero).collect();
                let Some(args) = args else { continue };
                let mut results = vec![wasmtime::Val::I32(0); ty.results().len()];
                store.data_mut().ticks = 0;
                store.set_epoch_deadline(GUARD_EPOCHS);
                calls += 1;
                if let Err(e) = f.call(&mut store, &args, &mut results) {
                    assert!(!ran_out(&e), "seed {seed}, {p:?}: {name} ran on unchecked");
                    stopped += usize::from(format!("{e:?}").contains("stopped by the host"));
                }
            }
        }
    }
    ticking.store(false, std::sync::atomic::Ordering::Relaxed);
    epochs.join().unwrap();
    assert!(calls >= 100, "only {calls} calls");
    assert!(
        stopped >= 10,
        "only {stopped} of {calls} calls needed stopping"
    );
}

/// A zero of a numeric type, `None` for a reference (the tests do not make those).
fn zero(t: wasmtime::ValType) -> Option<wasmtime::Val> {
    use wasmtime::{Val, ValType};
    match t {
        ValType::I32 => Some(Val::I32(0)),
        ValType::I64 => Some(Val::I64(0)),
        ValType::F32 => Some(Val::F32(0)),
        ValType::F64 => Some(Val::F64(0)),
        ValType::V128 => Some(Val::V128(0u128.into())),
        ValType::Ref(_) => None,
    }
}

/// Seeds for a random-module test: `default`, or `METER_REWRITE_SEEDS` for a longer hunt.
fn seeds(default: u64) -> u64 {
    std::env::var("METER_REWRITE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// wasm-smith's modules for these tests: no imports, everything exported, NaNs canonical, no
/// trap wasm-smith can avoid, small memories and tables.
fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        max_imports: 0,
        export_everything: true,
        canonicalize_nans: true,
        disallow_traps: true,
        max_memory32_bytes: 1 << 20,
        max_memory64_bytes: 1 << 20,
        max_table_elements: 1000,
        min_funcs: 2,
        max_funcs: 20,
        min_exports: 2,
        max_instructions: 300,
        ..wasm_smith::Config::default()
    }
}

/// Builds a module of `config` from each seed of `first..first + n`, made to terminate, and
/// compares the behaviour of the original with that of each rewriting (up to a first stack
/// overflow); returns how many rewritings were compared. Any refusal fails.
fn compare_random_modules(config: wasm_smith::Config, first: u64, n: u64) -> usize {
    let engine = Engine::default();
    let (mut compared, mut refused) = (0, Vec::new());
    for seed in first..first + n {
        let bytes = random_bytes(seed, 16 << 10);
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(mut module) = wasm_smith::Module::new(config.clone(), &mut u) else {
            continue;
        };
        if module.ensure_termination(5_000).is_err() {
            continue;
        }
        let wasm = module.to_bytes();
        let original = behaviour(&engine, &wasm, None);
        for p in RANDOM_PLACEMENTS {
            match rewrite(&wasm, p) {
                Ok(rewritten) => {
                    let mut got = behaviour(&engine, &rewritten, Some(3));
                    // A rewritten function's frame is larger, so a deep recursion may overflow
                    // the stack in one and not the other (in a call, or in the start function
                    // at instantiation): compare up to the first overflow.
                    let mut expected = original.clone();
                    let overflow = |v: &[String]| {
                        v.iter().position(|l| {
                            l.contains("stack overflow") || l.contains("StackOverflow")
                        })
                    };
                    if let Some(at) = [overflow(&got), overflow(&expected)]
                        .into_iter()
                        .flatten()
                        .min()
                    {
                        got.truncate(at);
                        expected.truncate(at);
                    }
                    assert_eq!(got, expected, "seed {seed}, {p:?}");
                    compared += 1;
                }
                Err(e) => refused.push(format!("seed {seed}, {p:?}: {}", e.0)),
            }
        }
    }
    assert!(refused.is_empty(), "rewrites refused: {refused:#?}");
    compared
}

#[test]
fn random_modules_of_every_proposal_the_engine_accepts_stay_valid_once_rewritten() {
    // The executor validates a tenant's module with its engine, which accepts GC, exceptions,
    // memory64, threads and relaxed SIMD, then rewrites it: the rewriting of any module the
    // engine accepts must be accepted too (or refused with an error), never made invalid.
    // (The behaviour test above runs modules without these proposals.)
    let engine = Engine::default();
    let config = wasm_smith::Config {
        max_imports: 2,
        export_everything: true,
        min_funcs: 2,
        max_funcs: 20,
        max_instructions: 300,
        ..wasm_smith::Config::default()
    };
    let (mut checked, mut refused) = (0, 0);
    for seed in 0..seeds(300) {
        let bytes = random_bytes(seed ^ 0x5eed, 16 << 10);
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(module) = wasm_smith::Module::new(config.clone(), &mut u) else {
            continue;
        };
        let wasm = module.to_bytes();
        if Module::validate(&engine, &wasm).is_err() {
            continue; // a proposal this engine does not take
        }
        for p in RANDOM_PLACEMENTS {
            match rewrite(&wasm, p) {
                Ok(rewritten) => {
                    if let Err(e) = Module::validate(&engine, &rewritten) {
                        panic!("seed {seed}, {p:?}: the rewriting is invalid: {e:?}");
                    }
                    checked += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        checked >= 300,
        "only {checked} rewrites checked ({refused} refused)"
    );
}

#[test]
fn a_loop_with_more_live_locals_than_are_saved_computes_the_same() {
    // 70 live `i64` locals: more than a check saves (64), so this loop's slow path saves none.
    let n = 70;
    let locals: String = (0..n).map(|i| format!("(local $l{i} i64) ")).collect();
    let bumps: String = (0..n)
        .map(|i| {
            format!(
                "(local.set $l{i} (i64.add (local.get $l{i}) (i64.const {})))",
                i + 1
            )
        })
        .collect();
    let sum: String = (1..n).fold("(local.get $l0)".to_owned(), |acc, i| {
        format!("(i64.add {acc} (local.get $l{i}))")
    });
    let wat = format!(
        r#"(module (func (export "run") (result i64) (local $k i32) {locals}
            (loop $l {bumps}
              (local.set $k (i32.add (local.get $k) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $k) (i32.const 100))))
            {sum}))"#
    );
    let wasm = wat::parse_str(&wat).unwrap();
    let (plain, _) = result_of(&wasm, None);
    assert_eq!(plain, 100 * (1..=n as i64).sum::<i64>());
    for p in PLACEMENTS {
        let (r, ticks) = result_of(&wasm, Some((p, 1)));
        assert_eq!(r, plain, "{p:?}");
        assert!(ticks >= 99, "{p:?}: {ticks} ticks");
    }
}

/// What a [`counted_loop`] holds: nothing, a counted loop, or a loop checked per pass.
#[derive(Clone, Copy, Debug)]
enum Inner {
    None,
    Counted,
    Checked,
}

/// A counted loop (`meter::Placement::CountedRuns` checks it once per run of iterations) that
/// runs `n` iterations from `start` by `step`, closed in the exit test's form `form`
/// ("zero": `br_if` on the counter, bound 0; "local": `!=` a local bound; "const": `!=` a
/// constant), with a body that sums the counter and counts its passes, and holds an `inner`
/// loop of 3 iterations. `run` returns a hash of the sum, the passes and the
/// counter's final value.
fn counted_loop(form: &str, step: i32, start: i32, n: u32, inner: Inner) -> String {
    let bound = start.wrapping_add(step.wrapping_mul(n as i32));
    let (start, bound) = if form == "zero" {
        (0i32.wrapping_sub(step.wrapping_mul(n as i32)), 0)
    } else {
        (start, bound)
    };
    let test = match form {
        "zero" => String::new(),
        "local" => "(local.get $bound) (i32.ne)".to_owned(),
        _ => format!("(i32.const {bound}) (i32.ne)"),
    };
    let inner = match inner {
        Inner::None => "",
        Inner::Counted => {
            r#"(local.set $j (i32.const 3))
           (loop $inner
             (local.set $sum (i64.add (local.get $sum) (i64.const 7)))
             (local.get $j) (i32.const -1) (i32.add) (local.tee $j) (br_if $inner))"#
        }
        Inner::Checked => {
            r#"(local.set $j (i32.const 0))
           (loop $inner
             (local.set $sum (i64.add (local.get $sum) (i64.const 5)))
             (local.set $j (i32.add (local.get $j) (i32.const 1)))
             (br_if $inner (i32.lt_u (local.get $j) (i32.const 3))))"#
        }
    };
    format!(
        r#"(module (func (export "run") (result i64)
            (local $c i32) (local $bound i32) (local $sum i64) (local $passes i64) (local $j i32)
            (local.set $c (i32.const {start}))
            (local.set $bound (i32.const {bound}))
            (loop $l
              (local.set $sum (i64.add (local.get $sum)
                (i64.mul (i64.extend_i32_u (local.get $c)) (i64.const 3))))
              (local.set $passes (i64.add (local.get $passes) (i64.const 1)))
              {inner}
              (local.get $c) (i32.const {step}) (i32.add) (local.tee $c) {test} (br_if $l))
            (i64.add (i64.mul (local.get $sum) (i64.const 1000003))
              (i64.add (i64.mul (local.get $passes) (i64.const 65599))
                (i64.extend_i32_u (local.get $c))))))"#
    )
}

#[test]
fn counted_loops_run_their_iterations_exactly_in_runs_of_any_length() {
    // Every step the pass accepts (± a power of two, up to 2^31), every form of exit test,
    // counters that wrap around, a counted or a checked loop inside, and budgets from a run of one
    // iteration per tick to runs of the whole loop: the same result as the original module,
    // which never ticks. The rewriting must differ from `BackEdgesSaved`'s, or the loop was not
    // taken for a counted one and this test would prove nothing.
    let steps = [1, -1, 2, -2, 4, -8, 1 << 20, -(1 << 20), i32::MIN];
    let mut cases = 0;
    for form in ["zero", "local", "const"] {
        for step in steps {
            for (start, n) in [(0, 1), (5, 2), (-3, 17), (i32::MAX - 2, 1000), (123, 4099)] {
                for inner in [Inner::None, Inner::Counted, Inner::Checked] {
                    let wat = counted_loop(form, step, start, n, inner);
                    let wasm = wat::parse_str(&wat).unwrap();
                    assert_ne!(
                        rewrite(&wasm, Placement::CountedRuns).unwrap(),
                        rewrite(&wasm, Placement::BackEdgesSaved).unwrap(),
                        "not counted: {form} {step} {start} {n}"
                    );
                    let (plain, _) = result_of(&wasm, None);
                    for budget in [1, 50, 1000, 1 << 40] {
                        let (r, ticks) = result_of(&wasm, Some((Placement::CountedRuns, budget)));
                        assert_eq!(
                            r, plain,
                            "{form} step {step} from {start}, {n} passes, {inner:?}, budget {budget}"
                        );
                        // The counter meets the bound at the first of the `n` steps' multiples
                        // of 2^32 (a large step comes round sooner): that many passes, each its
                        // own run, each run a tick.
                        let period = 1u64 << (32 - step.unsigned_abs().trailing_zeros());
                        let passes = match u64::from(n) % period {
                            0 => period,
                            p => p,
                        };
                        if budget == 1 {
                            assert!(u64::from(ticks) >= passes, "{ticks} ticks, {passes} passes");
                        }
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 3 * 9 * 5 * 3);
}

#[test]
fn counted_loops_that_never_meet_their_bound_or_take_2_to_the_32_passes_are_stopped() {
    // A step of 4 towards a bound 2 away never meets it; a step of 1 from the bound itself
    // goes all the way round (2^32 passes); a step of 2^31 from 1 to 0 never meets it: each is
    // cut into runs and reaches its host.
    let endless = |step: i32, start: i32, bound: i32| {
        format!(
            r#"(module (func (export "run") (local $c i32) (local $n i64)
                (local.set $c (i32.const {start}))
                (loop $l
                  (local.set $n (i64.add (local.get $n) (i64.const 1)))
                  (local.get $c) (i32.const {step}) (i32.add) (local.tee $c)
                  (i32.const {bound}) (i32.ne) (br_if $l))))"#
        )
    };
    for (step, start, bound) in [(4, 0, 2), (1, 9, 9), (-1, 0, 0), (i32::MIN, 1, 0)] {
        let wat = endless(step, start, bound);
        assert_eq!(
            ticks_until_stopped(&wat, Placement::CountedRuns, 1000, 3),
            3,
            "step {step} from {start} to {bound}"
        );
    }
}

#[test]
fn loops_that_are_not_counted_keep_a_check_per_pass() {
    // A loop that writes its counter elsewhere, one that leaves early, one that goes back to
    // its header from inside, and one with a step of 3 are checked on every pass: with a
    // budget of one operator, a tick per pass.
    let looped = |body: &str, step: i32| {
        format!(
            r#"(module (func (export "run") (result i64) (local $c i32) (local $n i64)
                (local.set $c (i32.const 30))
                (block $out
                  (loop $l
                    (local.set $n (i64.add (local.get $n) (i64.const 1)))
                    {body}
                    (local.get $c) (i32.const {step}) (i32.add) (local.tee $c)
                    (i32.const 0) (i32.ne) (br_if $l)))
                (local.get $n)))"#
        )
    };
    let cases = [
        ("(local.set $c (local.get $c))", -1),
        ("(br_if $out (i32.eq (local.get $c) (i32.const 1)))", -1),
        (
            "(if (i32.eq (local.get $c) (i32.const 7)) (then (local.set $c (i32.const 6)) (br $l)))",
            -1,
        ),
        ("", -3),
    ];
    for (body, step) in cases {
        let wasm = wat::parse_str(looped(body, step)).unwrap();
        assert_eq!(
            rewrite(&wasm, Placement::CountedRuns).unwrap(),
            rewrite(&wasm, Placement::BackEdgesSaved).unwrap(),
            "taken for a counted loop: {body} step {step}"
        );
    }
}

/// `depth` counted loops of one pass each, each inside the last, around a counter of passes.
fn nested_counted_loops(depth: usize) -> Vec<u8> {
    let mut body = String::from("(local.set $sum (i64.add (local.get $sum) (i64.const 1)))");
    for level in (0..depth).rev() {
        body = format!(
            "(local.set $c{level} (i32.const 1)) (loop {body} (local.get $c{level}) \
             (i32.const -1) (i32.add) (local.tee $c{level}) (br_if 0))"
        );
    }
    let locals: String = (0..depth).map(|l| format!("(local $c{l} i32) ")).collect();
    wat::parse_str(format!(
        r#"(module (func (export "run") (result i64) {locals} (local $sum i64) {body}
            (local.get $sum)))"#
    ))
    .unwrap()
}

#[test]
fn deeply_nested_counted_loops_are_all_taken_and_compute_the_same() {
    // 3,000 counted loops, each inside the last: the pass's look for counted loops is linear in
    // the function however deep they nest (a tenant chooses the depth), and takes each one.
    let depth = 3000;
    let counted = rewrite(&nested_counted_loops(depth), Placement::CountedRuns).unwrap();
    // Each run's start divides the budget by the loop's charge: one `i64.div_s` per counted
    // loop at least.
    let divs: usize = wasmparser::Parser::new(0)
        .parse_all(&counted)
        .filter_map(|p| match p {
            Ok(wasmparser::Payload::CodeSectionEntry(b)) => Some(b),
            _ => None,
        })
        .map(|b| {
            b.get_operators_reader()
                .unwrap()
                .into_iter()
                .filter(|op| matches!(op, Ok(wasmparser::Operator::I64DivS)))
                .count()
        })
        .sum();
    assert!(divs >= depth, "{divs} run starts for {depth} loops");
    // Compiling 3,000 nested loops takes Cranelift minutes: 40 levels run.
    let wasm = nested_counted_loops(40);
    let (plain, _) = result_of(&wasm, None);
    assert_eq!(plain, 1);
    for budget in [1, 1 << 30] {
        assert_eq!(
            result_of(&wasm, Some((Placement::CountedRuns, budget))).0,
            plain
        );
    }
}
