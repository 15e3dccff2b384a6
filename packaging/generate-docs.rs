//! Writes the man page and the shell completions from the clap definitions
//! (`cerberus_agent::cli::command`), for `packaging/build.sh`:
//!
//!     cargo run --example generate-docs -- OUT_DIR
//!
//! leaves `OUT_DIR/cerberus-agent.1` and `OUT_DIR/completions/` with
//! `cerberus-agent.bash`, `_cerberus-agent` (zsh) and `cerberus-agent.fish`.
//! An example, not a command of the agent: the installed binary carries no
//! generator.

use std::path::PathBuf;

use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: generate-docs OUT_DIR");
        std::process::exit(2);
    };
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    let command = cerberus_agent::cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(out.join("cerberus-agent.1"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = command.clone();
        let path = clap_complete::generate_to(shell, &mut command, "cerberus-agent", &completions)?;
        println!("{}", path.display());
    }
    Ok(())
}
