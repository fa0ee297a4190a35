use super::*;

fn ctx() -> WasiCtx {
    WasiCtx::new("task", &["a".into(), "bc".into()], &[("K".into(), "V".into())], b"hello".to_vec(), 42, 16)
}

#[test]
fn args_and_environ_follow_the_layout() {
    let c = ctx();
    let m = VecMemory::new(256);
    assert_eq!(c.args_sizes_get(&m, 0, 4), Errno::Success);
    assert_eq!(m.read_u32(0).unwrap(), 3);
    assert_eq!(m.read_u32(4).unwrap(), 5 + 2 + 3);
    assert_eq!(c.args_get(&m, 16, 64), Errno::Success);
    assert_eq!(m.read(64, 10).unwrap(), b"task\0a\0bc\0");
    assert_eq!(m.read_u32(20).unwrap(), 69);
    assert_eq!(c.environ_get(&m, 100, 120), Errno::Success);
    assert_eq!(m.read(120, 4).unwrap(), b"K=V\0");
}

#[test]
fn out_of_bounds_pointers_are_efault() {
    let mut c = ctx();
    let m = VecMemory::new(32);
    assert_eq!(c.args_sizes_get(&m, 30, 0), Errno::Fault);
    assert_eq!(c.random_get(&m, 20, 100), Errno::Fault);
    assert_eq!(c.clock_time_get(&m, 0, u32::MAX - 2), Errno::Fault);
}

#[test]
fn stdin_reads_then_reports_eof() {
    let mut c = ctx();
    let m = VecMemory::new(128);
    // one iovec at 0: buf 32, len 3
    m.write_u32(0, 32).unwrap();
    m.write_u32(4, 3).unwrap();
    assert_eq!(c.fd_read(&m, 0, 0, 1, 8), Errno::Success);
    assert_eq!(m.read_u32(8).unwrap(), 3);
    assert_eq!(m.read(32, 3).unwrap(), b"hel");
    assert_eq!(c.fd_read(&m, 0, 0, 1, 8), Errno::Success);
    assert_eq!(m.read_u32(8).unwrap(), 2);
    assert_eq!(c.fd_read(&m, 0, 0, 1, 8), Errno::Success);
    assert_eq!(m.read_u32(8).unwrap(), 0, "end of input");
    assert_eq!(c.fd_read(&m, 1, 0, 1, 8), Errno::Badf);
}

#[test]
fn writes_collect_and_stop_at_the_output_limit() {
    let mut c = ctx();
    let m = VecMemory::new(128);
    m.write(64, b"0123456789").unwrap();
    m.write_u32(0, 64).unwrap();
    m.write_u32(4, 10).unwrap();
    assert_eq!(c.fd_write(&m, 1, 0, 1, 8), Ok(Errno::Success));
    assert_eq!(m.read_u32(8).unwrap(), 10);
    assert_eq!(c.fd_write(&m, 5, 0, 1, 8), Ok(Errno::Badf));
    // 10 + 10 > 16
    assert_eq!(c.fd_write(&m, 2, 0, 1, 8), Err(Abort::OutputLimit(16)));
    assert_eq!(c.stdout, b"0123456789");
    assert!(c.stderr.is_empty());
}

#[test]
fn clocks_and_random_depend_only_on_the_seed() {
    let run = |seed| {
        let mut c = WasiCtx::new("t", &[], &[], vec![], seed, 0);
        let m = VecMemory::new(64);
        c.random_get(&m, 0, 13);
        c.clock_time_get(&m, 1, 16);
        c.clock_time_get(&m, 0, 24);
        m.read(0, 32).unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1)[..13], run(2)[..13]);
    let mut c = ctx();
    let m = VecMemory::new(64);
    c.clock_time_get(&m, 1, 0);
    c.clock_time_get(&m, 1, 8);
    let (a, b) =
        (u64::from_le_bytes(m.read(0, 8).unwrap().try_into().unwrap()), u64::from_le_bytes(m.read(8, 8).unwrap().try_into().unwrap()));
    assert!(b > a, "monotonic time advances");
    assert_eq!(c.clock_time_get(&m, 9, 0), Errno::Inval);
}

#[test]
fn exit_is_recorded() {
    let mut c = ctx();
    assert_eq!(c.proc_exit(3), Abort::Exit(3));
    assert_eq!(c.abort, Some(Abort::Exit(3)));
    assert_eq!(c.proc_exit(126), Abort::InvalidExit(126), "as in wasmtime, 126 and up are errors");
}

mod files {
    use super::super::*;

