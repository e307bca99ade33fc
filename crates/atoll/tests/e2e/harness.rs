//! Start `atoll server` processes and run kubectl against them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A running `atoll server`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    /// The HTTPS URL the server printed in its ready line.
    #[allow(dead_code)]
    pub url: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Start a server on a fresh data dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir);
        s._tmp = Some(tmp);
        s
    }

    /// Start a server on an existing data dir (a restart).
    pub fn start_in(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// Start a server on a data dir with extra `atoll server` arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(["server", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("atoll server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a ready line");
        assert!(line.contains("ready"), "unexpected first line: {line}");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .expect("the URL in the ready line")
            .to_string();
        Server {
            child,
            dir: dir.to_path_buf(),
            url,
            _tmp: None,
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("config");
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The kubectl binaries to test with: the default one and the oldest versioned one present.
pub fn kubectls() -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("kubectl")];
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(real) = std::fs::canonicalize(which("kubectl").unwrap_or_default())
        && let Some(parent) = real.parent()
    {
        dirs.push(parent.to_path_buf());
    }
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(minor) = name
                .strip_prefix("kubectl.1.")
                .and_then(|m| m.parse::<u32>().ok())
            {
                versioned.push((minor, e.path()));
            }
        }
    }
    versioned.sort();
    if let Some((_, oldest)) = versioned.into_iter().next() {
        found.push(oldest);
    }
    found
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|p| p.exists())
    })
}

/// Run kubectl with the server's kubeconfig.
pub struct Kubectl<'a> {
    pub bin: &'a Path,
    pub kubeconfig: PathBuf,
}

impl Kubectl<'_> {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin);
        c.env("KUBECONFIG", &self.kubeconfig).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("kubectl runs")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run with `stdin` as standard input; whatever the outcome.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Run with a manifest on stdin and require success.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_stdin(args, stdin);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Poll a kubectl command until its output satisfies `pred`.
    pub fn eventually(&self, args: &[&str], pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(args);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && pred(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kubectl {args:?} never matched; last output: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
