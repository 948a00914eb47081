//! What one more operation costs a tight arithmetic loop, by kind: the inner loop of the `arith`
//! guest (a multiply-xorshift step, 16 instructions, bound by its 6-cycle dependency chain) in
//! x86-64 assembly, bare and with what metering adds to it: a budget in memory (load, subtract,
//! store, test, branch), a budget in a register (subtract, test, branch), an epoch-style load and
//! compare, and filler that does nothing (NOPs, independent ALU operations).
//!
//! Why it exists: the share-efficiency goal measures `arith` against unmetered wasmtime, and
//! its metering cost moved between 1.00× and 1.43× with placements that differ by an
//! instruction or two. This bench shows that on the machine at hand the cost of an added
//! operation depends on how many operations the loop has, not on what they do, and that the
//! very same bytes cost 1.00× or 1.10× by where the loop starts in a 64-byte line (Cranelift does
//! not align loops): the counted loop 62 bytes into a line, where Cranelift placed it, is slow,
//! and so is the start of a line; each arith loop is placed on both sides of each edge between
//! fast and slow offsets (BENCHMARKS.md, "Counted loops", "Rejected: loop headers aligned").
//! The counted loop unrolled twice is placed at a slow, a fast and Cranelift's offset too
//! ("Rejected: counted loops unrolled").
//! Every figure is a ratio to the bare loop in the same run.
//!
//! `cargo bench -p tessera-agent --bench loop_dispatch`; `LOOP_ITERATIONS` (default 20 Mi) and
//! `LOOP_RUNS` (best of, default 7).

#[cfg(target_arch = "x86_64")]
mod loops {
    use std::arch::asm;

    /// The step of the `arith` guest, as Cranelift compiles it (the loop counter's decrement
    /// first).
    macro_rules! step {
        () => {
            concat!(
                "add {i:e}, -1\n",
                "mov {t}, {x}\n",
                "shl {t}, 13\n",
                "xor {t}, {x}\n",
                "mov {u}, {t}\n",
                "shr {u}, 7\n",
                "xor {u}, {t}\n",
                "mov {x}, {u}\n",
                "shl {x}, 17\n",
                "xor {x}, {u}\n",
                "mov {t}, {x}\n",
                "or {t}, 1\n",
                "imul {a}, {t}\n",
                "rorx {a}, {a}, 57\n",
                "mov {t}, {x}\n",
                "shr {t}, 3\n",
                "xor {a}, {t}\n",
            )
        };
    }

    /// A loop of `n` steps with `$pre` before each step and `$post` after it (`$post` closes the
    /// loop: it must branch back to `2:` while `{i}` is not zero). Label `3:` is the exit a
    /// check takes when the budget runs out (it never does here). `{b}` points at a budget in
    /// memory, `{s}` at a stack slot holding that pointer, `{r}` is a register budget.
    macro_rules! variant {
        ($name:ident, $pre:expr, $post:expr) => {
            #[inline(never)]
            pub fn $name(n: u32) -> u64 {
                let (mut x, mut acc) = (0x9E37_79B9_7F4A_7C15_u64, 1u64);
                let mut budget = i64::MAX;
                let mut slot: *mut i64 = &mut budget;
                let slot_ptr: *mut *mut i64 = &mut slot;
                // SAFETY: the assembly reads and writes only `budget` (through `{b}`, or through
                // the pointer in `slot`) and the registers it is given.
                unsafe {
                    asm!(
                        ".p2align 6",
                        "2:",
                        $pre,
                        step!(),
                        $post,
                        "3:",
                        "/* {b} {s} {r} {c} {d} */",
                        i = inout(reg) n => _,
                        x = inout(reg) x,
                        a = inout(reg) acc,
                        b = in(reg) slot,
                        s = in(reg) slot_ptr,
                        r = inout(reg) i64::MAX => _,
                        c = out(reg) _,
                        d = out(reg) _,
                        t = out(reg) _,
                        u = out(reg) _,
                    );
                }
                std::hint::black_box(budget);
                x ^ acc
            }
        };
    }

    /// The bare loop's back edge.
    macro_rules! back {
        () => {
            "test {i:e}, {i:e}\njne 2b\n"
        };
    }

    variant!(bare, "", back!());
    variant!(nops_2, "nop\nnop\n", back!());
    variant!(alu_1, "lea {c}, [{r} + 1]\n", back!());
    variant!(alu_2, "lea {c}, [{r} + 1]\nlea {d}, [{r} + 2]\n", back!());
    variant!(
        alu_3,
        "lea {c}, [{r} + 1]\nlea {d}, [{r} + 2]\nlea {c}, [{r} + 3]\n",
        back!()
    );
    variant!(
        register_budget,
        "sub {r}, 33\ntest {r}, {r}\njl 3f\n",
        back!()
    );
    variant!(register_budget_no_test, "sub {r}, 33\njl 3f\n", back!());
    variant!(
        memory_budget,
        "mov {c}, [{b}]\nsub {c}, 33\nmov [{b}], {c}\ntest {c}, {c}\njl 3f\n",
        back!()
    );
    variant!(
        epoch_compare,
        "mov {c}, [{b}]\ncmp {c}, {r}\nja 3f\n",
        back!()
    );
    variant!(
        memory_budget_pointer_reloaded,
        "mov {d}, [{s}]\nmov {c}, [{d}]\nsub {c}, 33\nmov {d}, [{s}]\nmov [{d}], {c}\n\
         test {c}, {c}\njl 3f\n",
        "test {i:e}, {i:e}\nje 3f\nmov {d}, [{s}]\njmp 2b\n"
    );

