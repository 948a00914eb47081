//! Metering by rewriting a core module: the executor's [`Metering::Rewrite`] (with
//! [`Placement::CountedRuns`]; its host side is `tick.rs`), and options of the metering
//! bench (BENCHMARKS.md, "Metering overhead"), the rejected placements kept so that their
//! figures can be reproduced.
//!
//! [`Metering::Rewrite`]: super::Metering::Rewrite
//!
//! Wasmtime's fuel and epochs check at every function entry and loop header. This pass puts
//! its own budget checks (a mutable `i64` global it adds) only where running code could
//! otherwise go on unbounded:
//! - in a loop: at its header, or on its back edges (the first pass through a loop is then
//!   charged to the code around it, since only a branch to a loop goes backwards);
//! - at the entry of a function that is recursive (in a cycle of the direct call graph), may be
//!   called indirectly or from outside, or whose bounded cost exceeds [`MAX_UNCHECKED`].
//!
//! A function without an entry check is charged, with everything it calls that has none, to
//! the check before its call. When the budget goes negative the module calls the host's
//! [`TICK_NAME`] import (which returns the next budget, and could pace, yield or trap), or,
//! as a reference only, traps.
//!
//! What the bench showed: the checks themselves are cheap (json 1.05–1.07× with a trap for the
//! slow path), but a call left in a function costs its loops what fuel and epochs cost:
//! Cranelift's wasm calling convention keeps no register across a call, so values live across
//! the rarely taken slow path were kept out of registers on the hot one too. Placing the call
//! outside the loop (re-entering the loop at its header after it) did not help, nor did
//! unrolling small loops. What does: [`Placement::BackEdgesSaved`] copies the locals live at
//! the check (a liveness analysis of the function's locals) to globals before the call and back
//! after it, so that nothing of the function is live across the call: json 1.09–1.12×, sha256
//! 1.11–1.13×, pi 0.89–0.90× of unmetered wasmtime, where fuel costs 1.29–1.31×, 1.04–1.05× and
//! 0.85–0.86×. Keeping the budget in a local between calls (as fuel does) made it worse.
//!
//! A tight loop still paid for its check: arith's 16-instruction loop took 1.20×, sha256
//! 1.13×. [`Placement::CountedRuns`] takes the check out of counted loops (a counter stepped
//! by a power of two to a bound, the only way out; see [`Counted`]): the budget pays for a run
//! of as many iterations as it holds before the loop, and the loop's exit test compares the
//! counter with where the run ends instead of with its bound, so the loop runs the very
//! instructions it ran unmetered. sha256 1.00–1.02×, arith 1.10×, json and pi as before
//! (BENCHMARKS.md, "Counted loops"). How much one more instruction costs a tight loop on this
//! machine is a matter of how many it has, not of what they do (`benches/loop_dispatch.rs`).

use wasm_encoder::reencode::{Error as ReencodeError, Reencode};
use wasm_encoder::Instruction as I;
use wasmparser::{Operator, Parser, Payload};

/// The pass's version: part of the module cache's file names, so that a changed pass never
/// loads code an older one made.
pub const VERSION: u32 = 3;

/// Module name of the tick import.
pub const TICK_MODULE: &str = "tessera:meter";
/// Field name of the tick import: `() -> i64`, the next budget in operators.
pub const TICK_NAME: &str = "tick";
/// Name under which a rewritten module exports its budget global (what is left of the last
/// grant: the host counts what the guest used from it).
pub const BUDGET_EXPORT: &str = "tessera:meter/budget";

/// A function whose bounded cost exceeds this many operators checks the budget itself.
pub const MAX_UNCHECKED: u64 = 4096;

/// Most locals a check saves around its slow path (more: it saves none). A function's checks
/// together save at most as many locals as it has operators (and at least 1,024), so the saves
/// at most about double a function's code whatever a module holds.
const MAX_SAVED: usize = 64;

/// Largest liveness table (operators × 64-bit words of locals) the pass builds for a function;
/// a larger function's checks save nothing. 4 Mi words are 32 MiB: a module from a tenant
/// cannot make the agent allocate more for it.
const LIVENESS_WORDS: usize = 1 << 22;

/// Largest per-iteration charge of a loop [`Placement::CountedRuns`] checks once per run (a
/// larger one is checked per iteration): bounds a run's charge, `iterations × charge`, well
/// inside an `i64`.
const MAX_COUNTED_CHARGE: u64 = 1 << 20;

/// Longest run of a counted loop: 2^31 iterations, so that `step × iterations` is exact modulo
/// 2^32 and a run never passes its bound.
const MAX_RUN: i64 = 1 << 31;

/// What starting a run of a counted loop costs, in operators (charged with the run).
const RUN_COST: i64 = 40;

/// Most passes of the liveness data flow (a pass per level of loop nesting, about); a function
/// that needs more saves nothing.
const LIVENESS_PASSES: usize = 64;

/// Where loops are checked and what runs when the budget runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// At each loop's header; the host call sits in the loop.
    Headers,
    /// On each loop's back edges (`br`/`br_if`); the loop is wrapped so that the host call
    /// sits outside it and the loop is re-entered at its header after the call.
    BackEdges,
    /// As `BackEdges`, with a trap in place of the host call (reference only: it can neither
    /// pace nor resume).
    BackEdgesTrap,
    /// As `BackEdges`, and every check's slow path copies the locals live at the check to
    /// globals before the host call and back after it, so that no value of the function is
    /// live across the call (Cranelift would otherwise keep those values out of registers on
    /// the hot path too).
    BackEdgesSaved,
    /// As `BackEdgesSaved`, with the budget in a local of each function, as wasmtime's fuel
    /// is: loaded from its global at entry and after each call, stored back before each call
    /// and return.
    BackEdgesSavedLocal,
    /// As `Headers` (the slow path in line at each loop's header), with the live locals saved
    /// around it as `BackEdgesSaved` saves them.
    HeadersSaved,
    /// As `BackEdgesSaved`, and a counted loop (see [`Counted`]) is checked once per run of
    /// iterations instead of once per iteration: before the run the budget pays for as many
    /// iterations as it can (at most the loop's remaining count), and the loop's own exit test
    /// compares its counter with where the run ends instead of with its bound. The loop then
    /// runs the operators it ran unmetered.
    CountedRuns,
}

impl Placement {
    /// Whether checks on back edges are tried (loops with only plain branches).
    fn back_edges(self) -> bool {
        !matches!(self, Placement::Headers | Placement::HeadersSaved)
    }

    /// Whether the slow path saves the live locals around its host call.
    fn saves(self) -> bool {
        matches!(
            self,
            Placement::BackEdgesSaved
                | Placement::BackEdgesSavedLocal
                | Placement::HeadersSaved
                | Placement::CountedRuns
        )
    }
}

/// Why a module could not be rewritten (it does not parse, or holds what the pass does not
/// handle).
#[derive(Debug, thiserror::Error)]
#[error("cannot meter the module by rewriting: {0}")]
pub struct RewriteError(pub String);

impl From<wasmparser::BinaryReaderError> for RewriteError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        RewriteError(e.to_string())
    }
}

impl From<ReencodeError<RewriteError>> for RewriteError {
    fn from(e: ReencodeError<RewriteError>) -> Self {
        match e {
            ReencodeError::UserError(e) => e,
            other => RewriteError(format!("{other:?}")),
        }
    }
}

