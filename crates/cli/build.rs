//! Generates the man page (`man.rs`) and the bash/zsh/fish completions from the clap
//! definition in `src/args.rs` into `$OUT_DIR/doc/` (the Debian package script picks them up
//! there).
use std::path::PathBuf;

#[path = "src/args.rs"]
#[allow(dead_code)]
mod args;
mod man;

fn main() -> std::io::Result<()> {
    use clap::CommandFactory;
    println!("cargo:rerun-if-changed=src/args.rs");
    println!("cargo:rerun-if-changed=man.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("doc");
    std::fs::create_dir_all(&out)?;
    let mut cmd = args::Cli::command();
    let mut page = Vec::new();
    man::render(&cmd, &mut page)?;
    std::fs::write(out.join("server-trust.1"), page)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "server-trust", &out)?;
    }
    Ok(())
}