    /// Writes `path` at 1000 and returns (ptr, len).
    fn path(m: &VecMemory, s: &str) -> (u32, u32) {
        m.write(1000, s.as_bytes()).unwrap();
        (1000, s.len() as u32)
    }

    fn ctx(max_output: u32) -> WasiCtx {
        WasiCtx::new("t", &[], &[], vec![], 1, max_output)
            .with_preopen("/in", false, vec![("a.txt".into(), b"abc".to_vec()), ("d/b.txt".into(), b"b".to_vec())])
            .unwrap()
            .with_preopen("/out", true, vec![])
            .unwrap()
    }

    fn open(c: &mut WasiCtx, m: &VecMemory, dirfd: u32, p: &str, oflags: u32, rights: u64) -> Result<u32, Errno> {
        let (ptr, len) = path(m, p);
        match c.path_open(m, dirfd, ptr, len, oflags, rights, 0, 2000).unwrap() {
            Errno::Success => Ok(m.read_u32(2000).unwrap()),
            e => Err(e),
        }
    }

    #[test]
    fn preopens_are_listed_after_stdio() {
        let c = ctx(1 << 20);
        let m = VecMemory::new(4096);
        assert_eq!(c.fd_prestat_get(&m, 3, 0), Errno::Success);
        assert_eq!(m.read_u32(4).unwrap(), 3);
        assert_eq!(c.fd_prestat_dir_name(&m, 3, 100, 3), Errno::Success);
        assert_eq!(m.read(100, 3).unwrap(), b"/in");
        assert_eq!(c.fd_prestat_get(&m, 4, 0), Errno::Success);
        assert_eq!(c.fd_prestat_get(&m, 5, 0), Errno::Badf, "the list ends");
        assert_eq!(c.fd_prestat_dir_name(&m, 3, 100, 2), Errno::Nametoolong);
    }

    #[test]
    fn closed_fds_are_reused_lowest_first() {
        let mut c = ctx(1 << 20);
        let m = VecMemory::new(4096);
        let a = open(&mut c, &m, 3, "a.txt", 0, 1 << 1).unwrap();
        assert_eq!(a, 5);
        let b = open(&mut c, &m, 3, "d", 2, 0).unwrap();
        assert_eq!(b, 6);
        assert_eq!(c.fd_close(a), Errno::Success);
        assert_eq!(c.fd_close(a), Errno::Badf);
        assert_eq!(open(&mut c, &m, 3, "d/b.txt", 0, 1 << 1), Ok(5));
    }

    #[test]
    fn read_only_preopens_refuse_changes_and_paths_stay_inside() {
        let mut c = ctx(1 << 20);
        let m = VecMemory::new(4096);
        assert_eq!(open(&mut c, &m, 3, "new.txt", 1, 1 << 6), Err(Errno::Rofs));
        assert_eq!(open(&mut c, &m, 3, "a.txt", 0, 1 << 6), Err(Errno::Rofs));
        let (p, l) = path(&m, "d");
        assert_eq!(c.path_remove_directory(&m, 3, p, l), Errno::Rofs);
        assert_eq!(open(&mut c, &m, 3, "../x", 0, 1 << 1), Err(Errno::Perm));
        assert_eq!(open(&mut c, &m, 3, "d/../../x", 0, 1 << 1), Err(Errno::Perm));
        assert_eq!(open(&mut c, &m, 3, "/etc/passwd", 0, 1 << 1), Err(Errno::Perm));
        assert_eq!(open(&mut c, &m, 3, "a.txt/x", 0, 1 << 1), Err(Errno::Notdir));
        assert_eq!(open(&mut c, &m, 3, "missing", 0, 1 << 1), Err(Errno::Noent));
        assert_eq!(open(&mut c, &m, 3, "d/./b.txt", 0, 1 << 1).map(|_| ()), Ok(()));
    }

    #[test]
    fn written_files_come_back_and_count_against_the_output_limit() {
        let mut c = ctx(10);
        let m = VecMemory::new(4096);
        let fd = open(&mut c, &m, 4, "r.txt", 1, 1 << 6).unwrap();
        m.write(0, b"0123456789AB").unwrap();
        m.write_u32(100, 0).unwrap();
        m.write_u32(104, 8).unwrap();
        assert_eq!(c.fd_write(&m, fd, 100, 1, 200), Ok(Errno::Success));
        assert_eq!(c.output_files(), vec![("/out".to_string(), "r.txt".to_string(), b"01234567".to_vec())]);
        // 8 bytes of file + 8 more would pass the 10-byte limit.
        assert_eq!(c.fd_write(&m, fd, 100, 1, 200), Err(Abort::OutputLimit(10)));
        // Removing the file frees its bytes again.
        let mut c = ctx(10);
        let fd = open(&mut c, &m, 4, "r.txt", 1, 1 << 6).unwrap();
        assert_eq!(c.fd_write(&m, fd, 100, 1, 200), Ok(Errno::Success));
        let (p, l) = path(&m, "r.txt");
        assert_eq!(c.path_unlink_file(&m, 4, p, l), Errno::Success);
        let fd = open(&mut c, &m, 4, "s.txt", 1, 1 << 6).unwrap();
        assert_eq!(c.fd_write(&m, fd, 100, 1, 200), Ok(Errno::Success));
    }

