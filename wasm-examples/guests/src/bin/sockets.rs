//! Calls WASI preview 1's socket functions, which Tessera denies, and prints the errno each
//! returns, so a test can check that the denial keeps WASI's semantics (EBADF for a descriptor
//! that is not open, ENOTSOCK for one that is not a socket) and ordinary error handling works.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn sock_shutdown(fd: u32, how: u32) -> u32;
    fn sock_accept(fd: u32, flags: u32, out_fd: *mut u32) -> u32;
    fn sock_recv(
        fd: u32,
        iovs: *const Iovec,
        iovs_len: u32,
        flags: u32,
        out_len: *mut u32,
        out_flags: *mut u32,
    ) -> u32;
    fn sock_send(fd: u32, iovs: *const Iovec, iovs_len: u32, flags: u32, out_len: *mut u32) -> u32;
}

#[repr(C)]
struct Iovec {
    buf: *mut u8,
    len: u32,
}

#[cfg(target_arch = "wasm32")]
fn main() {
    const NOT_OPEN: u32 = 99;
    const STDOUT: u32 = 1;
    let mut buf = [0u8; 8];
    let iov = Iovec {
        buf: buf.as_mut_ptr(),
        len: buf.len() as u32,
    };
    let (mut n, mut flags, mut fd) = (0u32, 0u32, 0u32);
    // SAFETY: the pointers are to live locals of the right types and sizes.
    unsafe {
        println!("sock_shutdown not_open {}", sock_shutdown(NOT_OPEN, 3));
        println!("sock_shutdown stdout {}", sock_shutdown(STDOUT, 3));
        println!("sock_accept not_open {}", sock_accept(NOT_OPEN, 0, &mut fd));
        println!(
            "sock_recv not_open {}",
            sock_recv(NOT_OPEN, &iov, 1, 0, &mut n, &mut flags)
        );
        println!(
            "sock_send not_open {}",
            sock_send(NOT_OPEN, &iov, 1, 0, &mut n)
        );
        println!("sock_send stdout {}", sock_send(STDOUT, &iov, 1, 0, &mut n));
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
