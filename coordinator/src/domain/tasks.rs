//! What a job owner may ask of a task: the rules its inputs must meet
//! before the job is taken (a lease frame's limits, paths, directories).
//! Each error names what is wrong.

use super::model::{BlobFiles, FileMap, TaskInput};

/// Most tasks in one job.
pub const MAX_TASKS: usize = 1_000_000;

/// A task's input must fit in one lease frame with the protocol's field limits.
pub fn check_task(t: &TaskInput) -> Result<(), String> {
    use idlecore_protocol::limits::*;
    let (stdin, args, env) = (&t.stdin, &t.args, &t.env);
    let all_files = || std::iter::once(&t.files).chain(t.dirs.iter().map(|d| &d.files));
    let all_blobs = || std::iter::once(&t.file_blobs).chain(t.dirs.iter().map(|d| &d.file_blobs));
    let file_bytes: usize = all_files().flat_map(|m| m.0.values()).map(Vec::len).sum();
    if t.stdin_blob.is_some() && !stdin.is_empty() {
        return Err("give `stdin` or `stdin_blob`, not both".into());
    }
    if !t.dirs.is_empty() && !t.files.is_empty() {
        return Err("`files` fill the default `/input`; a task with its own `dirs` puts files in them".into());
    }
    all_blobs().flat_map(|m| m.0.keys()).try_for_each(|p| check_relative(p))?;
    let both = |f: &FileMap, b: &BlobFiles| f.0.keys().find(|p| b.0.contains_key(*p)).cloned();
    let twice = both(&t.files, &t.file_blobs).or_else(|| t.dirs.iter().find_map(|d| both(&d.files, &d.file_blobs)));
    if let Some(p) = twice {
        return Err(format!("file {p:?} is in both `files` and `file_blobs`"));
    }
    if !t.dirs.is_empty() && !t.file_blobs.is_empty() {
        return Err("`file_blobs` fill the default `/input`; a task with its own `dirs` puts blobs in them".into());
    }
    // What the lease frame carries: inline bytes, every path, and each blob's hash and size.
    let blob_count: usize = all_blobs().map(|m| m.0.len()).sum::<usize>() + usize::from(t.stdin_blob.is_some());
    let paths: usize = all_files().flat_map(|m| m.0.keys()).chain(all_blobs().flat_map(|m| m.0.keys())).map(String::len).sum();
    if stdin.len() + file_bytes + paths + blob_count * 48 > MAX_FRAME_BYTES - 256 * 1024 {
        return Err(format!("stdin, files and their paths together are larger than {} bytes", MAX_FRAME_BYTES - 256 * 1024));
    }
    let layouts = std::iter::once((&t.files, &t.file_blobs)).chain(t.dirs.iter().map(|d| (&d.files, &d.file_blobs)));
    for (files, blobs) in layouts {
        check_tree(files.0.keys().chain(blobs.0.keys()))?;
    }
    if all_files().map(|m| m.0.len()).sum::<usize>() + all_blobs().map(|m| m.0.len()).sum::<usize>() > MAX_FILES {
        return Err(format!("at most {MAX_FILES} files"));
    }
    all_files().flat_map(|m| m.0.keys()).try_for_each(|p| check_relative(p))?;
    if t.dirs.len() > MAX_DIRS {
        return Err(format!("at most {MAX_DIRS} dirs"));
    }
    let mut guests: Vec<&str> = vec![];
    for d in &t.dirs {
        // `.` is the task's working directory, as in `wasmtime run --dir .`;
        // `/` is the guest's root, as in `wasmtime run --dir HOST::/`.
        if d.guest != "." && d.guest != "/" {
            let inner = d.guest.strip_prefix('/').ok_or_else(|| format!("dir {:?} must be `.`, `/` or an absolute guest path", d.guest))?;
            check_relative(inner)?;
        }
        if guests.contains(&d.guest.as_str()) {
            return Err(format!("dir {:?} is given twice", d.guest));
        }
        guests.push(&d.guest);
    }
    if stdin.len() > MAX_FRAME_BYTES - 256 * 1024 {
        return Err(format!("stdin is larger than {} bytes", MAX_FRAME_BYTES - 256 * 1024));
    }
    if args.len() > MAX_ARGS || env.len() > MAX_ENV {
        return Err(format!("at most {MAX_ARGS} args and {MAX_ENV} env entries"));
    }
    let text: usize = args.iter().map(String::len).sum::<usize>() + env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if args.iter().chain(env.iter().flat_map(|(k, v)| [k, v])).any(|s| s.len() > MAX_ARG_BYTES) || text > 128 * 1024 {
        return Err(format!("an arg or env entry exceeds {MAX_ARG_BYTES} bytes, or all exceed 128 KiB"));
    }
    if env.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
        return Err("env names must be non-empty and contain no '='".into());
    }
    Ok(())
}

/// Files in a writable directory come back in the result (changed or not):
/// they must fit the output limit, or every run would fail.
pub fn check_writable(t: &TaskInput, max_output: u32) -> Result<(), String> {
    for d in t.dirs.iter().filter(|d| d.writable) {
        let inline: u64 = d.files.0.values().map(|v| v.len() as u64).sum();
        let bytes = inline + d.file_blobs.0.values().map(|b| b.size).sum::<u64>();
        if bytes > max_output as u64 {
            return Err(format!(
                "the files of writable dir {:?} ({bytes} bytes) come back in its result, past limits.max_output_bytes ({max_output})",
                d.guest
            ));
        }
    }
    Ok(())
}

/// The files of one directory must make a tree: no file where another one's
/// directory would be (`a` beside `a/b`).
fn check_tree<'a>(paths: impl Iterator<Item = &'a String>) -> Result<(), String> {
    let all: std::collections::HashSet<&str> = paths.map(String::as_str).collect();
    for p in &all {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            let parent = &p[..at + i];
            if all.contains(parent) {
                return Err(format!("file {p:?} is inside {parent:?}, which is a file too"));
            }
            at += i + 1;
        }
    }
    Ok(())
}

fn check_relative(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.len() > idlecore_protocol::limits::MAX_PATH_BYTES
        || path.starts_with('/')
        || path.split('/').any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(format!("file path {path:?} must be relative, like `dir/name.txt`, without `.` or `..`"));
    }
    Ok(())
}
