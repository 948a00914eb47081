//! Exercises the sandbox: reads, writes, lists, and tries to escape.
use std::fs;

fn main() {
    match fs::read_to_string("/input.txt") {
        Ok(s) => println!("input: {s}"),
        Err(e) => println!("input: error {e}"),
    }
    match fs::write("/output.txt", "written by the files guest\n") {
        Ok(()) => println!("write /output.txt: ok"),
        Err(e) => println!("write /output.txt: error {e}"),
    }
    match fs::create_dir_all("/sub/dir").and_then(|()| fs::write("/sub/dir/file.txt", "nested\n")) {
        Ok(()) => println!("mkdir /sub/dir: ok"),
        Err(e) => println!("mkdir /sub/dir: error {e}"),
    }
    match fs::read_dir("/") {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                println!("ls: {n}");
            }
        }
        Err(e) => println!("ls: error {e}"),
    }
    for path in ["/../etc/passwd", "../etc/passwd", "/etc/passwd"] {
        let verdict = match fs::File::open(path) {
            Ok(_) => "ALLOWED",
            Err(_) => "denied",
        };
        println!("escape {path}: {verdict}");
    }
}