    /// One of Cranelift's `arith` loops placed `$skip` bytes into a 4 KiB page (only its
    /// alignment differs between two placements of one loop): `$setup`, then the loop's bytes
    /// `$body` closed by a `jne` back with a 32-bit displacement, as Cranelift encodes it; its
    /// counter, state and accumulator in the registers named, `$scratch` the others it writes.
    macro_rules! placed_loop {
        ($name:ident, $skip:literal, $setup:expr, $body:expr, $counter:tt, $x:tt,
         $acc:tt, [$($scratch:tt),*]) => {
            #[inline(never)]
            pub fn $name(n: u32) -> u64 {
                let (mut x, mut acc) = (0x9E37_79B9_7F4A_7C15_u64, 1u64);
                // SAFETY: the assembly touches only the registers it is given.
                unsafe {
                    asm!(
                        $setup,
                        ".p2align 12",
                        concat!(".skip ", $skip, ", 0x90"),
                        "2:",
                        $body,
                        ".byte 0x0f,0x85",
                        ".long 2b - 4f",
                        "4:",
                        inout($counter) n => _,
                        inout($x) x,
                        inout($acc) acc,
                        $(out($scratch) _,)*
                    );
                }
                x ^ acc
            }
        };
    }

    /// One step of the counted `arith` loop in Cranelift's bytes (its `add` of -1 takes a
    /// 32-bit immediate).
    macro_rules! counted_step {
        () => {
            concat!(
                ".byte 0x41,0x81,0xc3,0xff,0xff,0xff,0xff\n",
                ".byte 0x4c,0x89,0xc0, 0x48,0xc1,0xe0,0x0d, 0x49,0x33,0xc0\n",
                ".byte 0x49,0x89,0xc2, 0x49,0xc1,0xea,0x07, 0x4c,0x33,0xd0\n",
                ".byte 0x4d,0x89,0xd0, 0x49,0xc1,0xe0,0x11, 0x4d,0x33,0xc2\n",
                ".byte 0x4c,0x89,0xc0, 0x48,0x83,0xc8,0x01, 0x48,0x0f,0xaf,0xc8\n",
                ".byte 0xc4,0xe3,0xfb,0xf0,0xc9,0x39\n",
                ".byte 0x4c,0x89,0xc0, 0x48,0xc1,0xe8,0x03, 0x48,0x33,0xc8\n",
            )
        };
    }

    /// A counted `arith` loop of `$steps`, closed by a `cmp` with the run's limit (in `r9`).
    macro_rules! counted_loop {
        ($name:ident, $skip:literal, $steps:expr) => {
            placed_loop!(
                $name,
                $skip,
                "xor r9d, r9d",
                concat!($steps, ".byte 0x45,0x3b,0xd9"),
                "r11",
                "r8",
                "rcx",
                ["rax", "r9", "r10"]
            );
        };
    }

    /// The counted `arith` loop: one step, then the `cmp` and the `jne` (73 bytes).
    macro_rules! placed {
        ($name:ident, $skip:literal) => {
            counted_loop!($name, $skip, counted_step!());
        };
    }

    /// The unmetered `arith` loop (`test` of the counter closes it: 71 bytes with the `jne`).
    macro_rules! placed_unmetered {
        ($name:ident, $skip:literal) => {
            placed_loop!(
                $name,
                $skip,
                "",
                concat!(
                    ".byte 0x81,0xc6,0xff,0xff,0xff,0xff\n",
                    ".byte 0x48,0x89,0xc7, 0x48,0xc1,0xe7,0x0d, 0x48,0x33,0xf8\n",
                    ".byte 0x49,0x89,0xf8, 0x49,0xc1,0xe8,0x07, 0x4c,0x33,0xc7\n",
                    ".byte 0x4c,0x89,0xc0, 0x48,0xc1,0xe0,0x11, 0x49,0x33,0xc0\n",
                    ".byte 0x48,0x89,0xc7, 0x48,0x83,0xcf,0x01, 0x48,0x0f,0xaf,0xd7\n",
                    ".byte 0xc4,0xe3,0xfb,0xf0,0xd2,0x39\n",
                    ".byte 0x48,0x89,0xc7, 0x48,0xc1,0xef,0x03, 0x48,0x33,0xd7\n",
                    ".byte 0x85,0xf6",
                ),
                "esi",
                "rax",
                "rdx",
                ["rdi", "r8"]
            );
        };
    }

