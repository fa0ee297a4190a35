//! File descriptors and the fd_* calls: standard streams, preopened
//! directories over the in-memory filesystem, and open files.

use super::fs::{NodeId, Resolved, FILETYPE_DIRECTORY};
use super::{Abort, Errno, GuestMemory, WasiCtx};

const FILETYPE_CHARACTER_DEVICE: u8 = 2;
pub(super) const OFLAGS_CREAT: u32 = 1;
pub(super) const OFLAGS_DIRECTORY: u32 = 2;
pub(super) const OFLAGS_EXCL: u32 = 4;
pub(super) const OFLAGS_TRUNC: u32 = 8;
pub(super) const FDFLAGS_APPEND: u32 = 1;
pub(super) const RIGHT_FD_READ: u64 = 1 << 1;
pub(super) const RIGHT_FD_WRITE: u64 = 1 << 6;
/// Every right preview1 defines; this host checks access by preopen, not by rights.
const ALL_RIGHTS: u64 = (1 << 30) - 1;

/// A directory the task starts with, at fd 3 onwards.
#[derive(Debug, Clone)]
pub struct Preopen {
    pub guest: String,
    pub root: NodeId,
    pub writable: bool,
}

#[derive(Debug, Clone)]
pub enum Fd {
    Stdin,
    Stdout,
    Stderr,
    Dir { node: NodeId, preopen: usize },
    File { node: NodeId, preopen: usize, pos: u64, read: bool, write: bool, append: bool },
}

pub(super) fn errno(r: Result<(), Errno>) -> Errno {
    match r {
        Ok(()) => Errno::Success,
        Err(e) => e,
    }
}

fn read_path(mem: &impl GuestMemory, ptr: u32, len: u32) -> Result<String, Errno> {
    if len > 4096 {
        return Err(Errno::Nametoolong);
    }
    String::from_utf8(mem.read(ptr, len)?).map_err(|_| Errno::Ilseq)
}

impl WasiCtx {
    /// Adds a preopened directory holding `files` (`a/b` paths).
    /// Adds a preopened directory holding `files` (taken, not copied: inputs may be large).
    pub fn with_preopen(mut self, guest: &str, writable: bool, files: Vec<(String, Vec<u8>)>) -> Result<WasiCtx, String> {
        let root = self.fs.new_root();
        if writable {
            self.file_output += files.iter().map(|(_, d)| d.len() as i64).sum::<i64>();
        }
        for (path, data) in files {
            self.fs.add_path(root, &path, data).map_err(|e| format!("input file {path:?}: {e:?}"))?;
        }
        self.preopens.push(Preopen { guest: guest.to_string(), root, writable });
        self.fds.push(Some(Fd::Dir { node: root, preopen: self.preopens.len() - 1 }));
        Ok(self)
    }

    /// Files of the writable preopens after the run, as (preopen, path, bytes).
    pub fn output_files(&self) -> Vec<(String, String, Vec<u8>)> {
        self.preopens
            .iter()
            .filter(|p| p.writable)
            .flat_map(|p| self.fs.files(p.root).into_iter().map(|(path, data)| (p.guest.clone(), path, data)))
            .collect()
    }

    pub(super) fn fd(&self, fd: u32) -> Result<&Fd, Errno> {
        self.fds.get(fd as usize).and_then(Option::as_ref).ok_or(Errno::Badf)
    }

    pub(super) fn fd_mut(&mut self, fd: u32) -> Result<&mut Fd, Errno> {
        self.fds.get_mut(fd as usize).and_then(Option::as_mut).ok_or(Errno::Badf)
    }

    /// The directory an fd names, with its preopen.
    fn dir_fd(&self, fd: u32) -> Result<(NodeId, usize), Errno> {
        match self.fd(fd)? {
            Fd::Dir { node, preopen } => Ok((*node, *preopen)),
            _ => Err(Errno::Notdir),
        }
    }