    /// A size or offset of 2^63 and more once wrapped to a negative change and
    /// lowered the output count, after which output was unlimited.
    #[test]
    fn huge_sizes_and_offsets_are_efbig_and_never_lower_the_output_count() {
        let mut c = ctx(10);
        let m = VecMemory::new(4096);
        let fd = open(&mut c, &m, 4, "r.txt", 1, (1 << 6) | (1 << 4) | (1 << 22)).unwrap();
        for size in [1u64 << 63, u64::MAX, (1 << 63) + 5] {
            assert_eq!(c.fd_filestat_set_size(fd, size), Ok(Errno::Fbig), "size {size}");
        }
        m.write(0, b"01234567").unwrap();
        m.write_u32(100, 0).unwrap();
        m.write_u32(104, 8).unwrap();
        for offset in [1u64 << 63, u64::MAX - 4] {
            assert_eq!(c.fd_pwrite(&m, fd, 100, 1, offset, 200), Ok(Errno::Fbig), "offset {offset}");
        }
        // The count is as it was: 8 bytes fit, 8 more do not.
        assert_eq!(c.fd_write(&m, fd, 100, 1, 200), Ok(Errno::Success));
        assert_eq!(c.fd_write(&m, fd, 100, 1, 200), Err(Abort::OutputLimit(10)));
    }

    #[test]
    fn readdir_cookies_resume_where_the_buffer_ended() {
        let mut c = ctx(1 << 20);
        let m = VecMemory::new(8192);
        let d = open(&mut c, &m, 3, ".", 2, 0).unwrap();
        // ".", "..", "a.txt", "d": each 24 bytes + name.
        assert_eq!(c.fd_readdir(&m, d, 4000, 4096, 0, 0), Errno::Success);
        assert_eq!(m.read_u32(0).unwrap(), 24 * 4 + 1 + 2 + 5 + 1);
        // A small buffer is filled completely; the caller retries from the last cookie.
        assert_eq!(c.fd_readdir(&m, d, 4000, 30, 0, 0), Errno::Success);
        assert_eq!(m.read_u32(0).unwrap(), 30);
        assert_eq!(c.fd_readdir(&m, d, 4000, 4096, 2, 0), Errno::Success);
        assert_eq!(m.read(4000 + 24, 5).unwrap(), b"a.txt");
    }

    #[test]
    fn sleeping_advances_virtual_time() {
        let mut c = WasiCtx::new("t", &[], &[], vec![], 1, 0);
        let m = VecMemory::new(4096);
        c.clock_time_get(&m, 1, 0);
        let before = u64::from_le_bytes(m.read(0, 8).unwrap().try_into().unwrap());
        // One relative clock subscription of 5 ms on the monotonic clock.
        let mut sub = [0u8; 48];
        sub[0..8].copy_from_slice(&77u64.to_le_bytes());
        sub[16..20].copy_from_slice(&1u32.to_le_bytes());
        sub[24..32].copy_from_slice(&5_000_000u64.to_le_bytes());
        m.write(100, &sub).unwrap();
        assert_eq!(c.poll_oneoff(&m, 100, 200, 1, 300), Errno::Success);
        assert_eq!(m.read_u32(300).unwrap(), 1);
        assert_eq!(u64::from_le_bytes(m.read(200, 8).unwrap().try_into().unwrap()), 77);
        c.clock_time_get(&m, 1, 0);
        let after = u64::from_le_bytes(m.read(0, 8).unwrap().try_into().unwrap());
        assert!(after - before >= 5_000_000);
    }
}

#[test]
fn socket_calls_name_a_descriptor_that_is_no_socket() {
    let c = ctx().with_preopen("/d", false, vec![]).unwrap();
    assert_eq!(c.sock_call(1), Errno::Notsock, "stdout is open but no socket");
    assert_eq!(c.sock_call(3), Errno::Notsock, "nor is a preopened directory");
    assert_eq!(c.sock_call(4), Errno::Badf, "nothing is open at 4");
    assert_eq!(c.sock_call(u32::MAX), Errno::Badf);
}
