//! HTTP tools the benchmarks compare with: nginx (Debian's) and `wrk`.

use std::path::Path;

/// An nginx, stopped as nginx wants (`-s stop`: its master takes its workers down; a killed
/// master leaves them running).
pub(super) struct Nginx {
    child: std::process::Child,
    conf: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let stopped = std::process::Command::new("nginx")
            .args(["-g", "daemon off;", "-c"])
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An nginx with `http` (the inside of its `http { }` block), one worker, its files in `dir`
/// under `name`.
pub(super) fn nginx(dir: &Path, name: &str, http: &str) -> anyhow::Result<Nginx> {
    let conf = format!(
        "worker_processes 1;\npid {pid};\nerror_log {err};\nevents {{ worker_connections 4096; }}\nhttp {{ client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n{http}}}\n",
        pid = dir.join(format!("{name}.pid")).display(),
        err = dir.join(format!("{name}.err")).display(),
        tmp = dir.display(),
    );
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    let child = std::process::Command::new("nginx")
        .args(["-g", "daemon off;", "-c"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(Nginx { child, conf: path })
}

/// nginx answering `ok` on each address (port 8080), one worker.
pub(super) fn nginx_ok(dir: &Path, addresses: &[&str]) -> anyhow::Result<Nginx> {
    let servers: String = addresses
        .iter()
        .map(|a| format!("server {{ listen {a}:8080; access_log off; location / {{ return 200 \"ok\\n\"; }} }}\n"))
        .collect();
    nginx(dir, "nginx", &servers)
}

/// What one `wrk` run measured.
pub(super) struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx answers, socket errors and timeouts.
    pub errors: u64,
}

/// `wrk` for 10 s with 32 connections on one thread, with a `Host` header if given.
pub(super) fn wrk(url: &str, host: Option<&str>) -> anyhow::Result<Wrk> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t", "1", "-c", "32", "-d", "10s", "--latency"]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("wrk said no Requests/sec:\n{text}"))?;
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map(|v| v.trim().to_string())
            .and_then(|v| {
                let (num, unit) =
                    v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
                let n: f64 = num.parse().ok()?;
                Some(match unit {
                    "us" => n / 1000.0,
                    "s" => n * 1000.0,
                    _ => n,
                })
            })
            .unwrap_or(0.0)
    };
    // "Non-2xx or 3xx responses: N" and "Socket errors: connect A, read B, write C, timeout D".
    let mut errors = 0;
    for l in text.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(Wrk {
        rps,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
        errors,
    })
}