    pub(super) fn resolve_at(&self, fd: u32, mem: &impl GuestMemory, ptr: u32, len: u32) -> Result<(Resolved, usize), Errno> {
        let (dir, preopen) = self.dir_fd(fd)?;
        let path = read_path(mem, ptr, len)?;
        Ok((self.fs.resolve(self.preopens[preopen].root, dir, &path)?, preopen))
    }

    pub(super) fn writable(&self, preopen: usize) -> Result<(), Errno> {
        if self.preopens[preopen].writable {
            Ok(())
        } else {
            Err(Errno::Rofs)
        }
    }

    /// Checks that output may grow by `extra` bytes (stdout + stderr + files in
    /// writable preopens); past the limit the run is stopped.
    fn check_output(&mut self, extra: i64) -> Result<(), Abort> {
        let total = self.stdout.len() as i64 + self.stderr.len() as i64 + self.file_output + extra;
        if total > self.max_output as i64 {
            self.abort = Some(Abort::OutputLimit(self.max_output));
            return Err(Abort::OutputLimit(self.max_output));
        }
        Ok(())
    }

    /// Records a change in the size of a file in preopen `preopen`, checking growth.
    pub(super) fn resize_output(&mut self, preopen: usize, delta: i64) -> Result<(), Abort> {
        if !self.preopens[preopen].writable {
            return Ok(());
        }
        if delta > 0 {
            self.check_output(delta)?;
        }
        self.file_output += delta;
        Ok(())
    }

    fn gather(mem: &impl GuestMemory, iovs: u32, count: u32) -> Result<Vec<u8>, Errno> {
        let mut data = Vec::new();
        for (ptr, len) in mem.read_iovecs(iovs, count)? {
            data.extend_from_slice(&mem.read(ptr, len)?);
        }
        Ok(data)
    }

    fn scatter(mem: &impl GuestMemory, iovs: u32, count: u32, src: &[u8]) -> Result<u32, Errno> {
        let mut done = 0usize;
        for (ptr, len) in mem.read_iovecs(iovs, count)? {
            let take = (src.len() - done).min(len as usize);
            mem.write(ptr, &src[done..done + take])?;
            done += take;
            if take < len as usize {
                break;
            }
        }
        Ok(done as u32)
    }

    pub fn fd_write(&mut self, mem: &impl GuestMemory, fd: u32, iovs: u32, count: u32, written: u32) -> Result<Errno, Abort> {
        let data = match Self::gather(mem, iovs, count) {
            Ok(d) => d,
            Err(e) => return Ok(e),
        };
        let n = data.len() as u32;
        match self.fd(fd).cloned() {
            Ok(stream @ (Fd::Stdout | Fd::Stderr)) => {
                self.check_output(data.len() as i64)?;
                let out = if matches!(stream, Fd::Stdout) { &mut self.stdout } else { &mut self.stderr };
                out.extend_from_slice(&data);
            }
            Ok(Fd::File { node, write: true, append, pos, preopen, .. }) => {
                let len = self.fs.size(node);
                let at = if append { len } else { pos };
                if let Err(e) = self.write_at(node, preopen, at, &data) {
                    return e;
                }
                if let Ok(Fd::File { pos, .. }) = self.fd_mut(fd) {
                    *pos = at + data.len() as u64;
                }
            }
            Ok(Fd::File { .. } | Fd::Stdin | Fd::Dir { .. }) => return Ok(Errno::Badf),
            Err(e) => return Ok(e),
        }
        Ok(errno(mem.write_u32(written, n)))
    }