/// Rewrites a core module to meter itself as `placement` says. The module is validated first
/// (WebAssembly 3.0, threads included: what the executor's engine accepts), so that nothing
/// of the pass ever works on an invalid one.
pub fn rewrite(wasm: &[u8], placement: Placement) -> Result<Vec<u8>, RewriteError> {
    let features = wasmparser::WasmFeatures::WASM3 | wasmparser::WasmFeatures::GC_TYPES;
    wasmparser::Validator::new_with_features(features).validate_all(wasm)?;
    rewrite_valid(wasm, placement)
}

/// [`rewrite`] of a module its caller has just validated (the executor validates with its
/// engine, whose errors name the module's own offsets): the same pass, without validating
/// twice.
pub fn rewrite_valid(wasm: &[u8], placement: Placement) -> Result<Vec<u8>, RewriteError> {
    let plan = analyse(wasm)?;
    let mut r = Rewriter {
        plan: &plan,
        placement,
        tick_type: plan.type_count,
        budget_global: plan.global_count,
        defined_index: 0,
        types_done: false,
        imports_done: false,
        globals_done: false,
        exports_done: false,
    };
    let mut module = wasm_encoder::Module::new();
    r.parse_core_module(&mut module, Parser::new(0), wasm)?;
    Ok(module.finish())
}

/// What the analysis learnt of one defined function.
#[derive(Default)]
struct FnInfo {
    /// Operators outside any loop (first passes through loops included).
    base: u64,
    /// Direct callees (original function indices) called there.
    calls: Vec<u32>,
    /// Per loop, in order of appearance: its own operators and direct callees (first passes
    /// through nested loops included).
    loops: Vec<(u64, Vec<u32>)>,
}

/// The charges decided for one module.
struct Plan {
    imported_funcs: u32,
    type_count: u32,
    /// Per type: whether it is a function type with parameters (a loop of that block type
    /// carries values into each pass, so it is checked at its header, never wrapped).
    type_has_params: Vec<bool>,
    global_count: u32,
    /// Per defined function: its parameter count (the scratch local goes after its locals).
    params: Vec<u32>,
    /// Per defined function: its entry charge, if it checks at entry.
    entry: Vec<Option<u64>>,
    /// Per defined function, per loop: the loop's charge.
    loops: Vec<Vec<u64>>,
    /// Per defined function: the locals live at its checks, as (local, save global) pairs.
    saves: Vec<FnSaves>,
    /// The value types of the save globals, in order after the budget global.
    save_types: Vec<wasmparser::ValType>,
    /// Per memory: whether it is 64-bit (its bulk operations' lengths are `i64`).
    memory64: Vec<bool>,
    /// Per table: whether it is 64-bit.
    table64: Vec<bool>,
}

/// The locals a function's checks save around their host call.
#[derive(Default)]
struct FnSaves {
    /// At the entry check.
    entry: Vec<(u32, u32)>,
    /// Per loop, in order of appearance, at its check.
    loops: Vec<Vec<(u32, u32)>>,
}

