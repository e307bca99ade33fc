//! `atoll __sandbox PLAN -- COMMAND...`: build a container's view in the private mount
//! namespace util-linux `unshare` made, then become its command.
//!
//! Steps, all inside the new namespace (its mounts are private: none reaches the host):
//! 1. a tmpfs on the plan's stage directory; in it the new root, bound onto itself;
//! 2. each top-level entry of the host's `/` in the new root: directories as recursive binds,
//!    symbolic links as the same links, files as binds;
//! 3. the plan's mounts, parents first. A target's path is followed through symbolic links
//!    inside the new root. A missing directory or file on the way is made where that writes
//!    nothing of the host's: in the new root's tmpfs, in a volume (as container runtimes make
//!    mount points in volumes), or else in an overlay of the existing parent whose upper layer
//!    is on the stage's tmpfs (the parent's own submounts bound back on top);
//! 4. `pivot_root` into the new root, the old one detached; `chdir` to the work directory;
//!    the hostname set; `exec` of the command.
//!
//! A failure is written to stderr (the container's log) and exits 127, as a shell does for a
//! command it cannot run.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use super::Plan;

/// Run the helper with the arguments after `__sandbox`. Returns only on failure.
pub fn main(args: &[OsString]) -> std::process::ExitCode {
    let err = match run(args) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("atoll sandbox: {err}");
    std::process::ExitCode::from(127)
}

enum Never {}

fn run(args: &[OsString]) -> Result<Never, String> {
    let (plan_path, command) = match args {
        [plan, dashes, command @ ..] if dashes == "--" && !command.is_empty() => (plan, command),
        _ => return Err("usage: atoll __sandbox PLAN -- COMMAND [ARG...]".into()),
    };
    let text = std::fs::read(plan_path)
        .map_err(|e| format!("cannot read {}: {e}", Path::new(plan_path).display()))?;
    let plan: Plan =
        serde_json::from_slice(&text).map_err(|e| format!("the sandbox plan is not valid: {e}"))?;
    let root = build(&plan)?;
    enter_root(&root)?;
    let workdir = &plan.workdir;
    std::env::set_current_dir(workdir).map_err(|e| {
        format!(
            "cannot enter the working directory {}: {e}",
            workdir.display()
        )
    })?;
    if let Some(name) = &plan.hostname {
        rustix::system::sethostname(name.as_bytes())
            .map_err(|e| format!("cannot set the hostname {name:?}: {e}"))?;
    }
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(format!("exec {:?}: {e}", command[0]))
}

