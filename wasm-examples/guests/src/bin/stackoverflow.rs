//! Recurses without bound: the wasm call stack (or shadow stack) overflows.
#[inline(never)]
#[allow(unconditional_recursion)]
fn down(n: u64, acc: &mut [u64; 4]) -> u64 {
    acc[(n & 3) as usize] = acc[(n & 3) as usize].wrapping_add(n);
    let r = down(std::hint::black_box(n + 1), acc);
    r.wrapping_add(acc[(n & 1) as usize])
}

fn main() {
    println!("stackoverflow: recursing");
    let mut acc = [0u64; 4];
    let r = down(0, &mut acc);
    println!("stackoverflow: unreachable {r}");
}
