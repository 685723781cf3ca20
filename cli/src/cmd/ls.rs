//! `bunker ls`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use bunker_agent::navigate::{Located, locate, walk};
use bunker_repo_format::tree::{Entry, Node};
use serde_json::{Value, json};

use super::split_snapshot_path;
use crate::args::{GlobalOptions, LsArgs};
use crate::output::{local_time, print_json, rfc3339, set_bytes};
use crate::{exit, repo};

/// One entry as `ls --json` (and `find --json`) shows it.
pub(super) fn entry_json(path: &Path, entry: &Entry) -> Value {
    let mut value = json!({
        "type": entry.node.kind_name(),
        "size": entry.size(),
        "mode": entry.meta.mode,
        "uid": entry.meta.uid,
        "gid": entry.meta.gid,
        "user": String::from_utf8_lossy(&entry.meta.user),
        "group": String::from_utf8_lossy(&entry.meta.group),
        "mtime": rfc3339(entry.meta.mtime),
    });
    set_bytes(&mut value, "path", path.as_os_str().as_bytes());
    set_bytes(&mut value, "name", &entry.name);
    if let Node::Symlink { target } = &entry.node {
        set_bytes(&mut value, "target", target);
    }
    value
}

/// One entry as `ls` (and `find`) lists it: its path, after mode, owner, size and time with
/// `long`.
pub(super) fn write_line(
    out: &mut impl Write,
    path: &Path,
    entry: &Entry,
    long: bool,
) -> std::io::Result<()> {
    if long {
        let kind = match entry.node {
            Node::Dir { .. } => 'd',
            Node::Symlink { .. } => 'l',
            Node::Fifo => 'p',
            Node::Socket => 's',
            Node::CharDevice { .. } => 'c',
            Node::BlockDevice { .. } => 'b',
            Node::File { .. } => '-',
        };
        write!(
            out,
            "{} {:>6} {:>6} {:>12} {} ",
            symbolic_mode(kind, entry.meta.mode),
            String::from_utf8_lossy(&entry.meta.user),
            String::from_utf8_lossy(&entry.meta.group),
            entry.size(),
            local_time(entry.meta.mtime)
        )?;
    }
    out.write_all(path.as_os_str().as_bytes())?;
    if long && let Node::Symlink { target } = &entry.node {
        out.write_all(b" -> ")?;
        out.write_all(target)?;
    }
    out.write_all(b"\n")
}

/// The kind and permission bits as `ls -l` shows them: `drwxr-xr-x`, with setuid and setgid
/// as `s`/`S` in the owner's and group's execute place and the sticky bit as `t`/`T` in the
/// others'.
fn symbolic_mode(kind: char, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(kind);
    // (read, write, execute bits, the special bit shown in the execute place, its letter)
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        text.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        text.push(match (bits & 0o1 != 0, mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    text
}

pub fn run(global: &GlobalOptions, args: &LsArgs) -> Result<u8> {
    let (spec, path) = split_snapshot_path(&args.snapshot)?;
    let filter = args.select.filter()?;
    let repository = repo::open(global, "ls")?;
    let (_, snapshot) = filter.resolve(&repository, spec)?;
    let index = repository.load_index_for_reading()?.index;
    let prefix = Path::new("/").join(&path);
    let mut found: Vec<(PathBuf, Entry)> = Vec::new();
    let mut damaged = 0usize;
    match locate(&repository, &index, &snapshot.tree, &path)? {
        Located::Other(entry) => found.push((prefix, entry)),
        Located::Dir { tree, .. } => {
            let json = global.json;
            let long = args.long;
            let mut out = std::io::stdout().lock();
            walk(&repository, &index, &tree, &prefix, &mut |path, entry| {
                match entry {
                    Ok(entry) if json => found.push((path.to_owned(), entry.clone())),
                    Ok(entry) => write_line(&mut out, path, entry, long)
                        .map_err(|e| bunker_repo_format::Error::io("writing the listing", e))?,
                    Err(e) => {
                        damaged += 1;
                        eprintln!("bunker: {}: cannot list: {e}", path.display());
                    }
                }
                Ok(())
            })?;
        }
    }
    if global.json {
        let list: Vec<Value> = found.iter().map(|(p, e)| entry_json(p, e)).collect();
        print_json(&Value::Array(list))?;
    } else {
        let mut out = std::io::stdout().lock();
        for (path, entry) in &found {
            write_line(&mut out, path, entry, args.long)?;
        }
    }
    Ok(if damaged == 0 {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}

#[cfg(test)]
mod tests {
    use super::symbolic_mode;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(symbolic_mode('d', 0o755), "drwxr-xr-x");
        assert_eq!(symbolic_mode('-', 0o644), "-rw-r--r--");
        assert_eq!(symbolic_mode('l', 0o777), "lrwxrwxrwx");
        assert_eq!(symbolic_mode('-', 0o4755), "-rwsr-xr-x");
        assert_eq!(symbolic_mode('-', 0o2750), "-rwxr-s---");
        assert_eq!(symbolic_mode('d', 0o1777), "drwxrwxrwt");
        assert_eq!(symbolic_mode('-', 0o7000), "---S--S--T");
        assert_eq!(symbolic_mode('p', 0o600), "prw-------");
        assert_eq!(symbolic_mode('-', 0), "----------");
    }
}