    placed!(placed_at_0, 0);
    placed!(placed_at_6, 6);
    placed!(placed_at_7, 7);
    placed!(placed_at_32, 32);
    placed!(placed_at_55, 55);
    placed!(placed_at_56, 56);
    placed!(placed_at_254, 254);
    placed_unmetered!(unmetered_at_0, 0);
    placed_unmetered!(unmetered_at_7, 7);
    placed_unmetered!(unmetered_at_8, 8);
    placed_unmetered!(unmetered_at_32, 32);
    placed_unmetered!(unmetered_at_57, 57);
    placed_unmetered!(unmetered_at_58, 58);

    /// The counted `arith` loop unrolled twice (its steps back to back, one `cmp` and `jne`
    /// for both: 137 bytes), as a rewriting pass could unroll counted loops: whether a longer
    /// loop minds where it starts less.
    macro_rules! unrolled {
        ($name:ident, $skip:literal) => {
            counted_loop!($name, $skip, concat!(counted_step!(), counted_step!()));
        };
    }
    unrolled!(unrolled_at_0, 0);
    unrolled!(unrolled_at_32, 32);
    unrolled!(unrolled_at_62, 62);

    /// A loop: what it adds to the bare one, how many instructions that is, and the loop.
    pub type Variant = (&'static str, &'static str, fn(u32) -> u64);

    /// The bare loop first, then the others.
    pub const VARIANTS: [Variant; 26] = [
        ("nothing (the bare loop)", "0", bare),
        ("2 NOPs", "2", nops_2),
        ("1 independent ALU operation (`lea`)", "1", alu_1),
        ("2 independent ALU operations", "2", alu_2),
        ("3 independent ALU operations", "3", alu_3),
        (
            "budget in a register: subtract, test, branch",
            "3",
            register_budget,
        ),
        (
            "budget in a register: subtract, branch",
            "2",
            register_budget_no_test,
        ),
        (
            "budget in memory: load, subtract, store, test, branch",
            "5",
            memory_budget,
        ),
        (
            "epoch-style: load, compare with a register, branch",
            "3",
            epoch_compare,
        ),
        (
            "budget in memory, its pointer reloaded from the stack twice, the back edge an \
             unconditional jump (Cranelift's code for the executor's placement)",
            "8",
            memory_budget_pointer_reloaded,
        ),
        (
            "nothing, but the loop is Cranelift's bytes for the counted arith loop (73 bytes), \
             starting a 64-byte line",
            "0",
            placed_at_0,
        ),
        ("the same, 6 bytes into a line", "0", placed_at_6),
        ("the same, 7 bytes into a line", "0", placed_at_7),
        ("the same, 32 bytes into a line", "0", placed_at_32),
        ("the same, 55 bytes into a line", "0", placed_at_55),
        ("the same, 56 bytes into a line", "0", placed_at_56),
        (
            "the same, 62 bytes into a line (where Cranelift put it: byte 0xfe of a page)",
            "0",
            placed_at_254,
        ),
        (
            "nothing, but the loop is Cranelift's bytes for the unmetered arith loop (71 \
             bytes), starting a 64-byte line",
            "0",
            unmetered_at_0,
        ),
        ("the same, 7 bytes into a line", "0", unmetered_at_7),
        ("the same, 8 bytes into a line", "0", unmetered_at_8),
        (
            "the same, 32 bytes into a line (where Cranelift put it)",
            "0",
            unmetered_at_32,
        ),
        ("the same, 57 bytes into a line", "0", unmetered_at_57),
        ("the same, 58 bytes into a line", "0", unmetered_at_58),
        (
            "nothing, but the counted arith loop is unrolled twice (137 bytes for two steps), \
             starting a 64-byte line",
            "0",
            unrolled_at_0,
        ),
        ("the same, 32 bytes into a line", "0", unrolled_at_32),
        ("the same, 62 bytes into a line", "0", unrolled_at_62),
    ];
}

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::time::{Duration, Instant};
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    // Even: the unrolled loop takes two steps a pass.
    let n = env("LOOP_ITERATIONS", 20 << 20) as u32 & !1;
    let runs = env("LOOP_RUNS", 7);
    // Every variant runs the same steps: a wrongly encoded byte shows as another result.
    let expected = (loops::VARIANTS[0].2)(1000);
    for (name, _, f) in loops::VARIANTS {
        assert_eq!(f(1000), expected, "{name} computes something else");
    }
    // Runs alternate between the variants, so that a change of the machine's load hits all.
    let mut best = [Duration::MAX; loops::VARIANTS.len()];
    for _ in 0..runs {
        for (b, (_, _, f)) in best.iter_mut().zip(loops::VARIANTS) {
            let t0 = Instant::now();
            std::hint::black_box(f(std::hint::black_box(n)));
            *b = (*b).min(t0.elapsed());
        }
    }
    let base = best[0].as_secs_f64();
    println!(
        "## A tight loop's cost of one more operation ({n} iterations, best of {runs} runs; \
         the bare loop {:.2} ns per iteration)",
        base * 1e9 / f64::from(n)
    );
    println!("| added to each iteration | instructions | time ÷ the bare loop |");
    println!("|---|---|---|");
    for ((name, ops, _), b) in loops::VARIANTS.iter().zip(best) {
        println!("| {name} | {ops} | {:.2}× |", b.as_secs_f64() / base);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("loop_dispatch: x86-64 only");
}
