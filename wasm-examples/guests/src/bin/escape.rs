//! Tries to reach files outside its sandbox through `..`, absolute paths and
//! symlinks, and prints one `escape <attempt>: denied|ALLOWED` line each.
//! The host places `secret.txt` next to the sandbox (in the task directory).
use std::fs;
use std::io::Write;

fn verdict<T, E>(r: Result<T, E>) -> &'static str {
    if r.is_ok() {
        "ALLOWED"
    } else {
        "denied"
    }
}

fn report(what: &str, v: &str) {
    println!("escape {what}: {v}");
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// `path_symlink(old_path, fd, new_path)` of WASI preview 1 (the std
    /// wrapper is unstable).
    fn path_symlink(old: *const u8, old_len: usize, fd: i32, new: *const u8, new_len: usize)
        -> u16;
}

/// Creates `link` (an absolute guest path, resolved in the `/` preopen,
/// fd 3) pointing at `target`; true on success.
fn symlink(target: &str, link: &str) -> bool {
    let rel = link.trim_start_matches('/');
    // SAFETY: the pointers and lengths describe live UTF-8 buffers.
    unsafe { path_symlink(target.as_ptr(), target.len(), 3, rel.as_ptr(), rel.len()) == 0 }
}

fn main() {
    // Reads through `..` and absolute paths.
    for p in [
        "../secret.txt",
        "/../secret.txt",
        "sub/../../secret.txt",
        "/etc/passwd",
        "/proc/self/environ",
    ] {
        report(&format!("read {p}"), verdict(fs::read(p)));
    }
    // Writes through `..`.
    report(
        "create ../created.txt",
        verdict(fs::File::create("../created.txt").and_then(|mut f| f.write_all(b"x"))),
    );
    report("mkdir ../made", verdict(fs::create_dir("../made")));
    // Symlinks pointing out, then used. Creating the link may or may not be
    // allowed; following it must not be.
    let _ = fs::create_dir("/sub");
    let links = [
        ("/up", "../secret.txt"),
        ("/abs", "/etc/passwd"),
        ("/sub/up2", "../../secret.txt"),
        ("/dirup", ".."),
    ];
    for (link, target) in links {
        let made = symlink(target, link);
        println!(
            "symlink {link} -> {target}: {}",
            if made { "created" } else { "refused" }
        );
    }
    report("read via /up", verdict(fs::read("/up")));
    report("read via /abs", verdict(fs::read("/abs")));
    report("read via /sub/up2", verdict(fs::read("/sub/up2")));
    report(
        "read via /dirup/secret.txt",
        verdict(fs::read("/dirup/secret.txt")),
    );
    report("list via /dirup", verdict(fs::read_dir("/dirup")));
    report(
        "write via /up",
        verdict(
            fs::OpenOptions::new()
                .append(true)
                .open("/up")
                .and_then(|mut f| f.write_all(b"pwned")),
        ),
    );
    // Moving and linking things out.
    let _ = fs::write("/mine.txt", "mine");
    report(
        "rename to ../moved.txt",
        verdict(fs::rename("/mine.txt", "../moved.txt")),
    );
    report(
        "hardlink ../secret.txt",
        verdict(fs::hard_link("../secret.txt", "/stolen.txt")),
    );
    report("list ..", verdict(fs::read_dir("..")));
    println!("escape: done");
}
