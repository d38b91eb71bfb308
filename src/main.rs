//! `server-trust`: the admin's command for XEP-0267 server buddies. See `server_trust::cli`.
fn main() -> std::process::ExitCode {
    server_trust::cli::main()
}
