//! The path_* calls: opening, creating, removing and renaming by path inside
//! a preopened directory.

use super::fds::{errno, Fd, FDFLAGS_APPEND, OFLAGS_CREAT, OFLAGS_DIRECTORY, OFLAGS_EXCL, OFLAGS_TRUNC, RIGHT_FD_READ, RIGHT_FD_WRITE};
use super::{Abort, Errno, GuestMemory, WasiCtx};

impl WasiCtx {
    /// The existing node a path names, or `ENOENT`.
    fn node_at(&self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32) -> Result<usize, Errno> {
        let (r, _) = self.resolve_at(fd, mem, path_ptr, path_len)?;
        self.fs.target(&r)?.ok_or(Errno::Noent)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_open(
        &mut self,
        mem: &impl GuestMemory,
        fd: u32,
        path_ptr: u32,
        path_len: u32,
        oflags: u32,
        rights: u64,
        fdflags: u32,
        out: u32,
    ) -> Result<Errno, Abort> {
        let (resolved, preopen) = match self.resolve_at(fd, mem, path_ptr, path_len) {
            Ok(r) => r,
            Err(e) => return Ok(e),
        };
        let wants_write = rights & RIGHT_FD_WRITE != 0 || oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) != 0 || fdflags & FDFLAGS_APPEND != 0;
        let existing = match self.fs.target(&resolved) {
            Ok(t) => t,
            Err(e) => return Ok(e),
        };
        let node = match existing {
            Some(_) if oflags & OFLAGS_CREAT != 0 && oflags & OFLAGS_EXCL != 0 => return Ok(Errno::Exist),
            Some(id) => id,
            None if oflags & OFLAGS_CREAT != 0 => {
                if let Err(e) = self.writable(preopen) {
                    return Ok(e);
                }
                let Some(name) = &resolved.name else { return Ok(Errno::Exist) };
                match self.fs.create_file(resolved.parent, name, Vec::new()) {
                    Ok(id) => id,
                    Err(e) => return Ok(e),
                }
            }
            None => return Ok(Errno::Noent),
        };
        let is_dir = self.fs.is_dir(node);
        if oflags & OFLAGS_DIRECTORY != 0 && !is_dir {
            return Ok(Errno::Notdir);
        }
        if is_dir && (rights & RIGHT_FD_WRITE != 0 && oflags & OFLAGS_DIRECTORY == 0 || oflags & OFLAGS_TRUNC != 0) {
            return Ok(Errno::Isdir);
        }
        if wants_write && !is_dir {
            if let Err(e) = self.writable(preopen) {
                return Ok(e);
            }
        }
        if oflags & OFLAGS_TRUNC != 0 {
            let old = self.fs.size(node) as i64;
            self.resize_output(preopen, -old)?;
            if let Ok(d) = self.fs.data_mut(node) {
                d.clear();
            }
        }
        let entry = if is_dir {
            Fd::Dir { node, preopen }
        } else {
            Fd::File {
                node,
                preopen,
                pos: 0,
                read: rights & RIGHT_FD_READ != 0 || rights == 0,
                write: wants_write,
                append: fdflags & FDFLAGS_APPEND != 0,
            }
        };
        let slot = self.fds.iter().position(Option::is_none).unwrap_or(self.fds.len());
        if slot == self.fds.len() {
            if slot >= 4096 {
                return Ok(Errno::Mfile);
            }
            self.fds.push(None);
        }
        self.fds[slot] = Some(entry);
        Ok(errno(mem.write_u32(out, slot as u32)))
    }

    pub fn path_filestat_get(&self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32, out: u32) -> Errno {
        match self.node_at(mem, fd, path_ptr, path_len) {
            Ok(id) => errno(mem.write(out, &self.filestat(Some(id)))),
            Err(e) => e,
        }
    }

    /// Timestamps are constant in this filesystem; setting them succeeds on existing paths.
    pub fn path_filestat_set_times(&self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32) -> Errno {
        match self.node_at(mem, fd, path_ptr, path_len) {
            Ok(_) => Errno::Success,
            Err(e) => e,
        }
    }

    pub fn path_create_directory(&mut self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32) -> Errno {
        let (r, preopen) = match self.resolve_at(fd, mem, path_ptr, path_len) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let Some(name) = r.name else { return Errno::Exist };
        if self.fs.lookup(r.parent, &name).ok().flatten().is_some() {
            return Errno::Exist;
        }
        if let Err(e) = self.writable(preopen) {
            return e;
        }
        errno(self.fs.create_dir(r.parent, &name).map(|_| ()))
    }

    fn remove_path(&mut self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32, dir: bool) -> Errno {
        let (r, preopen) = match self.resolve_at(fd, mem, path_ptr, path_len) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let Some(name) = r.name else { return if dir { Errno::Busy } else { Errno::Isdir } };
        if let Err(e) = self.fs.lookup(r.parent, &name).and_then(|t| t.ok_or(Errno::Noent)) {
            return e;
        }
        if let Err(e) = self.writable(preopen) {
            return e;
        }
        match self.fs.remove(r.parent, &name, dir) {
            Ok(id) => {
                // Unlinked files take their bytes with them (no fd keeps them counted).
                let freed = if dir { 0 } else { self.fs.size(id) as i64 };
                let _ = self.resize_output(preopen, -freed);
                Errno::Success
            }
            Err(e) => e,
        }
    }

    pub fn path_remove_directory(&mut self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32) -> Errno {
        self.remove_path(mem, fd, path_ptr, path_len, true)
    }

    pub fn path_unlink_file(&mut self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32) -> Errno {
        self.remove_path(mem, fd, path_ptr, path_len, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_rename(
        &mut self,
        mem: &impl GuestMemory,
        fd: u32,
        old_ptr: u32,
        old_len: u32,
        new_fd: u32,
        new_ptr: u32,
        new_len: u32,
    ) -> Errno {
        let from = self.resolve_at(fd, mem, old_ptr, old_len);
        let to = self.resolve_at(new_fd, mem, new_ptr, new_len);
        let ((from, p1), (to, p2)) = match (from, to) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        let (Some(from_name), Some(to_name)) = (from.name, to.name) else { return Errno::Busy };
        if let Err(e) = self.fs.lookup(from.parent, &from_name).and_then(|t| t.ok_or(Errno::Noent)) {
            return e;
        }
        if p1 != p2 {
            return Errno::Xdev;
        }
        if let Err(e) = self.writable(p1) {
            return e;
        }
        // A file replaced by the rename takes its bytes with it.
        let replaced = match self.fs.lookup(to.parent, &to_name) {
            Ok(Some(id)) if !self.fs.is_dir(id) && self.fs.lookup(from.parent, &from_name) != Ok(Some(id)) => self.fs.size(id) as i64,
            _ => 0,
        };
        match self.fs.rename(from.parent, &from_name, to.parent, &to_name) {
            Ok(()) => {
                let _ = self.resize_output(p1, -replaced);
                Errno::Success
            }
            Err(e) => e,
        }
    }

    /// No symbolic links exist here.
    pub fn path_readlink(&self, mem: &impl GuestMemory, fd: u32, path_ptr: u32, path_len: u32) -> Errno {
        match self.node_at(mem, fd, path_ptr, path_len) {
            Ok(_) => Errno::Inval,
            Err(e) => e,
        }
    }
}