    /// Writes into a file, growing it (zero-filled) as needed.
    fn write_at(&mut self, node: NodeId, preopen: usize, at: u64, data: &[u8]) -> Result<(), Result<Errno, Abort>> {
        let old = self.fs.size(node);
        let end = at.checked_add(data.len() as u64).ok_or(Ok(Errno::Fbig))?;
        let (start, end_at) = (file_size(at).map_err(Ok)?, file_size(end).map_err(Ok)?);
        if end > old {
            self.resize_output(preopen, growth(old, end)).map_err(Err)?;
        }
        let file = self.fs.data_mut(node).map_err(Ok)?;
        if end_at > file.len() {
            file.resize(end_at, 0);
        }
        file[start..end_at].copy_from_slice(data);
        Ok(())
    }

    pub fn fd_pwrite(&mut self, mem: &impl GuestMemory, fd: u32, iovs: u32, count: u32, offset: u64, written: u32) -> Result<Errno, Abort> {
        let (node, preopen) = match self.fd(fd) {
            Ok(Fd::File { node, write: true, preopen, .. }) => (*node, *preopen),
            Ok(Fd::File { .. } | Fd::Dir { .. }) => return Ok(Errno::Badf),
            Ok(_) => return Ok(Errno::Spipe),
            Err(e) => return Ok(e),
        };
        let data = match Self::gather(mem, iovs, count) {
            Ok(d) => d,
            Err(e) => return Ok(e),
        };
        if let Err(e) = self.write_at(node, preopen, offset, &data) {
            return e;
        }
        Ok(errno(mem.write_u32(written, data.len() as u32)))
    }

    pub fn fd_read(&mut self, mem: &impl GuestMemory, fd: u32, iovs: u32, count: u32, read: u32) -> Errno {
        let result = match self.fd(fd).cloned() {
            Ok(Fd::Stdin) => {
                let rest = &self.stdin[self.stdin_pos..];
                Self::scatter(mem, iovs, count, rest).inspect(|&n| {
                    self.stdin_pos += n as usize;
                })
            }
            Ok(Fd::File { node, read: true, pos, .. }) => {
                let data = self.fs.data(node).map(|d| at(d, pos).to_vec());
                data.and_then(|d| Self::scatter(mem, iovs, count, &d)).inspect(|&n| {
                    if let Ok(Fd::File { pos, .. }) = self.fd_mut(fd) {
                        *pos += n as u64;
                    }
                })
            }
            // A directory fd has no read right (as in wasmtime).
            Ok(_) => Err(Errno::Badf),
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => errno(mem.write_u32(read, n)),
            Err(e) => e,
        }
    }

    pub fn fd_pread(&mut self, mem: &impl GuestMemory, fd: u32, iovs: u32, count: u32, offset: u64, read: u32) -> Errno {
        let node = match self.fd(fd) {
            Ok(Fd::File { node, read: true, .. }) => *node,
            Ok(Fd::File { .. } | Fd::Dir { .. }) => return Errno::Badf,
            Ok(_) => return Errno::Spipe,
            Err(e) => return e,
        };
        let data = match self.fs.data(node) {
            Ok(d) => at(d, offset).to_vec(),
            Err(e) => return e,
        };
        match Self::scatter(mem, iovs, count, &data) {
            Ok(n) => errno(mem.write_u32(read, n)),
            Err(e) => e,
        }
    }

    pub fn fd_seek(&mut self, mem: &impl GuestMemory, fd: u32, offset: i64, whence: u32, out: u32) -> Errno {
        let size = match self.fd(fd) {
            Ok(Fd::File { node, .. }) => self.fs.size(*node),
            Ok(Fd::Dir { .. }) => return Errno::Isdir,
            Ok(_) => return Errno::Spipe,
            Err(e) => return e,
        };
        let Ok(Fd::File { pos, .. }) = self.fd_mut(fd) else { return Errno::Badf };
        let base = match whence {
            0 => 0i128,
            1 => *pos as i128,
            2 => size as i128,
            _ => return Errno::Inval,
        };
        let new = base + offset as i128;
        if new < 0 || new > i64::MAX as i128 {
            return Errno::Inval;
        }
        *pos = new as u64;
        errno(mem.write_u64(out, new as u64))
    }