fn analyse(wasm: &[u8]) -> Result<Plan, RewriteError> {
    let (mut imported_funcs, mut imported_globals, mut defined_globals) = (0u32, 0u32, 0u32);
    let mut type_params: Vec<Vec<wasmparser::ValType>> = Vec::new();
    let mut params: Vec<Vec<wasmparser::ValType>> = Vec::new();
    let mut infos: Vec<FnInfo> = Vec::new();
    let mut live: Vec<Option<LiveAtChecks>> = Vec::new();
    let (mut memory64, mut table64) = (Vec::new(), Vec::new());
    let mut must_check: Vec<u32> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::TypeSection(r) => {
                for group in r {
                    for ty in group?.into_types() {
                        type_params.push(match &ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => f.params().to_vec(),
                            _ => Vec::new(),
                        });
                    }
                }
            }
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    match imp?.ty {
                        wasmparser::TypeRef::Func(_) => imported_funcs += 1,
                        wasmparser::TypeRef::Global(_) => imported_globals += 1,
                        wasmparser::TypeRef::Memory(m) => memory64.push(m.memory64),
                        wasmparser::TypeRef::Table(t) => table64.push(t.table64),
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for ty in r {
                    params.push(type_params.get(ty? as usize).cloned().unwrap_or_default());
                }
            }
            Payload::GlobalSection(r) => defined_globals = r.count(),
            Payload::MemorySection(r) => {
                for m in r {
                    memory64.push(m?.memory64);
                }
            }
            Payload::TableSection(r) => {
                for t in r {
                    table64.push(t?.ty.table64);
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e?;
                    if e.kind == wasmparser::ExternalKind::Func {
                        must_check.push(e.index);
                    }
                }
            }
            Payload::StartSection { func, .. } => must_check.push(func),
            Payload::ElementSection(r) => {
                for el in r {
                    match el?.items {
                        wasmparser::ElementItems::Functions(fs) => {
                            for f in fs {
                                must_check.push(f?);
                            }
                        }
                        wasmparser::ElementItems::Expressions(_, es) => {
                            for e in es {
                                for op in e?.get_operators_reader() {
                                    if let Operator::RefFunc { function_index } = op? {
                                        must_check.push(function_index);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                infos.push(analyse_body(&body, &mut must_check)?);
                let fn_params = params.get(infos.len() - 1).cloned().unwrap_or_default();
                live.push(live_at_checks(&body, fn_params)?);
            }
            _ => {}
        }
    }
    let n = infos.len();
    let defined = |f: u32| (f >= imported_funcs).then(|| (f - imported_funcs) as usize);
    let mut checked = vec![false; n];
    for f in must_check.into_iter().filter_map(defined) {
        if f < n {
            checked[f] = true;
        }
    }
    let edges: Vec<Vec<usize>> = infos
        .iter()
        .map(|i| {
            i.calls
                .iter()
                .chain(i.loops.iter().flat_map(|l| l.1.iter()))
                .filter_map(|&c| defined(c))
                .filter(|&c| c < n)
                .collect()
        })
        .collect();
    for scc in sccs(&edges) {
        if scc.len() > 1 || edges[scc[0]].contains(&scc[0]) {
            for f in scc {
                checked[f] = true;
            }
        }
    }
    // Bounded costs of unchecked functions, callees first (the unchecked graph is acyclic);
    // one over MAX_UNCHECKED becomes checked, and costs its callers nothing.
    let mut cost: Vec<u64> = vec![0; n];
    for f in postorder(&edges) {
        if checked[f] {
            continue;
        }
        let c = charge(
            infos[f].base,
            &infos[f].calls,
            imported_funcs,
            &checked,
            &cost,
        );
        if c > MAX_UNCHECKED {
            checked[f] = true;
        } else {
            cost[f] = c;
        }
    }
    let entry = (0..n)
        .map(|f| {
            checked[f].then(|| {
                charge(
                    infos[f].base,
                    &infos[f].calls,
                    imported_funcs,
                    &checked,
                    &cost,
                )
            })
        })
        .collect();
    let loops: Vec<Vec<u64>> = infos
        .iter()
        .map(|i| {
            i.loops
                .iter()
                .map(|(own, callees)| charge(*own, callees, imported_funcs, &checked, &cost))
                .collect()
        })
        .collect();
    let global_count = imported_globals + defined_globals;
    let (saves, save_types) = save_globals(&live, &loops, global_count + 1);
    Ok(Plan {
        imported_funcs,
        type_count: type_params.len() as u32,
        type_has_params: type_params.iter().map(|p| !p.is_empty()).collect(),
        global_count,
        params: params.iter().map(|p| p.len() as u32).collect(),
        entry,
        loops,
        saves,
        save_types,
        memory64,
        table64,
    })
}

/// The locals live at a function's entry and at each of its loop headers (in order of
/// appearance), with every local's type.
struct LiveAtChecks {
    /// The function's operators.
    ops: usize,
    types: Vec<wasmparser::ValType>,
    entry: Vec<u32>,
    loops: Vec<Vec<u32>>,
}

/// Backward liveness of a function's locals over its operators. `None` for a function with
/// control flow this pass does not model (exceptions, typed-reference branches): its checks
/// then save nothing.
fn live_at_checks(
    body: &wasmparser::FunctionBody<'_>,
    params: Vec<wasmparser::ValType>,
) -> Result<Option<LiveAtChecks>, RewriteError> {
    let mut types = params;
    for pair in body.get_locals_reader()? {
        let (count, ty) = pair?;
        types.extend(std::iter::repeat_n(ty, count as usize));
    }
    let mut ops = Vec::new();
    let mut reader = body.get_operators_reader()?;
    while !reader.eof() {
        ops.push(reader.read()?);
    }
    let n = ops.len();
    // The matching `end` (and `else`) of every block, and the function's own frame.
    let (mut end_of, mut else_of) = (vec![usize::MAX; n], vec![usize::MAX; n]);
    let mut open: Vec<usize> = vec![usize::MAX];
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => open.push(i),
            Operator::Else => {
                if let Some(&b) = open.last().filter(|&&b| b != usize::MAX) {
                    else_of[b] = i;
                }
            }
            Operator::End => {
                if let Some(b) = open.pop().filter(|&b| b != usize::MAX) {
                    end_of[b] = i;
                }
            }
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Rethrow { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => return Ok(None),
            _ => {}
        }
    }
    // Successors of every operator.
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut frames: Vec<usize> = vec![usize::MAX];
    let target = |frames: &[usize], d: u32| -> Option<usize> {
        let f = *frames.get(frames.len().checked_sub(1 + d as usize)?)?;
        if f == usize::MAX {
            None // the function's frame: a return
        } else if matches!(ops[f], Operator::Loop { .. }) {
            Some(f)
        } else {
            Some(end_of[f])
        }
    };
    for (i, op) in ops.iter().enumerate() {
        let next = (i + 1 < n).then_some(i + 1);
        let s = &mut succ[i];
        match op {
            Operator::Block { .. } | Operator::Loop { .. } => {
                s.extend(next);
                frames.push(i);
            }
            Operator::If { .. } => {
                s.extend(next);
                s.push(if else_of[i] != usize::MAX {
                    else_of[i] + 1
                } else {
                    end_of[i]
                });
                frames.push(i);
            }
            Operator::Else => {
                if let Some(&b) = frames.last().filter(|&&b| b != usize::MAX) {
                    s.push(end_of[b]);
                }
            }
            Operator::End => {
                frames.pop();
                s.extend(next);
            }
            Operator::Br { relative_depth } => s.extend(target(&frames, *relative_depth)),
            Operator::BrIf { relative_depth } => {
                s.extend(target(&frames, *relative_depth));
                s.extend(next);
            }
            Operator::BrTable { targets } => {
                for t in targets.targets() {
                    s.extend(target(&frames, t?));
                }
                s.extend(target(&frames, targets.default()));
            }
            Operator::Return
            | Operator::Unreachable
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. } => {}
            _ => s.extend(next),
        }
    }
    // Live-in sets, as bit sets of `words` words per operator, to a fixed point.
    let words = types.len().div_ceil(64).max(1);
    if n.saturating_mul(words) > LIVENESS_WORDS {
        return Ok(None);
    }
    let mut live = vec![0u64; n * words];
    let mut out = vec![0u64; words];
    let mut passes = 0;
    loop {
        passes += 1;
        if passes > LIVENESS_PASSES {
            return Ok(None);
        }
        let mut changed = false;
        for i in (0..n).rev() {
            out.iter_mut().for_each(|w| *w = 0);
            for &s in &succ[i] {
                for (o, l) in out.iter_mut().zip(&live[s * words..(s + 1) * words]) {
                    *o |= l;
                }
            }
            match ops[i] {
                Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                    out[local_index as usize / 64] &= !(1 << (local_index % 64));
                }
                Operator::LocalGet { local_index } => {
                    out[local_index as usize / 64] |= 1 << (local_index % 64);
                }
                _ => {}
            }
            if live[i * words..(i + 1) * words] != out[..] {
                live[i * words..(i + 1) * words].copy_from_slice(&out);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let set = |i: usize| -> Vec<u32> {
        (0..types.len() as u32)
            .filter(|&l| live[i * words + l as usize / 64] & (1 << (l % 64)) != 0)
            .collect()
    };
    let entry = if n > 0 { set(0) } else { Vec::new() };
    let loops = (0..n)
        .filter(|&i| matches!(ops[i], Operator::Loop { .. }))
        .map(set)
        .collect();
    Ok(Some(LiveAtChecks {
        ops: n,
        types,
        entry,
        loops,
    }))
}

/// Assigns the live locals of every check a save global of their type: slots are reused from
/// one check to the next (a host call never runs two slow paths at once), so the module gets
/// as many globals of a type as its most demanding check. Locals of reference types are not
/// saved.
fn save_globals(
    live: &[Option<LiveAtChecks>],
    loops: &[Vec<u64>],
    first: u32,
) -> (Vec<FnSaves>, Vec<wasmparser::ValType>) {
    use wasmparser::ValType as V;
    const ORDER: [V; 5] = [V::I32, V::I64, V::F32, V::F64, V::V128];
    let savable = |t: &V| ORDER.contains(t);
    // What each check saves: its live locals of savable types, none for a check with more
    // than MAX_SAVED of them or past the function's allowance (its loop then pays as it did
    // before the saves), which bounds the code the slow paths add.
    /// A function's liveness and, per check (its entry first, then its loops), what it saves.
    type Pruned<'a> = Option<(&'a LiveAtChecks, Vec<Vec<u32>>)>;
    let pruned: Vec<Pruned<'_>> = live
        .iter()
        .map(|l| {
            let l = l.as_ref()?;
            let mut allowance = l.ops.max(1024);
            let checks = std::iter::once(&l.entry)
                .chain(&l.loops)
                .map(|check| {
                    let keep: Vec<u32> = check
                        .iter()
                        .copied()
                        .filter(|&x| savable(&l.types[x as usize]))
                        .collect();
                    if keep.len() > MAX_SAVED || keep.len() > allowance {
                        return Vec::new();
                    }
                    allowance -= keep.len();
                    keep
                })
                .collect();
            Some((l, checks))
        })
        .collect();
    let mut most = [0u32; 5];
    for (l, checks) in pruned.iter().flatten() {
        for check in checks {
            for (k, t) in ORDER.iter().enumerate() {
                let c = check.iter().filter(|&&x| l.types[x as usize] == *t).count() as u32;
                most[k] = most[k].max(c);
            }
        }
    }
    let mut base = [first; 5];
    for k in 1..5 {
        base[k] = base[k - 1] + most[k - 1];
    }
    let assign = |l: &LiveAtChecks, check: &[u32]| -> Vec<(u32, u32)> {
        let mut used = [0u32; 5];
        check
            .iter()
            .map(|&x| {
                let k = ORDER
                    .iter()
                    .position(|t| *t == l.types[x as usize])
                    .unwrap_or(0);
                used[k] += 1;
                (x, base[k] + used[k] - 1)
            })
            .collect()
    };
    let saves = pruned
        .iter()
        .zip(loops)
        .map(|(p, fn_loops)| match p {
            Some((l, checks)) => FnSaves {
                entry: assign(l, &checks[0]),
                loops: checks[1..].iter().map(|c| assign(l, c)).collect(),
            },
            None => FnSaves {
                entry: Vec::new(),
                loops: vec![Vec::new(); fn_loops.len()],
            },
        })
        .collect();
    let types = ORDER
        .iter()
        .zip(most)
        .flat_map(|(t, m)| std::iter::repeat_n(*t, m as usize))
        .collect();
    (saves, types)
}

/// A region's charge: its own operators and the bounded costs of the unchecked functions it
/// calls (a host import counts one).
fn charge(own: u64, callees: &[u32], imported: u32, checked: &[bool], cost: &[u64]) -> u64 {
    let mut c = own;
    for &callee in callees {
        let add = match callee.checked_sub(imported).map(|i| i as usize) {
            None => 1,
            Some(i) if i >= checked.len() || checked[i] => 0,
            Some(i) => cost[i],
        };
        c = c.saturating_add(add);
    }
    c.max(1)
}

fn analyse_body(
    body: &wasmparser::FunctionBody<'_>,
    must_check: &mut Vec<u32>,
) -> Result<FnInfo, RewriteError> {
    let mut info = FnInfo::default();
    // Open blocks: Some(loop number) for loops; the function body is the first.
    let mut blocks: Vec<Option<usize>> = vec![None];
    let mut open_loops: Vec<usize> = Vec::new();
    for op in body.get_operators_reader()? {
        let op = op?;
        match open_loops.last() {
            Some(&l) => info.loops[l].0 += 1,
            None => info.base += 1,
        }
        match op {
            Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                match open_loops.last() {
                    Some(&l) => info.loops[l].1.push(function_index),
                    None => info.calls.push(function_index),
                }
            }
            Operator::RefFunc { function_index } => must_check.push(function_index),
            _ => {}
        }
        match op {
            Operator::Loop { .. } => {
                info.loops.push((0, Vec::new()));
                let l = info.loops.len() - 1;
                blocks.push(Some(l));
                open_loops.push(l);
            }
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => blocks.push(None),
            Operator::End | Operator::Delegate { .. } => {
                if let Some(Some(l)) = blocks.pop() {
                    open_loops.pop();
                    // The first pass through a loop is charged to the code around it.
                    let (own, callees) = info.loops[l].clone();
                    match open_loops.last() {
                        Some(&p) => {
                            info.loops[p].0 += own;
                            info.loops[p].1.extend(callees);
                        }
                        None => {
                            info.base += own;
                            info.calls.extend(callees);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Post-order of a graph's nodes: callees before callers where it is acyclic.
fn postorder(edges: &[Vec<usize>]) -> Vec<usize> {
    let mut seen = vec![false; edges.len()];
    let mut out = Vec::with_capacity(edges.len());
    for root in 0..edges.len() {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((v, i)) = stack.pop() {
            if let Some(&w) = edges[v].get(i) {
                stack.push((v, i + 1));
                if !seen[w] {
                    seen[w] = true;
                    stack.push((w, 0));
                }
            } else {
                out.push(v);
            }
        }
    }
    out
}

/// Strongly connected components (Tarjan's, iterative).
fn sccs(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut out, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on[root] = true;
        while let Some(&(v, i)) = work.last() {
            if let Some(&w) = edges[v].get(i) {
                work.last_mut().unwrap().1 += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on[w] = true;
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(p, _)) = work.last() {
                    low[p] = low[p].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// An open block of the function being rewritten.
#[derive(Clone, Copy)]
enum Frame {
    /// A block, `if`, `try` or the function body.
    Other,
    /// A loop: `Some(charge)` if it is checked on its back edges (and wrapped in three labels
    /// of this pass's), `None` if at its header; and its number in the function.
    Loop(Option<u64>, usize),
    /// A counted loop checked once per run (wrapped in one label of this pass's, the loop that
    /// starts each run).
    Counted(Counted),
}

/// The open blocks of the function being rewritten, with the labels this pass added under each
/// (a running sum, so that relabelling a branch costs the same however deep it is).
struct Frames {
    frames: Vec<Frame>,
    /// `added[k]`: labels this pass added for `frames[..=k]`.
    added: Vec<u32>,
}

impl Frames {
    /// The function body's frame alone.
    fn new() -> Self {
        Frames {
            frames: vec![Frame::Other],
            added: vec![0],
        }
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn push(&mut self, f: Frame) {
        let own = match f {
            Frame::Loop(Some(_), _) => 3,
            Frame::Counted(_) => 1,
            _ => 0,
        };
        let below = self.added.last().copied().unwrap_or(0);
        self.frames.push(f);
        self.added.push(below + own);
    }

    fn pop(&mut self) -> Option<Frame> {
        self.added.pop();
        self.frames.pop()
    }

    /// A branch's new relative depth, past the labels this pass added, and the charge it must
    /// pay first if it is the back edge of a loop checked on its back edges. An error for a
    /// depth past the function's body (an invalid module: the executor validates first, but
    /// the pass never trusts that).
    fn relabel(&self, d: u32) -> Result<(u32, Option<u64>), ReencodeError<RewriteError>> {
        let invalid = |why: String| ReencodeError::UserError(RewriteError(why));
        let target = (self.frames.len() - 1)
            .checked_sub(d as usize)
            .ok_or_else(|| invalid(format!("a branch to depth {d} leaves the function")))?;
        let added = self.added[self.added.len() - 1] - self.added[target];
        let d = d
            .checked_add(added)
            .ok_or_else(|| invalid(format!("branch depth {d} overflows")))?;
        Ok(match self.frames[target] {
            Frame::Loop(c, _) => (d, c),
            Frame::Other | Frame::Counted(_) => (d, None),
        })
    }
}

/// Per operator: for a loop, whether every branch inside it is a plain `br` or `br_if`, so that
/// its back edges can carry the check (any other branching keeps it at the header). One pass,
/// whatever the nesting.
fn plain_loops(ops: &[Operator<'_>]) -> Vec<bool> {
    let mut plain = vec![false; ops.len()];
    // Open blocks: their operator's index, and whether they hold other branching.
    let mut open: Vec<(usize, bool)> = Vec::new();
    let taint = |open: &mut Vec<(usize, bool)>| {
        if let Some(top) = open.last_mut() {
            top.1 = true;
        }
    };
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::If { .. } | Operator::Loop { .. } => {
                open.push((i, false))
            }
            Operator::Try { .. } | Operator::TryTable { .. } => {
                taint(&mut open);
                open.push((i, true));
            }
            Operator::End | Operator::Delegate { .. } => {
                if let Some((at, bad)) = open.pop() {
                    if matches!(ops[at], Operator::Loop { .. }) {
                        plain[at] = !bad;
                    }
                    if bad {
                        taint(&mut open);
                    }
                }
            }
            Operator::BrTable { .. }
            | Operator::Rethrow { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => taint(&mut open),
            _ => {}
        }
    }
    plain
}

/// A counted loop: its last operators are `local.get c; i32.const s; i32.add; local.tee c`
/// and a `br_if 0` on `c != bound` (a local or a constant) or on `c` itself (a bound of 0);
/// its step `s` is ± a power of two; nothing else in it writes `c` or the bound, branches back
/// to its header or leaves it (traps and exceptions aside); and it carries no values. So its
/// remaining iterations are known at its header: the distance from `c` to the bound, over the
/// step (the step being a power of two, `c` meets the bound exactly if it ever does).
#[derive(Clone, Copy, Debug)]
struct Counted {
    /// The counter (an `i32` local).
    counter: u32,
    /// The counter's change per iteration: ± 2^`shift`.
    step: i32,
    shift: u32,
    /// Where the loop's exit test starts (its `local.get c`), and how many operators it has.
    tail: usize,
    tail_len: usize,
    bound: Bound,
    /// The local holding where the current run ends (set by the rewriter).
    limit: u32,
}

/// What a [`Counted`] loop's counter runs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Local(u32),
    Const(i32),
}

impl Bound {
    fn push(self, f: &mut wasm_encoder::Function) {
        match self {
            Bound::Local(l) => f.instruction(&I::LocalGet(l)),
            Bound::Const(k) => f.instruction(&I::I32Const(k)),
        };
    }
}

/// Per operator: for a loop, whether it is a [`Counted`] one, and how. Linear in the
/// function's operators (and log-linear in its writes of locals) however deep its loops nest,
/// as a tenant's module can nest them as deep as it likes.
fn counted_loops(ops: &[Operator<'_>]) -> Vec<Option<Counted>> {
    let n = ops.len();
    let mut end_of = vec![usize::MAX; n];
    let mut open = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::Loop { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => open.push(i),
            Operator::End => {
                if let Some(b) = open.pop() {
                    end_of[b] = i;
                }
            }
            Operator::Delegate { .. } => {
                open.pop();
            }
            _ => {}
        }
    }
    // Per block: its depth (the function's frame is 0) and the shallowest frame any branch
    // inside it goes to (a loop's own exit test aside), so that a loop at depth k whose
    // branches all go deeper than k neither goes back to its header nor leaves it.
    let mut depth_of = vec![0u32; n];
    let mut reach = vec![u32::MAX; n];
    // Open blocks: their operator and the shallowest frame reached so far; the function's
    // frame is `usize::MAX`.
    let mut frames: Vec<(usize, u32)> = vec![(usize::MAX, u32::MAX)];
    // Writes of locals, as (local, operator), and how many operators that no counted loop
    // may hold (returns, throws, exception handling) come before each operator.
    let mut writes: Vec<(u32, usize)> = Vec::new();
    let mut barred = vec![0u32; n + 1];
    for (i, op) in ops.iter().enumerate() {
        let top = frames.len() as u32 - 1;
        // The shallowest frame this operator branches to.
        let mut reached = u32::MAX;
        let mut goes = |d: u32| reached = reached.min(top.saturating_sub(d));
        let mut bar = false;
        match op {
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::Loop { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => {
                depth_of[i] = top + 1;
                frames.push((i, u32::MAX));
            }
            Operator::End | Operator::Delegate { .. } if frames.len() > 1 => {
                if let Some((b, r)) = frames.pop() {
                    reach[b] = r;
                    if let Some(parent) = frames.last_mut() {
                        parent.1 = parent.1.min(r);
                    }
                }
            }
            // A loop's own exit test, its last operator before its `end`: not counted against
            // it (every other branch to its header is).
            Operator::BrIf { relative_depth: 0 }
                if frames.last().is_some_and(|&(b, _)| {
                    b != usize::MAX && matches!(ops[b], Operator::Loop { .. }) && end_of[b] == i + 1
                }) => {}
            Operator::Br { relative_depth }
            | Operator::BrIf { relative_depth }
            | Operator::BrOnNull { relative_depth }
            | Operator::BrOnNonNull { relative_depth }
            | Operator::BrOnCast { relative_depth, .. }
            | Operator::BrOnCastFail { relative_depth, .. } => goes(*relative_depth),
            Operator::BrTable { targets } => {
                goes(targets.default());
                for t in targets.targets() {
                    goes(t.unwrap_or(u32::MAX));
                }
            }
            Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                writes.push((*local_index, i));
            }
            Operator::Return
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Rethrow { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll => bar = true,
            _ => {}
        }
        if matches!(
            op,
            Operator::Try { .. } | Operator::TryTable { .. } | Operator::Delegate { .. }
        ) {
            bar = true;
        }
        if let Some(f) = frames.last_mut() {
            f.1 = f.1.min(reached);
        }
        barred[i + 1] = barred[i] + u32::from(bar);
    }
    writes.sort_unstable();
    let written = |local: u32, from: usize, to: usize| {
        let first = writes.partition_point(|&w| w < (local, from));
        writes
            .get(first)
            .is_some_and(|&(l, at)| l == local && at < to)
    };
    (0..n)
        .map(|at| {
            let Operator::Loop {
                blockty: wasmparser::BlockType::Empty,
            } = ops[at]
            else {
                return None;
            };
            let end = end_of[at];
            let k = counted_tail(ops, at, end)?;
            let clean = reach[at] > depth_of[at]
                && barred[k.tail] == barred[at + 1]
                && !written(k.counter, at + 1, k.tail)
                && match k.bound {
                    Bound::Local(b) => b != k.counter && !written(b, at + 1, end),
                    Bound::Const(_) => true,
                };
            clean.then_some(k)
        })
        .collect()
}

/// The exit test of the loop at `at` whose `end` is at `end`, if it has a [`Counted`] loop's
/// (what the loop's body does is [`counted_loops`]' to check).
fn counted_tail(ops: &[Operator<'_>], at: usize, end: usize) -> Option<Counted> {
    let tail_at = |len: usize| end.checked_sub(len).filter(|&t| t > at);
    let (tail, tail_len, bound) = match ops.get(end.checked_sub(3)?..end)? {
        [Operator::LocalGet { local_index }, Operator::I32Ne, Operator::BrIf { relative_depth: 0 }] => {
            (tail_at(7)?, 7, Bound::Local(*local_index))
        }
        [Operator::I32Const { value }, Operator::I32Ne, Operator::BrIf { relative_depth: 0 }] => {
            (tail_at(7)?, 7, Bound::Const(*value))
        }
        [_, Operator::LocalTee { .. }, Operator::BrIf { relative_depth: 0 }] => {
            (tail_at(5)?, 5, Bound::Const(0))
        }
        _ => return None,
    };
    let (counter, step) = match &ops[tail..tail + 4] {
        [Operator::LocalGet { local_index: c }, Operator::I32Const { value: s }, Operator::I32Add, Operator::LocalTee { local_index: c2 }]
            if c == c2 && *s != 0 && s.unsigned_abs().is_power_of_two() =>
        {
            (*c, *s)
        }
        _ => return None,
    };
    Some(Counted {
        counter,
        step,
        shift: step.unsigned_abs().trailing_zeros(),
        tail,
        tail_len,
        bound,
        limit: 0,
    })
}

struct Rewriter<'p> {
    plan: &'p Plan,
    placement: Placement,
    tick_type: u32,
    budget_global: u32,
    defined_index: usize,
    types_done: bool,
    imports_done: bool,
    globals_done: bool,
    exports_done: bool,
}

impl Rewriter<'_> {
    fn tick_import(&self, imports: &mut wasm_encoder::ImportSection) {
        let ty = wasm_encoder::EntityType::Function(self.tick_type);
        imports.import(TICK_MODULE, TICK_NAME, ty);
    }

    fn budget(&self, globals: &mut wasm_encoder::GlobalSection) {
        let ty = wasm_encoder::GlobalType {
            val_type: wasm_encoder::ValType::I64,
            mutable: true,
            shared: false,
        };
        // The trap reference never refills: it starts with all the budget there is.
        let start = match self.placement {
            Placement::BackEdgesTrap => i64::MAX,
            _ => 0,
        };
        globals.global(ty, &wasm_encoder::ConstExpr::i64_const(start));
        for t in &self.plan.save_types {
            use wasmparser::ValType as V;
            let (val_type, init) = match t {
                V::I32 => (
                    wasm_encoder::ValType::I32,
                    wasm_encoder::ConstExpr::i32_const(0),
                ),
                V::I64 => (
                    wasm_encoder::ValType::I64,
                    wasm_encoder::ConstExpr::i64_const(0),
                ),
                V::F32 => (
                    wasm_encoder::ValType::F32,
                    wasm_encoder::ConstExpr::f32_const(0.0.into()),
                ),
                V::F64 => (
                    wasm_encoder::ValType::F64,
                    wasm_encoder::ConstExpr::f64_const(0.0.into()),
                ),
                _ => (
                    wasm_encoder::ValType::V128,
                    wasm_encoder::ConstExpr::v128_const(0),
                ),
            };
            let ty = wasm_encoder::GlobalType {
                val_type,
                mutable: true,
                shared: false,
            };
            globals.global(ty, &init);
        }
    }

    fn budget_export(&self, exports: &mut wasm_encoder::ExportSection) {
        exports.export(
            BUDGET_EXPORT,
            wasm_encoder::ExportKind::Global,
            self.budget_global,
        );
    }

    /// Charges a bulk operation's length (the value on top of the stack, left there) to the
    /// budget, one per byte or element as wasmtime's fuel does: memories' and tables' copies,
    /// fills and inits, a table's growth, and GC arrays' allocations, fills, copies and inits.
    /// So a loop of large ones ticks by the work it does. The next check pays it. Any other
    /// operator is charged nothing here.
    fn charge_length(
        &self,
        f: &mut wasm_encoder::Function,
        op: &Operator<'_>,
        scratch: u32,
        scratch32: u32,
    ) {
        if self.local_budget() {
            return; // a bench-only variant: its bulk operations cost one
        }
        let mem = |i: u32| self.plan.memory64.get(i as usize).copied().unwrap_or(false);
        let table = |i: u32| self.plan.table64.get(i as usize).copied().unwrap_or(false);
        // The length's type: a fill's (or a table's growth) is its memory's or table's index
        // type, a copy's the narrower of its two, an init's always `i32` (a segment is never
        // 64-bit), and so is an array's.
        let wide = match *op {
            Operator::MemoryCopy { dst_mem, src_mem } => mem(dst_mem) && mem(src_mem),
            Operator::MemoryFill { mem: m } => mem(m),
            Operator::TableCopy {
                dst_table,
                src_table,
            } => table(dst_table) && table(src_table),
            Operator::TableFill { table: t } | Operator::TableGrow { table: t } => table(t),
            Operator::MemoryInit { .. }
            | Operator::TableInit { .. }
            | Operator::ArrayNew { .. }
            | Operator::ArrayNewDefault { .. }
            | Operator::ArrayNewData { .. }
            | Operator::ArrayNewElem { .. }
            | Operator::ArrayFill { .. }
            | Operator::ArrayCopy { .. }
            | Operator::ArrayInitData { .. }
            | Operator::ArrayInitElem { .. } => false,
            _ => return,
        };
        if wide {
            f.instruction(&I::LocalTee(scratch));
            f.instruction(&I::GlobalGet(self.budget_global));
            f.instruction(&I::LocalGet(scratch));
        } else {
            f.instruction(&I::LocalTee(scratch32));
            f.instruction(&I::GlobalGet(self.budget_global));
            f.instruction(&I::LocalGet(scratch32));
            f.instruction(&I::I64ExtendI32U);
        }
        f.instruction(&I::I64Sub);
        f.instruction(&I::GlobalSet(self.budget_global));
    }

    /// Whether the budget lives in the `scratch` local between calls.
    fn local_budget(&self) -> bool {
        self.placement == Placement::BackEdgesSavedLocal
    }

    /// Hands the local budget to the global (before a call or a return).
    fn store_budget(&self, f: &mut wasm_encoder::Function, scratch: u32) {
        if self.local_budget() {
            f.instruction(&I::LocalGet(scratch));
            f.instruction(&I::GlobalSet(self.budget_global));
        }
    }

    /// Takes the budget back from the global (at entry, after a call).
    fn load_budget(&self, f: &mut wasm_encoder::Function, scratch: u32) {
        if self.local_budget() {
            f.instruction(&I::GlobalGet(self.budget_global));
            f.instruction(&I::LocalSet(scratch));
        }
    }

    /// Takes `charge` off the budget, leaving whether it ran out on the stack.
    fn spend(&self, f: &mut wasm_encoder::Function, scratch: u32, charge: u64) {
        if self.local_budget() {
            f.instruction(&I::LocalGet(scratch));
            f.instruction(&I::I64Const(charge.min(i64::MAX as u64) as i64));
            f.instruction(&I::I64Sub);
            f.instruction(&I::LocalTee(scratch));
            f.instruction(&I::I64Const(0));
            f.instruction(&I::I64LtS);
            return;
        }
        f.instruction(&I::GlobalGet(self.budget_global));
        f.instruction(&I::I64Const(charge.min(i64::MAX as u64) as i64));
        f.instruction(&I::I64Sub);
        f.instruction(&I::LocalTee(scratch));
        f.instruction(&I::GlobalSet(self.budget_global));
        f.instruction(&I::LocalGet(scratch));
        f.instruction(&I::I64Const(0));
        f.instruction(&I::I64LtS);
    }

    /// The slow path: the host's next budget, or the reference's trap. With the placements
    /// that save (`BackEdgesSaved`, `BackEdgesSavedLocal`, `HeadersSaved`), the `live` locals
    /// go to their globals before the call and come back after it.
    fn refill(&self, f: &mut wasm_encoder::Function, scratch: u32, live: &[(u32, u32)]) {
        if self.placement == Placement::BackEdgesTrap {
            f.instruction(&I::Unreachable);
            return;
        }
        let live = if self.placement.saves() { live } else { &[] };
        for &(local, global) in live {
            f.instruction(&I::LocalGet(local));
            f.instruction(&I::GlobalSet(global));
        }
        f.instruction(&I::Call(self.plan.imported_funcs));
        if self.local_budget() {
            f.instruction(&I::LocalSet(scratch));
        } else {
            f.instruction(&I::GlobalSet(self.budget_global));
        }
        for &(local, global) in live {
            f.instruction(&I::GlobalGet(global));
            f.instruction(&I::LocalSet(local));
        }
    }

    /// A check with its slow path in line (function entries; loop headers).
    fn check(
        &self,
        f: &mut wasm_encoder::Function,
        scratch: u32,
        charge: u64,
        live: &[(u32, u32)],
    ) {
        self.spend(f, scratch, charge);
        f.instruction(&I::If(wasm_encoder::BlockType::Empty));
        self.refill(f, scratch, live);
        f.instruction(&I::End);
    }

    /// Starts a run of the counted loop `k`, whose iterations are charged `charge` each: pays
    /// for as many iterations as the budget holds (refilling it first if it holds none, then
    /// running at least one), at most the loop's remaining ones and [`MAX_RUN`], and sets the
    /// loop's limit to where the counter stands when the run ends.
    fn start_run(&self, f: &mut wasm_encoder::Function, k: &Counted, charge: u64, l: RunLocals) {
        let c = charge as i64;
        // The remaining iterations: the distance to the bound, in steps (0: a whole turn of
        // the counter, or a bound it never meets).
        if k.step > 0 {
            k.bound.push(f);
            f.instruction(&I::LocalGet(k.counter));
        } else {
            f.instruction(&I::LocalGet(k.counter));
            k.bound.push(f);
        }
        f.instruction(&I::I32Sub);
        f.instruction(&I::I64ExtendI32U);
        if k.shift > 0 {
            f.instruction(&I::I64Const(i64::from(k.shift)));
            f.instruction(&I::I64ShrU);
        }
        f.instruction(&I::LocalTee(l.remaining));
        // None, or more than a run may take: a run of MAX_RUN.
        f.instruction(&I::I64Const(1));
        f.instruction(&I::I64Sub);
        f.instruction(&I::I64Const(MAX_RUN - 1));
        f.instruction(&I::I64GeU);
        f.instruction(&I::If(wasm_encoder::BlockType::Empty));
        f.instruction(&I::I64Const(MAX_RUN));
        f.instruction(&I::LocalSet(l.remaining));
        f.instruction(&I::End);
        // The iterations the budget pays for.
        self.iterations_paid(f, c, l.run);
        f.instruction(&I::I64Const(1));
        f.instruction(&I::I64LtS);
        f.instruction(&I::If(wasm_encoder::BlockType::Empty));
        self.refill(f, l.scratch, l.live);
        self.iterations_paid(f, c, l.run);
        f.instruction(&I::I64Const(1));
        f.instruction(&I::LocalGet(l.run));
        f.instruction(&I::I64Const(1));
        f.instruction(&I::I64GtS);
        f.instruction(&I::Select);
        f.instruction(&I::LocalSet(l.run));
        f.instruction(&I::End);
        // At most the remaining ones.
        f.instruction(&I::LocalGet(l.run));
        f.instruction(&I::LocalGet(l.remaining));
        f.instruction(&I::LocalGet(l.run));
        f.instruction(&I::LocalGet(l.remaining));
        f.instruction(&I::I64LtS);
        f.instruction(&I::Select);
        f.instruction(&I::LocalTee(l.run));
        // Paid for now, with the run's start.
        f.instruction(&I::I64Const(c));
        f.instruction(&I::I64Mul);
        f.instruction(&I::I64Const(RUN_COST));
        f.instruction(&I::I64Add);
        f.instruction(&I::LocalSet(l.scratch));
        f.instruction(&I::GlobalGet(self.budget_global));
        f.instruction(&I::LocalGet(l.scratch));
        f.instruction(&I::I64Sub);
        f.instruction(&I::GlobalSet(self.budget_global));
        // Where the counter stands after the run (modulo 2^32: exact, as the run is at most
        // MAX_RUN steps of a power of two).
        f.instruction(&I::LocalGet(k.counter));
        f.instruction(&I::LocalGet(l.run));
        f.instruction(&I::I32WrapI64);
        f.instruction(&I::I32Const(k.step));
        f.instruction(&I::I32Mul);
        f.instruction(&I::I32Add);
        f.instruction(&I::LocalSet(k.limit));
    }

    /// Sets `run` to the iterations of charge `c` the budget pays for, leaving it on the stack.
    fn iterations_paid(&self, f: &mut wasm_encoder::Function, c: i64, run: u32) {
        f.instruction(&I::GlobalGet(self.budget_global));
        f.instruction(&I::I64Const(c));
        f.instruction(&I::I64DivS);
        f.instruction(&I::LocalTee(run));
    }
}

/// The locals [`Rewriter::start_run`] works with, and the locals its refill saves.
#[derive(Clone, Copy)]
struct RunLocals<'a> {
    scratch: u32,
    remaining: u32,
    run: u32,
    live: &'a [(u32, u32)],
}

impl Reencode for Rewriter<'_> {
    type Error = RewriteError;

    fn function_index(&mut self, func: u32) -> Result<u32, ReencodeError<Self::Error>> {
        // The tick import goes after the module's own function imports.
        Ok(func + u32::from(func >= self.plan.imported_funcs))
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_type_section(self, types, section)?;
        types.ty().function([], [wasm_encoder::ValType::I64]);
        self.types_done = true;
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut wasm_encoder::ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_import_section(self, imports, section)?;
        self.tick_import(imports);
        self.imports_done = true;
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_global_section(self, globals, section)?;
        self.budget(globals);
        self.globals_done = true;
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_export_section(self, exports, section)?;
        self.budget_export(exports);
        self.exports_done = true;
        Ok(())
    }

    /// Adds the type, import, global and export sections a module without them needs.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<wasm_encoder::SectionId>,
        before: Option<wasm_encoder::SectionId>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        use wasm_encoder::SectionId as S;
        let rank = match before {
            None => u8::MAX,
            Some(S::Type) => 1,
            Some(S::Import) => 2,
            Some(S::Function | S::Table | S::Memory | S::Tag) => 3,
            Some(S::Global) => 4,
            Some(S::Export) => 5,
            Some(_) => 6,
        };
        if !self.types_done && rank > 1 {
            let mut types = wasm_encoder::TypeSection::new();
            types.ty().function([], [wasm_encoder::ValType::I64]);
            module.section(&types);
            self.types_done = true;
        }
        if !self.imports_done && rank > 2 {
            let mut imports = wasm_encoder::ImportSection::new();
            self.tick_import(&mut imports);
            module.section(&imports);
            self.imports_done = true;
        }
        if !self.globals_done && rank > 4 {
            let mut globals = wasm_encoder::GlobalSection::new();
            self.budget(&mut globals);
            module.section(&globals);
            self.globals_done = true;
        }
        if !self.exports_done && rank > 5 {
            let mut exports = wasm_encoder::ExportSection::new();
            self.budget_export(&mut exports);
            module.section(&exports);
            self.exports_done = true;
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let idx = self.defined_index;
        self.defined_index += 1;
        let mut locals = Vec::new();
        let mut declared = 0u32;
        for pair in func.get_locals_reader()? {
            let (count, ty) = pair?;
            declared += count;
            locals.push((count, self.val_type(ty)?));
        }
        // A scratch local after the parameters and the declared locals.
        let scratch = self.plan.params[idx] + declared;
        locals.push((1, wasm_encoder::ValType::I64));
        // And one for the `i32` length of a bulk operation.
        let scratch32 = scratch + 1;
        locals.push((1, wasm_encoder::ValType::I32));
        // And a counted loop's run: the loop's remaining iterations and the run's (`i64`), and
        // per counted loop where its run ends (`i32`: a loop's own, as an inner loop's runs
        // start within an outer one's).
        let (remaining, run) = (scratch + 2, scratch + 3);
        locals.push((2, wasm_encoder::ValType::I64));
        let mut ops = Vec::new();
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            ops.push(reader.read()?);
        }
        let mut counted = if self.placement == Placement::CountedRuns {
            counted_loops(&ops)
        } else {
            vec![None; ops.len()]
        };
        let mut limits = 0;
        let loop_charges = self.plan.loops[idx].iter();
        let loop_ops = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op, Operator::Loop { .. }));
        for ((i, _), &c) in loop_ops.zip(loop_charges) {
            if c > MAX_COUNTED_CHARGE {
                counted[i] = None;
            }
            if let Some(k) = counted[i].as_mut() {
                k.limit = scratch + 4 + limits;
                limits += 1;
            }
        }
        locals.push((limits, wasm_encoder::ValType::I32));
        let mut f = wasm_encoder::Function::new(locals);
        self.load_budget(&mut f, scratch);
        if let Some(c) = self.plan.entry[idx] {
            self.check(&mut f, scratch, c, &self.plan.saves[idx].entry);
        }
        let mut loop_no = 0;
        let mut frames = Frames::new();
        let plain = plain_loops(&ops);
        // The exit tests of the counted loops being rewritten, by where they start; and where
        // the one being replaced ends.
        let mut tails: Vec<Option<Counted>> = vec![None; ops.len()];
        let mut skip_to = 0;
        for (i, op) in ops.iter().enumerate() {
            if let Some(k) = tails[i] {
                // The same test against where the run ends: `c + s != limit`.
                f.instruction(&I::LocalGet(k.counter));
                f.instruction(&I::I32Const(k.step));
                f.instruction(&I::I32Add);
                f.instruction(&I::LocalTee(k.counter));
                f.instruction(&I::LocalGet(k.limit));
                f.instruction(&I::I32Ne);
                f.instruction(&I::BrIf(0));
                skip_to = i + k.tail_len;
            }
            if i < skip_to {
                continue;
            }
            match op {
                Operator::Loop { blockty } => {
                    let c = self.plan.loops[idx][loop_no];
                    loop_no += 1;
                    let no = loop_no - 1;
                    let live = &self.plan.saves[idx].loops[no];
                    if let Some(k) = counted[i] {
                        f.instruction(&I::Loop(wasm_encoder::BlockType::Empty)); // $run
                        let l = RunLocals {
                            scratch,
                            remaining,
                            run,
                            live,
                        };
                        self.start_run(&mut f, &k, c, l);
                        f.instruction(&I::Loop(wasm_encoder::BlockType::Empty));
                        frames.push(Frame::Counted(k));
                        tails[k.tail] = Some(k);
                        continue;
                    }
                    let carries_values = match blockty {
                        wasmparser::BlockType::FuncType(t) => self
                            .plan
                            .type_has_params
                            .get(*t as usize)
                            .copied()
                            .unwrap_or(true),
                        _ => false,
                    };
                    if self.placement.back_edges() && !carries_values && plain[i] {
                        let bt = self.block_type(*blockty)?;
                        f.instruction(&I::Block(bt)); // $exit
                        f.instruction(&I::Loop(wasm_encoder::BlockType::Empty)); // $again
                        f.instruction(&I::Block(wasm_encoder::BlockType::Empty)); // $slow
                        f.instruction(&I::Loop(bt));
                        frames.push(Frame::Loop(Some(c), no));
                    } else {
                        f.instruction(&self.instruction(op.clone())?);
                        self.check(&mut f, scratch, c, live);
                        frames.push(Frame::Loop(None, no));
                    }
                }
                Operator::Block { .. }
                | Operator::If { .. }
                | Operator::Try { .. }
                | Operator::TryTable { .. } => {
                    f.instruction(&self.instruction(op.clone())?);
                    frames.push(Frame::Other);
                }
                Operator::End | Operator::Delegate { .. } => {
                    if frames.len() == 1 {
                        self.store_budget(&mut f, scratch); // the function's end: a return
                    }
                    f.instruction(&self.instruction(op.clone())?);
                    let popped = frames.pop();
                    if let Some(Frame::Counted(k)) = popped {
                        // The run ended, its counter at the limit: at the bound, the loop's
                        // end; elsewhere, the next run. The counter is given the limit's value
                        // (the same), so that nothing after the loop reads the value the loop
                        // computed it from: Cranelift would recompute it there and keep the
                        // counter's last two values in two registers, with a move on the back
                        // edge.
                        f.instruction(&I::LocalGet(k.limit));
                        f.instruction(&I::LocalSet(k.counter));
                        f.instruction(&I::LocalGet(k.limit));
                        k.bound.push(&mut f);
                        f.instruction(&I::I32Ne);
                        f.instruction(&I::BrIf(0));
                        f.instruction(&I::End); // $run
                    }
                    if let Some(Frame::Loop(Some(_), no)) = popped {
                        // Past the loop's end: inside $slow, under $again and $exit.
                        f.instruction(&I::Br(2));
                        f.instruction(&I::End); // $slow: the budget ran out on a back edge
                        self.refill(&mut f, scratch, &self.plan.saves[idx].loops[no]);
                        f.instruction(&I::Br(0)); // into the loop again, at its header
                        f.instruction(&I::End); // $again
                        f.instruction(&I::Unreachable);
                        f.instruction(&I::End); // $exit
                    }
                }
                Operator::Br { relative_depth } => {
                    if *relative_depth as usize + 1 == frames.len() {
                        self.store_budget(&mut f, scratch);
                    }
                    let (d, back) = frames.relabel(*relative_depth)?;
                    if let Some(c) = back {
                        self.spend(&mut f, scratch, c);
                        f.instruction(&I::BrIf(d + 1));
                    }
                    f.instruction(&I::Br(d));
                }
                Operator::BrIf { relative_depth } => match frames.relabel(*relative_depth)? {
                    _ if *relative_depth as usize + 1 == frames.len() => {
                        self.store_budget(&mut f, scratch);
                        f.instruction(&I::BrIf(frames.relabel(*relative_depth)?.0));
                    }
                    (d, Some(c)) => {
                        f.instruction(&I::If(wasm_encoder::BlockType::Empty));
                        self.spend(&mut f, scratch, c);
                        f.instruction(&I::BrIf(d + 2));
                        f.instruction(&I::Br(d + 1));
                        f.instruction(&I::End);
                    }
                    (d, None) => {
                        f.instruction(&I::BrIf(d));
                    }
                },
                Operator::BrTable { targets } => {
                    let mut all = targets.targets().chain([Ok(targets.default())]);
                    if all.any(|t| t.is_ok_and(|t| t as usize + 1 == frames.len())) {
                        self.store_budget(&mut f, scratch);
                    }
                    let mut to = Vec::with_capacity(targets.len() as usize);
                    for t in targets.targets() {
                        to.push(frames.relabel(t?)?.0);
                    }
                    let default = frames.relabel(targets.default())?.0;
                    f.instruction(&I::BrTable(to.into(), default));
                }
                Operator::Call { .. }
                | Operator::CallIndirect { .. }
                | Operator::CallRef { .. } => {
                    self.store_budget(&mut f, scratch);
                    f.instruction(&self.instruction(op.clone())?);
                    self.load_budget(&mut f, scratch);
                }
                Operator::Return
                | Operator::ReturnCall { .. }
                | Operator::ReturnCallIndirect { .. }
                | Operator::ReturnCallRef { .. } => {
                    self.store_budget(&mut f, scratch);
                    f.instruction(&self.instruction(op.clone())?);
                }
                // `plain_loops` keeps loops with any other branching unwrapped, and
                // branches out of an unwrapped loop cross no added label unless it sits in a
                // wrapped one, which then has only plain branches. A bulk operation is
                // charged its length first (nothing for any other operator).
                _ => {
                    self.charge_length(&mut f, op, scratch, scratch32);
                    f.instruction(&self.instruction(op.clone())?);
                }
            }
        }
        code.function(&f);
        Ok(())
    }
}
