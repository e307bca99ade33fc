//! The `atoll` binary: each subcommand lives in its own module.

// The server allocates and frees many small JSON values per request; with glibc's allocator
// a fifth of the CPU of `atoll bench apiserver` went to malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli;
mod clients;
mod clustersets;
mod deploy;
mod dev;
mod dns;
mod gateway;
mod kubeconfig;
mod node;
mod output;
mod peer;
mod registration;
mod server;
mod services;

fn main() -> std::process::ExitCode {
    // How a sandboxed container starts (not a command for people: the node agent runs it
    // under `unshare`); first, before anything else of the program's.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__sandbox") {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return atoll_cluster::node::sandbox_main(&args);
    }
    if matches!(
        std::env::args_os()
            .nth(1)
            .as_deref()
            .and_then(|a| a.to_str()),
        Some("agent" | "join")
    ) {
        agent_without_huge_pages();
    }
    cli::Args::parse_and_run()
}

/// The agent runs on every member and should stay small. mimalloc asks for transparent huge
/// pages on its arenas, so each 2 MiB the agent touches there is resident whole (10 of its 12
/// MiB of anonymous memory were). The kernel's flag against them holds from the next fault
/// on, and the runtime has allocated before `main`; so the agent sets it and starts itself
/// again (the flag is kept across exec), once. If a step fails the agent runs as it is, only
/// larger.
fn agent_without_huge_pages() {
    use std::os::unix::process::CommandExt;
    if rustix::thread::transparent_huge_pages_are_disabled().unwrap_or(true)
        || rustix::thread::disable_transparent_huge_pages(true).is_err()
    {
        return;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // /proc/self/exe is this very program, even if its file was replaced since.
    // Returns only on failure; then what is allocated from here on still goes without.
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
}