    pub fn fd_tell(&mut self, mem: &impl GuestMemory, fd: u32, out: u32) -> Errno {
        self.fd_seek(mem, fd, 0, 1, out)
    }

    /// Success for an open fd: the answer of calls with nothing to do here
    /// (sync, advise, setting timestamps, which are constant).
    pub fn fd_check(&self, fd: u32) -> Errno {
        if self.fd(fd).is_ok() {
            Errno::Success
        } else {
            Errno::Badf
        }
    }

    pub fn fd_close(&mut self, fd: u32) -> Errno {
        match self.fds.get_mut(fd as usize) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Errno::Success
            }
            _ => Errno::Badf,
        }
    }

    pub fn fd_renumber(&mut self, from: u32, to: u32) -> Errno {
        if self.fd(from).is_err() || self.fd(to).is_err() {
            return Errno::Badf;
        }
        let moved = self.fds[from as usize].take();
        self.fds[to as usize] = moved;
        Errno::Success
    }

    pub fn fd_prestat_get(&self, mem: &impl GuestMemory, fd: u32, out: u32) -> Errno {
        let Some(p) = (fd as usize).checked_sub(3).and_then(|i| self.preopens.get(i)) else { return Errno::Badf };
        if !matches!(self.fd(fd), Ok(Fd::Dir { .. })) {
            return Errno::Badf;
        }
        let mut stat = [0u8; 8];
        stat[4..8].copy_from_slice(&(p.guest.len() as u32).to_le_bytes());
        errno(mem.write(out, &stat))
    }

    pub fn fd_prestat_dir_name(&self, mem: &impl GuestMemory, fd: u32, ptr: u32, len: u32) -> Errno {
        let Some(p) = (fd as usize).checked_sub(3).and_then(|i| self.preopens.get(i)) else { return Errno::Badf };
        if (len as usize) < p.guest.len() {
            return Errno::Nametoolong;
        }
        errno(mem.write(ptr, p.guest.as_bytes()))
    }

    pub fn fd_fdstat_get(&self, mem: &impl GuestMemory, fd: u32, out: u32) -> Errno {
        let (filetype, flags, rights) = match self.fd(fd) {
            Ok(Fd::Stdin) => (FILETYPE_CHARACTER_DEVICE, 0u16, RIGHT_FD_READ),
            Ok(Fd::Stdout | Fd::Stderr) => (FILETYPE_CHARACTER_DEVICE, 0, RIGHT_FD_WRITE),
            Ok(Fd::Dir { .. }) => (FILETYPE_DIRECTORY, 0, ALL_RIGHTS),
            Ok(Fd::File { node, append, .. }) => (self.fs.filetype(*node), if *append { 1 } else { 0 }, ALL_RIGHTS),
            Err(e) => return e,
        };
        let mut stat = [0u8; 24];
        stat[0] = filetype;
        stat[2..4].copy_from_slice(&flags.to_le_bytes());
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        stat[16..24].copy_from_slice(&rights.to_le_bytes());
        errno(mem.write(out, &stat))
    }

    pub fn fd_fdstat_set_flags(&mut self, fd: u32, flags: u32) -> Errno {
        match self.fd_mut(fd) {
            Ok(Fd::File { append, .. }) => {
                *append = flags & FDFLAGS_APPEND != 0;
                Errno::Success
            }
            Ok(_) => Errno::Success,
            Err(e) => e,
        }
    }

    pub(super) fn filestat(&self, node: Option<NodeId>) -> [u8; 64] {
        let mut stat = [0u8; 64];
        match node {
            Some(id) => {
                stat[0..8].copy_from_slice(&1u64.to_le_bytes());
                stat[8..16].copy_from_slice(&(id as u64 + 1).to_le_bytes());
                stat[16] = self.fs.filetype(id);
                stat[24..32].copy_from_slice(&1u64.to_le_bytes());
                stat[32..40].copy_from_slice(&self.fs.size(id).to_le_bytes());
            }
            None => stat[16] = FILETYPE_CHARACTER_DEVICE,
        }
        stat
    }

    pub fn fd_filestat_get(&self, mem: &impl GuestMemory, fd: u32, out: u32) -> Errno {
        let node = match self.fd(fd) {
            Ok(Fd::Dir { node, .. } | Fd::File { node, .. }) => Some(*node),
            Ok(_) => None,
            Err(e) => return e,
        };
        errno(mem.write(out, &self.filestat(node)))
    }

    pub fn fd_filestat_set_size(&mut self, fd: u32, size: u64) -> Result<Errno, Abort> {
        let (node, preopen) = match self.fd(fd) {
            Ok(Fd::File { node, write: true, preopen, .. }) => (*node, *preopen),
            Ok(Fd::Dir { .. }) => return Ok(Errno::Isdir),
            Ok(_) => return Ok(Errno::Badf),
            Err(e) => return Ok(e),
        };
        let new = match file_size(size) {
            Ok(n) => n,
            Err(e) => return Ok(e),
        };
        let old = self.fs.size(node);
        self.resize_output(preopen, growth(old, size))?;
        match self.fs.data_mut(node) {
            Ok(data) => {
                data.resize(new, 0);
                Ok(Errno::Success)
            }
            Err(e) => Ok(e),
        }
    }

    /// Directory entries: `.`, `..`, then the children by name. A cookie is
    /// the index of the next entry.
    pub fn fd_readdir(&self, mem: &impl GuestMemory, fd: u32, buf: u32, len: u32, cookie: u64, out: u32) -> Errno {
        let (dir, _) = match self.dir_fd(fd) {
            Ok(d) => d,
            Err(Errno::Notdir) => return Errno::Notdir,
            Err(e) => return e,
        };
        let Ok(entries) = self.fs.entries(dir) else { return Errno::Notdir };
        let parent = self.fs.parent(dir).unwrap_or(dir);
        let all = [(".".to_string(), dir), ("..".to_string(), parent)].into_iter().chain(entries.iter().map(|(n, &id)| (n.clone(), id)));
        let mut bytes = Vec::new();
        for (i, (name, id)) in all.enumerate().skip(cookie as usize) {
            if bytes.len() >= len as usize {
                break;
            }
            let mut ent = [0u8; 24];
            ent[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            ent[8..16].copy_from_slice(&(id as u64 + 1).to_le_bytes());
            ent[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
            ent[20] = self.fs.filetype(id);
            bytes.extend_from_slice(&ent);
            bytes.extend_from_slice(name.as_bytes());
        }
        bytes.truncate(len as usize);
        errno(mem.write(buf, &bytes).and_then(|_| mem.write_u32(out, bytes.len() as u32)))
    }
}

/// The fd table a run starts with.
pub fn stdio() -> Vec<Option<Fd>> {
    vec![Some(Fd::Stdin), Some(Fd::Stdout), Some(Fd::Stderr)]
}

/// A file size or offset the guest passed, as a host size: `EFBIG` past what
/// a file may be (`i64::MAX`, or what this host can address), checked before
/// anything is counted or cast.
fn file_size(n: u64) -> Result<usize, Errno> {
    if n > i64::MAX as u64 {
        return Err(Errno::Fbig);
    }
    usize::try_from(n).map_err(|_| Errno::Fbig)
}

/// How much a file grows (negative: shrinks) from `old` to `new` bytes, both
/// within `file_size`'s bounds.
fn growth(old: u64, new: u64) -> i64 {
    new as i64 - old as i64
}

/// The bytes of `data` from `offset` on (none past its end, whatever the offset).
fn at(data: &[u8], offset: u64) -> &[u8] {
    usize::try_from(offset).ok().and_then(|o| data.get(o..)).unwrap_or(&[])
}
