//! Prints a greeting and its arguments; exits with `$EXIT_CODE` if set.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("Hello from Tessera!");
    } else {
        println!("Hello from Tessera! {}", args.join(" "));
    }
    eprintln!("hello: this line goes to stderr");
    if let Ok(code) = std::env::var("EXIT_CODE") {
        match code.trim().parse::<i32>() {
            Ok(c) => std::process::exit(c),
            Err(_) => {
                eprintln!("hello: bad EXIT_CODE {code:?}");
                std::process::exit(2);
            }
        }
    }
}