/// Steps 1 to 3; returns the new root.
fn build(plan: &Plan) -> Result<PathBuf, String> {
    let stage = &plan.stage;
    let fail = |what: &str, path: &Path, e: io::Error| format!("{what} {}: {e}", path.display());
    rustix::mount::mount("tmpfs", stage, "tmpfs", MountFlags::NOSUID, c"mode=0755")
        .map_err(|e| fail("cannot mount a tmpfs on", stage, e.into()))?;
    let root = stage.join("root");
    std::fs::create_dir(&root).map_err(|e| fail("cannot make", &root, e))?;
    rustix::mount::mount_bind(&root, &root).map_err(|e| fail("cannot bind", &root, e.into()))?;
    let entries = std::fs::read_dir("/").map_err(|e| fail("cannot list", Path::new("/"), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let (host, inside) = (Path::new("/").join(&name), root.join(&name));
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            let link = std::fs::read_link(&host).map_err(|e| fail("cannot read", &host, e))?;
            std::os::unix::fs::symlink(&link, &inside)
                .map_err(|e| fail("cannot link", &inside, e))?;
        } else if kind.is_dir() {
            std::fs::create_dir(&inside).map_err(|e| fail("cannot make", &inside, e))?;
            rustix::mount::mount_bind_recursive(&host, &inside)
                .map_err(|e| fail("cannot bind", &host, e.into()))?;
        } else if kind.is_file() {
            std::fs::write(&inside, b"").map_err(|e| fail("cannot make", &inside, e))?;
            rustix::mount::mount_bind(&host, &inside)
                .map_err(|e| fail("cannot bind", &host, e.into()))?;
        }
    }
    let mut places = Places {
        root: root.clone(),
        stage: stage.clone(),
        writable: BTreeSet::new(),
        overlays: 0,
    };
    for m in &plan.mounts {
        let is_dir = std::fs::metadata(&m.source)
            .map_err(|e| fail("cannot mount the missing", &m.source, e))?
            .is_dir();
        let target = places.make(&m.target, is_dir)?;
        if is_dir {
            rustix::mount::mount_bind_recursive(&m.source, &target)
        } else {
            rustix::mount::mount_bind(&m.source, &target)
        }
        .map_err(|e| fail("cannot bind", &m.source, e.into()))?;
        if m.read_only {
            rustix::mount::mount_remount(&target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(|e| fail("cannot make read-only", &m.target, e.into()))?;
        }
        // Mount points below a volume are made in it, as container runtimes do.
        places.writable.insert(target);
    }
    places.make(&plan.workdir, true)?;
    // The copies of the stage that the binds of its ancestors carry are not the container's.
    let stage_inside = places.inside(stage);
    for _ in 0..8 {
        if rustix::mount::unmount(&stage_inside, UnmountFlags::DETACH).is_err() {
            break;
        }
    }
    Ok(root)
}

/// Step 4, up to the exec.
fn enter_root(root: &Path) -> Result<(), String> {
    std::env::set_current_dir(root).map_err(|e| format!("cannot enter the new root: {e}"))?;
    // pivot_root(2)'s own idiom: the old root ends up on top of the new one, then goes.
    rustix::process::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| format!("cannot detach the host's root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Where in the new root things may be made without writing the host's.
struct Places {
    root: PathBuf,
    stage: PathBuf,
    /// Directories whose contents are not the host's: volumes bound here, overlays, and what
    /// was made in either or in the new root.
    writable: BTreeSet<PathBuf>,
    overlays: usize,
}

impl Places {
    /// A container path's place under the new root (no links followed).
    fn inside(&self, path: &Path) -> PathBuf {
        let mut out = self.root.clone();
        for c in path.components() {
            if let Component::Normal(n) = c {
                out.push(n);
            }
        }
        out
    }

    fn is_writable(&self, dir: &Path) -> bool {
        dir == self.root || self.writable.iter().any(|w| dir.starts_with(w))
    }

    /// The place of `target` under the new root, following its symbolic links there, with
    /// whatever is missing on the way made (a directory, or a file at the end if not
    /// `is_dir`).
    fn make(&mut self, target: &Path, is_dir: bool) -> Result<PathBuf, String> {
        let mut todo: std::collections::VecDeque<OsString> = std::collections::VecDeque::new();
        for c in target.components() {
            match c {
                Component::Normal(n) => todo.push_back(n.to_os_string()),
                Component::ParentDir => {
                    return Err(format!(
                        "mount path {}: \"..\" is not allowed",
                        target.display()
                    ));
                }
                _ => {}
            }
        }
        let mut at = self.root.clone();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if at != self.root {
                    at.pop();
                }
                continue;
            }
            let next = at.join(&name);
            match std::fs::symlink_metadata(&next) {
                Ok(md) if md.file_type().is_symlink() => {
                    links += 1;
                    if links > 40 {
                        return Err(format!("{}: too many symbolic links", target.display()));
                    }
                    let link = std::fs::read_link(&next)
                        .map_err(|e| format!("cannot read {}: {e}", next.display()))?;
                    if link.is_absolute() {
                        at = self.root.clone();
                    }
                    let rest: Vec<OsString> = link
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some("..".into()),
                            _ => None,
                        })
                        .collect();
                    for n in rest.into_iter().rev() {
                        todo.push_front(n);
                    }
                }
                Ok(_) => at = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !self.is_writable(&at) {
                        self.overlay(&at)?;
                    }
                    let last = todo.is_empty();
                    if last && !is_dir {
                        std::fs::write(&next, b"")
                    } else {
                        std::fs::create_dir(&next)
                    }
                    .map_err(|e| format!("cannot make the mount point {}: {e}", next.display()))?;
                    self.writable.insert(next.clone());
                    at = next;
                }
                Err(e) => return Err(format!("{}: {e}", next.display())),
            }
        }
        Ok(at)
    }

    /// An overlay on `dir` (a host directory bound into the new root): the host's contents
    /// below, the changes in the stage's tmpfs above. The mounts that were below `dir` are
    /// bound back on top, from a bind of `dir` made before.
    fn overlay(&mut self, dir: &Path) -> Result<(), String> {
        self.overlays += 1;
        let base = self.stage.join(format!("overlay-{}", self.overlays));
        let (upper, work, below) = (base.join("upper"), base.join("work"), base.join("below"));
        for d in [&upper, &work, &below] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
        }
        let submounts = submounts_of(dir);
        rustix::mount::mount_bind_recursive(dir, &below)
            .map_err(|e| format!("cannot bind {}: {e}", dir.display()))?;
        let option = |p: &Path| {
            let s = p.display().to_string();
            if s.contains([',', ':', '\\']) {
                Err(format!(
                    "{s}: a path with ',', ':' or '\\' cannot be an overlay layer"
                ))
            } else {
                Ok(s)
            }
        };
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            option(dir)?,
            option(&upper)?,
            option(&work)?
        );
        let data = std::ffi::CString::new(data).map_err(|e| e.to_string())?;
        rustix::mount::mount(
            "overlay",
            dir,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| format!("cannot overlay {}: {e}", dir.display()))?;
        for m in submounts {
            let Ok(rel) = m.strip_prefix(dir) else {
                continue;
            };
            let target = dir.join(rel);
            // A mount point of the host's is there in the layer below, so in the overlay.
            if let Err(e) = rustix::mount::mount_bind_recursive(below.join(rel), &target) {
                return Err(format!("cannot bind back {}: {e}", target.display()));
            }
        }
        self.writable.insert(dir.to_path_buf());
        Ok(())
    }
}

/// The outermost mount points strictly below `dir`, from /proc/self/mountinfo.
fn submounts_of(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let below: BTreeSet<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    outermost(below)
}

/// The paths of a set that no other path of it is above.
fn outermost(paths: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !out.iter().any(|o| p.starts_with(o)) {
            out.push(p);
        }
    }
    out
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let cases = [
            ("/plain", "/plain"),
            ("/with\\040space", "/with space"),
            ("/tab\\011x", "/tab\tx"),
            ("/not\\99", "/not\\99"),
            ("/end\\04", "/end\\04"),
        ];
        for (raw, want) in cases {
            assert_eq!(unescape(raw), want, "{raw}");
        }
    }

    #[test]
    fn only_the_outermost_submounts_are_bound_back() {
        let set: BTreeSet<PathBuf> = ["/r/etc/a", "/r/etc/a/b", "/r/etc/c", "/r/etc/ab"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            outermost(set),
            ["/r/etc/a", "/r/etc/ab", "/r/etc/c"].map(PathBuf::from)
        );
    }
}
