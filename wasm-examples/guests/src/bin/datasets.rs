//! `datasets <name>`: reads the read-only data set mounted at `/data/<name>` and tries every way
//! of changing it or leaving it, printing one `<attempt>: denied (<error>)` or
//! `<attempt>: ALLOWED` line each. The host puts `file.txt` and an empty `sub/` in the data set,
//! `secret.txt` next to it, and the symlinks `up -> ../secret.txt` and
//! `abs -> <host path of secret.txt>` inside it.
use std::fs::{self, OpenOptions};
use std::io::Write;

fn report<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) {
    match r {
        Ok(_) => println!("{what}: ALLOWED"),
        Err(e) => println!("{what}: denied ({e})"),
    }
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn fd_prestat_get(fd: u32, out: *mut u32) -> u16;
    fn fd_prestat_dir_name(fd: u32, path: *mut u8, len: usize) -> u16;
    fn path_symlink(old: *const u8, old_len: usize, fd: u32, new: *const u8, new_len: usize)
        -> u16;
    fn path_open(
        fd: u32,
        dirflags: u32,
        path: *const u8,
        path_len: usize,
        oflags: u16,
        rights_base: u64,
        rights_inheriting: u64,
        fdflags: u16,
        out: *mut u32,
    ) -> u16;
}

/// The preopened descriptor whose guest path is `want`.
fn preopen(want: &str) -> Option<u32> {
    for fd in 3..64 {
        let mut prestat = [0u32; 2]; // tag, name length
        // SAFETY: `prestat` is a writable 8-byte prestat.
        if unsafe { fd_prestat_get(fd, prestat.as_mut_ptr()) } != 0 {
            continue;
        }
        let mut name = vec![0u8; prestat[1] as usize];
        // SAFETY: `name` is writable for its length.
        if unsafe { fd_prestat_dir_name(fd, name.as_mut_ptr(), name.len()) } == 0
            && name == want.as_bytes()
        {
            return Some(fd);
        }
    }
    None
}

/// `path_symlink(target, fd, link)`: Ok on success, the errno otherwise.
fn symlink_at(fd: u32, target: &str, link: &str) -> Result<(), String> {
    // SAFETY: the pointers and lengths describe live UTF-8 buffers.
    match unsafe { path_symlink(target.as_ptr(), target.len(), fd, link.as_ptr(), link.len()) } {
        0 => Ok(()),
        errno => Err(format!("errno {errno}")),
    }
}

/// `path_open(fd, path)` for reading, without following a last symlink: Ok on success.
fn open_at(fd: u32, path: &str) -> Result<(), String> {
    const RIGHT_FD_READ: u64 = 1 << 1;
    let mut out = 0u32;
    // SAFETY: `path` is a live buffer and `out` is writable.
    let errno = unsafe {
        path_open(
            fd,
            0,
            path.as_ptr(),
            path.len(),
            0,
            RIGHT_FD_READ,
            0,
            0,
            &mut out,
        )
    };
    match errno {
        0 => Ok(()),
        e => Err(format!("errno {e}")),
    }
}

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ds".to_owned());
    let root = format!("/data/{name}");
    let file = format!("{root}/file.txt");
    match fs::read_to_string(&file) {
        Ok(s) => println!("read: ok {}", s.trim_end()),
        Err(e) => println!("read: FAILED ({e})"),
    }
    match fs::read_dir(&root) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            println!("list: ok {}", names.join(","));
        }
        Err(e) => println!("list: FAILED ({e})"),
    }
    match fs::read_dir("/data") {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            println!("mounts: ok {}", names.join(","));
        }
        Err(e) => println!("mounts: FAILED ({e})"),
    }

    report("create", fs::File::create(format!("{root}/new.txt")));
    let open = |o: &mut OpenOptions| o.open(&file).and_then(|mut f| f.write_all(b"pwned"));
    report("open for write", open(OpenOptions::new().write(true)));
    report("open for append", open(OpenOptions::new().append(true)));
    report(
        "open for truncate",
        OpenOptions::new().write(true).truncate(true).open(&file),
    );
    report(
        "rename inside",
        fs::rename(&file, format!("{root}/renamed.txt")),
    );
    report("rename out", fs::rename(&file, "/stolen.txt"));
    report("hardlink inside", fs::hard_link(&file, format!("{root}/link.txt")));
    report("hardlink out", fs::hard_link(&file, "/linked.txt"));
    report("unlink", fs::remove_file(&file));
    report("mkdir", fs::create_dir(format!("{root}/newdir")));
    report("rmdir", fs::remove_dir(format!("{root}/sub")));
    let _ = fs::create_dir("/mine");
    let _ = fs::write("/mine/own.txt", "mine");
    report(
        "rename in from the sandbox",
        fs::rename("/mine/own.txt", format!("{root}/own.txt")),
    );
    report(
        "set times",
        fs::File::open(&file).and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH)),
    );
    match preopen(&root) {
        Some(fd) => {
            report("symlink", symlink_at(fd, "file.txt", "sym.txt"));
            report("symlink out", symlink_at(fd, "../secret.txt", "sym2.txt"));
            report("climb ..", open_at(fd, "../secret.txt"));
            report("climb sub/../..", open_at(fd, "sub/../../secret.txt"));
        }
        None => println!("symlink: FAILED (no preopen named {root})"),
    }
    report("climb via path", fs::read(format!("{root}/../secret.txt")));
    report("list ..", fs::read_dir(format!("{root}/..")).map(|_| ()));
    report("host symlink up", fs::read(format!("{root}/up")));
    report("host symlink abs", fs::read(format!("{root}/abs")));
    println!("datasets: done");
}
