//! The task's in-memory filesystem: directory trees for the preopened
//! directories, and path resolution confined to each of them. No symlinks,
//! no hard links, constant timestamps (runs stay deterministic).

use super::Errno;
use std::collections::BTreeMap;

pub type NodeId = usize;

#[derive(Debug, Clone)]
pub enum Node {
    File { data: Vec<u8> },
    Dir { entries: BTreeMap<String, NodeId>, parent: NodeId },
}

/// preview1 file types.
pub const FILETYPE_DIRECTORY: u8 = 3;
pub const FILETYPE_REGULAR_FILE: u8 = 4;

#[derive(Debug, Clone, Default)]
pub struct Fs {
    nodes: Vec<Option<Node>>,
}

/// A path split into the directory holding its last component and that component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub parent: NodeId,
    /// `None` when the path names `parent` itself (e.g. `.` or `a/..`).
    pub name: Option<String>,
}

impl Fs {
    /// Adds an empty directory tree and returns its root (its own parent).
    pub fn new_root(&mut self) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Some(Node::Dir { entries: BTreeMap::new(), parent: id }));
        id
    }

    pub fn node(&self, id: NodeId) -> Result<&Node, Errno> {
        self.nodes.get(id).and_then(Option::as_ref).ok_or(Errno::Badf)
    }

    pub fn node_mut(&mut self, id: NodeId) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(id).and_then(Option::as_mut).ok_or(Errno::Badf)
    }

    pub fn is_dir(&self, id: NodeId) -> bool {
        matches!(self.node(id), Ok(Node::Dir { .. }))
    }

    pub fn size(&self, id: NodeId) -> u64 {
        match self.node(id) {
            Ok(Node::File { data }) => data.len() as u64,
            Ok(Node::Dir { entries, .. }) => entries.len() as u64,
            Err(_) => 0,
        }
    }

    pub fn filetype(&self, id: NodeId) -> u8 {
        if self.is_dir(id) {
            FILETYPE_DIRECTORY
        } else {
            FILETYPE_REGULAR_FILE
        }
    }

    pub fn entries(&self, dir: NodeId) -> Result<&BTreeMap<String, NodeId>, Errno> {
        match self.node(dir)? {
            Node::Dir { entries, .. } => Ok(entries),
            Node::File { .. } => Err(Errno::Notdir),
        }
    }

    pub fn parent(&self, dir: NodeId) -> Result<NodeId, Errno> {
        match self.node(dir)? {
            Node::Dir { parent, .. } => Ok(*parent),
            Node::File { .. } => Err(Errno::Notdir),
        }
    }

    pub fn lookup(&self, dir: NodeId, name: &str) -> Result<Option<NodeId>, Errno> {
        Ok(self.entries(dir)?.get(name).copied())
    }

    /// Resolves `path` relative to `base`, never leaving the tree rooted at `root`.
    pub fn resolve(&self, root: NodeId, base: NodeId, path: &str) -> Result<Resolved, Errno> {
        if path.is_empty() {
            return Err(Errno::Noent);
        }
        if path.starts_with('/') {
            return Err(Errno::Perm);
        }
        if path.contains('\0') {
            return Err(Errno::Inval);
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut dir = base;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match *part {
                "." => {}
                ".." => {
                    if dir == root {
                        return Err(Errno::Perm);
                    }
                    dir = self.parent(dir)?;
                }
                name if last => {
                    // A trailing slash means the path must name a directory.
                    let must_be_dir = path.ends_with('/');
                    if must_be_dir {
                        if let Some(id) = self.lookup(dir, name)? {
                            if !self.is_dir(id) {
                                return Err(Errno::Notdir);
                            }
                        }
                    }
                    return Ok(Resolved { parent: dir, name: Some(name.to_string()) });
                }
                name => match self.lookup(dir, name)? {
                    Some(id) if self.is_dir(id) => dir = id,
                    Some(_) => return Err(Errno::Notdir),
                    None => return Err(Errno::Noent),
                },
            }
        }
        Ok(Resolved { parent: dir, name: None })
    }

    /// The node a resolved path names, if it exists.
    pub fn target(&self, r: &Resolved) -> Result<Option<NodeId>, Errno> {
        match &r.name {
            None => Ok(Some(r.parent)),
            Some(name) => self.lookup(r.parent, name),
        }
    }

    fn insert(&mut self, dir: NodeId, name: &str, node: Node) -> Result<NodeId, Errno> {
        if name.len() > 255 {
            return Err(Errno::Nametoolong);
        }
        let id = self.nodes.len();
        self.nodes.push(Some(node));
        match self.node_mut(dir)? {
            Node::Dir { entries, .. } => {
                entries.insert(name.to_string(), id);
                Ok(id)
            }
            Node::File { .. } => Err(Errno::Notdir),
        }
    }

    pub fn create_file(&mut self, dir: NodeId, name: &str, data: Vec<u8>) -> Result<NodeId, Errno> {
        if self.lookup(dir, name)?.is_some() {
            return Err(Errno::Exist);
        }
        self.insert(dir, name, Node::File { data })
    }

    pub fn create_dir(&mut self, dir: NodeId, name: &str) -> Result<NodeId, Errno> {
        if self.lookup(dir, name)?.is_some() {
            return Err(Errno::Exist);
        }
        self.insert(dir, name, Node::Dir { entries: BTreeMap::new(), parent: dir })
    }

    /// Unlinks `name` from `dir`; `want_dir` says which kind the caller expects.
    pub fn remove(&mut self, dir: NodeId, name: &str, want_dir: bool) -> Result<NodeId, Errno> {
        let id = self.lookup(dir, name)?.ok_or(Errno::Noent)?;
        match (self.node(id)?, want_dir) {
            (Node::Dir { entries, .. }, true) if !entries.is_empty() => return Err(Errno::Notempty),
            (Node::Dir { .. }, false) => return Err(Errno::Isdir),
            (Node::File { .. }, true) => return Err(Errno::Notdir),
            _ => {}
        }
        if let Node::Dir { entries, .. } = self.node_mut(dir)? {
            entries.remove(name);
        }
        Ok(id)
    }

    /// Whether `dir` is `ancestor` or lies below it.
    fn within(&self, mut dir: NodeId, ancestor: NodeId) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            match self.parent(dir) {
                Ok(p) if p != dir => dir = p,
                _ => return false,
            }
        }
    }

    /// POSIX rename within one tree: replaces a file, or an empty directory with a directory.
    pub fn rename(&mut self, from_dir: NodeId, from: &str, to_dir: NodeId, to: &str) -> Result<(), Errno> {
        let id = self.lookup(from_dir, from)?.ok_or(Errno::Noent)?;
        if self.is_dir(id) && self.within(to_dir, id) {
            return Err(Errno::Inval);
        }
        if let Some(existing) = self.lookup(to_dir, to)? {
            if existing == id {
                return Ok(());
            }
            match (self.is_dir(id), self.is_dir(existing)) {
                (true, false) => return Err(Errno::Notdir),
                (false, true) => return Err(Errno::Isdir),
                (true, true) if !self.entries(existing)?.is_empty() => return Err(Errno::Notempty),
                _ => {}
            }
        }
        if let Node::Dir { entries, .. } = self.node_mut(from_dir)? {
            entries.remove(from);
        }
        if let Node::Dir { entries, .. } = self.node_mut(to_dir)? {
            entries.insert(to.to_string(), id);
        }
        if let Node::Dir { parent, .. } = self.node_mut(id)? {
            *parent = to_dir;
        }
        Ok(())
    }

    pub fn data(&self, id: NodeId) -> Result<&Vec<u8>, Errno> {
        match self.node(id)? {
            Node::File { data } => Ok(data),
            Node::Dir { .. } => Err(Errno::Isdir),
        }
    }

    pub fn data_mut(&mut self, id: NodeId) -> Result<&mut Vec<u8>, Errno> {
        match self.node_mut(id)? {
            Node::File { data } => Ok(data),
            Node::Dir { .. } => Err(Errno::Isdir),
        }
    }

    /// Creates `path` (with `/`-separated directories) under `root` holding `data`.
    pub fn add_path(&mut self, root: NodeId, path: &str, data: Vec<u8>) -> Result<NodeId, Errno> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((file, dirs)) = parts.split_last() else { return Err(Errno::Inval) };
        let mut dir = root;
        for d in dirs {
            if *d == "." || *d == ".." {
                return Err(Errno::Inval);
            }
            dir = match self.lookup(dir, d)? {
                Some(id) if self.is_dir(id) => id,
                Some(_) => return Err(Errno::Notdir),
                None => self.create_dir(dir, d)?,
            };
        }
        if *file == "." || *file == ".." {
            return Err(Errno::Inval);
        }
        self.create_file(dir, file, data)
    }

    /// Every file under `root` as (`a/b/c` path, bytes), in path order.
    pub fn files(&self, root: NodeId) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), root)];
        while let Some((prefix, dir)) = stack.pop() {
            let Ok(entries) = self.entries(dir) else { continue };
            for (name, &id) in entries.iter().rev() {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                match self.node(id) {
                    Ok(Node::File { data }) => out.push((path, data.clone())),
                    Ok(Node::Dir { .. }) => stack.push((path, id)),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }
}
