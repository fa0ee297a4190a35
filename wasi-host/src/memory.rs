//! Access to a guest's linear memory, checked against its bounds.

use super::Errno;

/// A guest's linear memory. Every access is bounds-checked; an access outside
/// the memory is `Errno::Fault`, never a host panic.
pub trait GuestMemory {
    fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Errno>;
    fn write(&self, ptr: u32, data: &[u8]) -> Result<(), Errno>;

    fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        let b = self.read(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn write_u32(&self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }
    fn write_u64(&self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }
    /// Reads an array of `(ptr, len)` pairs (iovec / ciovec).
    fn read_iovecs(&self, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Errno> {
        if count > 1024 {
            return Err(Errno::Inval);
        }
        let raw = self.read(ptr, count.checked_mul(8).ok_or(Errno::Fault)?)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]), u32::from_le_bytes([c[4], c[5], c[6], c[7]])))
            .collect())
    }
}

/// Checks that `[ptr, ptr + len)` lies inside a memory of `size` bytes.
pub fn in_bounds(ptr: u32, len: u32, size: usize) -> Result<(usize, usize), Errno> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(Errno::Fault)?;
    if end > size {
        return Err(Errno::Fault);
    }
    Ok((start, end))
}

/// Memory backed by a `Vec`, for tests of the host functions off the browser.
pub struct VecMemory(pub std::cell::RefCell<Vec<u8>>);

impl VecMemory {
    pub fn new(size: usize) -> VecMemory {
        VecMemory(std::cell::RefCell::new(vec![0; size]))
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Errno> {
        let m = self.0.borrow();
        let (s, e) = in_bounds(ptr, len, m.len())?;
        Ok(m[s..e].to_vec())
    }
    fn write(&self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let mut m = self.0.borrow_mut();
        let (s, e) = in_bounds(ptr, data.len() as u32, m.len())?;
        m[s..e].copy_from_slice(data);
        Ok(())
    }
}

/// A guest's memory lent for one host call: what an engine that hands out
/// the memory as a byte slice (wasmtime, wasmi) gives the host.
pub struct SliceMemory<'a>(std::cell::RefCell<&'a mut [u8]>);

impl<'a> SliceMemory<'a> {
    pub fn new(bytes: &'a mut [u8]) -> SliceMemory<'a> {
        SliceMemory(std::cell::RefCell::new(bytes))
    }
}

impl GuestMemory for SliceMemory<'_> {
    fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Errno> {
        let m = self.0.borrow();
        let (s, e) = in_bounds(ptr, len, m.len())?;
        Ok(m[s..e].to_vec())
    }
    fn write(&self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let mut m = self.0.borrow_mut();
        let (s, e) = in_bounds(ptr, data.len() as u32, m.len())?;
        m[s..e].copy_from_slice(data);
        Ok(())
    }
}
